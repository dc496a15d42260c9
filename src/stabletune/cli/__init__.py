"""The `stabletune` command: one small module per subcommand (fit, predict, train, study, report, plot).

Each module has ``register(subparsers)`` (adds its parser, ``set_defaults(func=run)``) and ``run(args) -> int``.
A user mistake (:class:`stabletune.errors.UserError`) is printed as one line, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import errno
import logging
import sys

from stabletune.errors import UserError

SUBCOMMANDS = ("fit", "predict", "train", "study", "report", "plot")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2) instead of a usage block."""

    def error(self, message: str):  # noqa: D401
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from stabletune import __version__

    parser = Parser(prog="stabletune", description="Stable few-sample fine-tuning of BERT-family encoders "
                    "(Zhang et al., ICLR 2021) and the multi-seed studies that prove it.")
    parser.add_argument("--version", action="version", version=f"stabletune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"stabletune.cli.{name}")
        except ModuleNotFoundError as e:  # a subcommand whose module is not installed in this build
            if e.name != f"stabletune.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        sys.stderr.write(f"stabletune: error: {e}\n")
        return 2
    except OSError as e:
        # the writers name their path (stabletune.outputs.WriteError); a disk that fills (or turns read-only)
        # anywhere else is still the machine's state, not a bug: one line, never a traceback
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        where = f" ({e.filename})" if e.filename else ""
        sys.stderr.write(f"stabletune: error: {e.strerror}{where}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("stabletune: interrupted\n")
        return 130

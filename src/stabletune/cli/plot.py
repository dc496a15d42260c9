"""``stabletune plot``: single figures that need no study.

Examples::

    stabletune plot bias-ratio --out fig1.png
    stabletune plot bias-ratio --out fig1.png --beta2 0.98 --iterations RTE=234 --iterations MNLI=36816
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stabletune.outputs import check_out_file
from stabletune.errors import ConfigError

KINDS = ("bias-ratio",)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``plot`` subcommand."""
    p = subparsers.add_parser(
        "plot",
        help="single figures: bias-ratio (paper Figure 1)",
        description="bias-ratio: Adam's biased/unbiased update ratio (1-b1^t)/sqrt(1-b2^t) over iterations "
                    "(paper Figure 1), with the iteration counts of RTE, MRPC, STS-B, CoLA, MNLI at batch 32 x 3 epochs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    p.add_argument("kind", choices=KINDS, help="which figure")
    p.add_argument("--out", required=True, metavar="PNG", help="output PNG file")
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--iterations", action="append", default=[], metavar="NAME=N",
                   help="vertical line at N iterations (repeatable; default: the paper's five tasks)")
    p.set_defaults(func=run)
    return p


def _parse_iterations(values: list[str]) -> dict[str, int] | None:
    out: dict[str, int] = {}
    for v in values:
        name, sep, n = v.partition("=")
        try:
            count = int(n)
        except ValueError:
            count = 0
        if not sep or not name or count < 1:
            raise ConfigError(f"invalid option --iterations {v!r}: expected NAME=N with N >= 1")
        out[name] = count
    return out or None


def run(args: argparse.Namespace) -> int:
    """Write the figure and print its path."""
    from stabletune.analysis import plots
    from stabletune.analysis.stats import PAPER_ITERATIONS

    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise ConfigError(f"invalid option --{name}: must be in [0, 1), got {getattr(args, name)}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"invalid option --out {out}: the figure is written as PNG, name it *.png")
    check_out_file(out, what="PNG file")
    fig = plots.plot_bias_ratio(beta1=args.beta1, beta2=args.beta2,
                                iterations=_parse_iterations(args.iterations) or PAPER_ITERATIONS)
    plots.save_figure(fig, out)
    print(f"wrote {out}")
    return 0

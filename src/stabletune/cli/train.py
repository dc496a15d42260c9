"""`stabletune train`: one fine-tuning run. Options come from RunConfig's fields (defaults < --config YAML <
command-line options and key=value overrides)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING
from typing import Any, Literal, get_args, get_origin

from stabletune.config import FIELDS, _base_type, field_type, make_config
from stabletune.errors import ConfigError


def _field_help(name: str) -> str:
    import inspect

    from stabletune import config

    src = inspect.getsource(config.RunConfig)
    lines = src.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(f"{name}:") and i + 1 < len(lines) and lines[i + 1].strip().startswith('"""'):
            return lines[i + 1].strip().strip('"')
    return ""


def add_config_options(p: argparse.ArgumentParser) -> None:
    """One --kebab-case option per RunConfig field; defaults suppressed so only given options override."""
    for name, f in FIELDS.items():
        tp, _ = _base_type(field_type(name))
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else None)
        help_ = f"{_field_help(name)} (default: {default})".strip()
        flag = f"--{name.replace('_', '-')}"
        if tp is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
        elif get_origin(tp) is Literal:
            p.add_argument(flag, choices=get_args(tp), default=argparse.SUPPRESS, help=help_)
        elif get_origin(tp) is list:
            p.add_argument(flag, default=argparse.SUPPRESS, metavar="A[,B]", help=help_)
        else:
            p.add_argument(flag, default=argparse.SUPPRESS, metavar=name.upper(), help=help_)


def register(sub) -> None:
    p = sub.add_parser("train", help="one fine-tuning run (Section 3's recipe)",
                       description="Fine-tune once and write a run folder. Example: stabletune train --task rte "
                                   "--data-dir ../shared/data/glue --model minilm-l6 --out runs/rte-s0 --seed 0")
    p.add_argument("--config", metavar="YAML", help="run options from a YAML file (command line wins)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra overrides, e.g. lr=3e-5")
    add_config_options(p)
    p.set_defaults(func=run)


def parse_overrides(args: argparse.Namespace) -> dict[str, Any]:
    values = {k: v for k, v in vars(args).items() if k in FIELDS}
    for item in args.overrides or []:
        if "=" not in item:
            raise ConfigError(f"unexpected argument {item!r}: overrides are key=value (e.g. lr=3e-5)")
        k, v = item.split("=", 1)
        values[k.strip().lstrip("-").replace("-", "_")] = v
    return values


def run(args: argparse.Namespace) -> int:
    from stabletune.train import train

    cfg = make_config(parse_overrides(args), yaml_path=args.config)
    if not cfg.out:
        raise ConfigError("invalid option --out: give the run folder to write (e.g. --out runs/rte-s0)")
    result = train(cfg)
    summary = {"status": result.status, "out": result.out_dir, "steps": result.last["step"],
               "best": {"step": result.best["step"], "test": result.best["test"]},
               "last": {"step": result.last["step"], "test": result.last["test"]},
               "wall_s": round(result.timings["wall_s"], 1),
               "examples_per_s": round(result.timings["examples_per_s"], 1)}
    print(json.dumps(summary, default=str))
    if result.status == "diverged":
        sys.stderr.write(f"stabletune: run diverged: {result.error}\n")
        return 1
    return 0

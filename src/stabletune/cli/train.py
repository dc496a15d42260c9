"""`stabletune train`: one fine-tuning run. Options come from RunConfig's fields (defaults < --config YAML <
command-line options and key=value overrides)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from stabletune.outputs import check_out_folder
from stabletune.config import FIELDS, RunConfig, _base_type, field_type, make_config
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
    p.add_argument("--ensemble", type=int, default=1, metavar="K",
                   help="train K seeds (seed, seed+1, ...) at once as one vectorised model, each written as its "
                        "own run folder OUT/seed<N>; pays on a GPU; on CPU separate worker processes are faster "
                        "(docs/performance.md) (default: 1)")
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


def member_configs(cfg: RunConfig, k: int) -> list[RunConfig]:
    """The K member runs of ``--ensemble K``: every seed given (seed, and init/data seeds if set) plus k, each
    writing ``<out>/seed<seed>``."""
    members = []
    for i in range(k):
        members.append(dataclasses.replace(  # validated: seed + i may leave the seed range
            cfg, seed=cfg.seed + i,
            init_seed=None if cfg.init_seed is None else cfg.init_seed + i,
            data_seed=None if cfg.data_seed is None else cfg.data_seed + i,
            out=str(Path(cfg.out) / f"seed{cfg.seed + i}")).validate())
    return members


def run(args: argparse.Namespace) -> int:
    from stabletune.engine.setup import check_inputs  # torch: imported when a run starts, not for --help
    from stabletune.training import train

    cfg = make_config(parse_overrides(args), yaml_path=args.config)
    if not cfg.out:
        raise ConfigError("invalid option --out: give the run folder to write (e.g. --out runs/rte-s0)")
    if args.ensemble < 1:
        raise ConfigError(f"invalid option --ensemble: must be >= 1, got {args.ensemble}")
    if args.ensemble > 1 and cfg.report_to != "none":  # the vectorised ensemble has no per-member logger
        raise ConfigError("invalid option --report-to: not supported with --ensemble; train the seeds one by one "
                          "or as a study (one TensorBoard run per seed)")
    # Everything that can fail without training fails here, before data and model are loaded.
    check_out_folder(cfg.out, overwrite=cfg.overwrite, may_exist=args.ensemble > 1)
    if cfg.report_to != "none" and cfg.logging_dir is not None:
        check_out_folder(cfg.logging_dir, option="--logging-dir", may_exist=True)
    members = member_configs(cfg, args.ensemble) if args.ensemble > 1 else None
    check_inputs(cfg)
    if members is None:
        results = [train(cfg)]
    else:
        from stabletune.training import train_ensemble

        # each member's folder is checked (exists without --overwrite?) before any training starts
        results = train_ensemble(members)
    code = 0
    for result in results:
        summary = {"status": result.status, "out": result.out_dir, "seed": result.seeds["seed"],
                   "steps": result.last["step"],
                   "best": {"step": result.best["step"], "test": result.best["test"]},
                   "last": {"step": result.last["step"], "test": result.last["test"]},
                   "wall_s": round(result.timings["wall_s"], 1),
                   "examples_per_s": round(result.timings["examples_per_s"], 1)}
        if args.ensemble > 1:
            summary["ensemble"] = result.techniques.get("ensemble", {}).get("mode")
        note = baseline_note(result)
        if note:
            summary["at_or_below_majority_baseline"] = True
        print(json.dumps(summary, default=str))
        if note:
            sys.stderr.write(note)
        if result.status == "diverged":
            sys.stderr.write(f"stabletune: run {result.out_dir or ''} diverged: {result.error}\n")
            code = 1
    return code


def baseline_note(result) -> str | None:
    """A warning when the run's best checkpoint scores at or below the majority baseline (always predicting the
    most frequent class; 0 for correlations and MCC) on test (or validation without a test set): the run learned
    nothing useful, and `stabletune fit` tunes what usually fixes it."""
    import math

    metric = result.task.get("metric")
    baselines = (result.data or {}).get("majority_baseline") or {}
    split, key = ("test", "test") if result.best.get("test") else ("val", "validation")
    value = (result.best.get(split) or {}).get(metric)
    baseline = baselines.get(key)
    if baseline is None or result.status != "finished":
        return None
    if value is not None and math.isfinite(value) and value > baseline + 1e-12:
        return None
    shown = "undefined" if value is None or not math.isfinite(value) else f"{value:.4f}"
    return (f"stabletune: note: run {result.out_dir or ''} ends at or below the majority baseline: {key} {metric} "
            f"{shown} vs {baseline:.4f} for always predicting the most frequent class. This recipe (the paper's "
            f"BERT-Large settings by default) did not learn the task; `stabletune fit` searches the learning rate, "
            f"re-initialisation and length on validation over several seeds (same data options; docs/fit.md).\n")

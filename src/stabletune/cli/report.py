"""``stabletune report``: the paper's tables and figures for a study or a results CSV.

Examples::

    stabletune report studies/bias_correction.yaml          (writes reports/bias_correction/)
    stabletune report --from-csv ../shared/reference/replication-bert-large-600-runs.csv \\
        --metric-col metric_name --checkpoint-from-file file --out reference-report
    stabletune study export studies/bias_correction.yaml --format tables --out bias-export
    stabletune report --from-export bias-export --out reports/bias_correction   (the same report, no database)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from stabletune.errors import ConfigError, DataError, UserError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand."""
    p = subparsers.add_parser(
        "report",
        help="tables (mean ± std, one-tailed t-tests, degenerate runs) and figures of a study or a results CSV",
        description="Write report.md, a self-contained report.html, figures/*.png and tables/*.csv: "
                    "paper Tables 1-4, 7 and Figures 1-18 where the results hold the data.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    p.add_argument("study", nargs="?", help="study YAML file (results read from its store)")
    p.add_argument("--from-csv", metavar="CSV", help="long results CSV, one metric value per row")
    p.add_argument("--from-export", metavar="DIR",
                   help="a study's results export (`stabletune study export STUDY --format tables --out DIR`): "
                        "the same report as from the study's database, without it")
    p.add_argument("--out", metavar="DIR", help="output folder (default: reports/<study or CSV name>); "
                   "an earlier report in it is replaced")
    p.add_argument("--overwrite", action="store_true",
                   help="also replace a report.md/report.html in --out that stabletune report did not write")
    p.add_argument("--baseline", metavar="METHOD",
                   help="method the others are tested against (default: the study's baseline, else "
                        "standard_debiased if present, else the first method)")
    p.add_argument("--welch", action="store_true", help="Welch's t-test instead of Student's (the paper's)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--metric", action="append", default=[], metavar="[TASK=]NAME",
                   help="metric to report: NAME for every task or TASK=NAME (repeatable); "
                        "default: the paper's main metric (acc; f1 for MRPC, spearman for STS-B, mcc for CoLA)")
    p.add_argument("--title", help="report title")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap draws per k for expected performance (default 1000)")
    p.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap generator (default 0)")
    g = p.add_argument_group("CSV columns (with --from-csv)")
    g.add_argument("--method-col", default="method")
    g.add_argument("--task-col", default="task")
    g.add_argument("--seed-col", default="seed")
    g.add_argument("--metric-col", default="metric",
                   help="metric names; a test_/val_/eval_ prefix gives the split (test_acc -> split test, metric acc)")
    g.add_argument("--value-col", default="value")
    g.add_argument("--split-col", help="column holding the split (val/test) instead of a metric-name prefix")
    ck = g.add_mutually_exclusive_group()
    ck.add_argument("--checkpoint-col", help="column holding the checkpoint (best/last)")
    ck.add_argument("--checkpoint-from-file", metavar="COL",
                    help="column of file names that contain best or last (e.g. .../test_best_log.txt)")
    ck.add_argument("--checkpoint", choices=("best", "last"), default="last",
                    help="checkpoint of every row when the CSV does not say (default last)")
    g.add_argument("--init-seed-col", help="initialisation-seed column (seed grid, Figures 9-10)")
    g.add_argument("--data-seed-col", help="data-order seed column (seed grid, Figures 9-10)")
    p.set_defaults(func=run)
    return p


def parse_metric_options(values: list[str]) -> dict[str, str] | None:
    """``["acc", "mrpc=f1"]`` -> ``{"*": "acc", "mrpc": "f1"}`` (task and metric names normalised)."""
    from stabletune.analysis.frames import canonical_metric, canonical_task

    out: dict[str, str] = {}
    for v in values:
        task, sep, name = v.partition("=")
        if not sep:
            task, name = "*", v
        if not name.strip() or not task.strip():
            raise ConfigError(f"invalid option --metric {v!r}: expected NAME or TASK=NAME")
        out["*" if task == "*" else canonical_task(task)] = canonical_metric(name)
    return out or None


def _source_name(args: argparse.Namespace) -> str:
    """The name of the default output folder, known before anything is read: the study's or CSV's name, the
    export folder's (its parent's for a folder named `export`, as in docs/results/<study>/export)."""
    if sum(bool(x) for x in (args.study, args.from_csv, args.from_export)) != 1:
        raise ConfigError("give exactly one source: a study YAML file, --from-csv CSV or --from-export DIR")
    if args.from_export:
        folder = Path(args.from_export).resolve()
        return folder.parent.name if folder.name == "export" else folder.name
    return Path(args.from_csv or args.study).stem


def _load(args: argparse.Namespace):
    if args.from_export:
        from stabletune.analysis.frames import read_frames

        return read_frames(args.from_export)  # meta as exported: the report names the study's source as it did
    if args.from_csv:
        from stabletune.analysis.frames import from_long_csv

        return from_long_csv(
            args.from_csv, method_col=args.method_col, task_col=args.task_col, seed_col=args.seed_col,
            metric_col=args.metric_col, value_col=args.value_col, checkpoint_col=args.checkpoint_col,
            file_col=args.checkpoint_from_file, split_col=args.split_col, init_seed_col=args.init_seed_col,
            data_seed_col=args.data_seed_col, default_checkpoint=args.checkpoint,
        )
    study = Path(args.study)
    if not study.is_file():
        raise DataError(f"study file not found: {study}")
    try:
        from stabletune.study import load_frames
    except ImportError as exc:
        raise UserError(f"cannot read study results: stabletune.study.load_frames is not available ({exc}); "
                        "use --from-csv") from exc
    from stabletune.analysis.frames import name_study_source

    # the report names files relative to the study file, never by this machine's absolute path
    return name_study_source(load_frames(study), study)


def run(args: argparse.Namespace) -> int:
    """Write the report; print where it is and the test-score table of the checkpoint the report leads with."""
    from stabletune.analysis.frames import display_task
    from stabletune.analysis.report import check_out_dir, summary_checkpoint, write_report
    from stabletune.outputs import check_out_folder

    metric_by_task = parse_metric_options(args.metric)  # options first: fail before reading anything
    if args.n_boot < 1:
        raise ConfigError(f"invalid option --n-boot: must be >= 1, got {args.n_boot}")
    if not 0 < args.alpha < 1:
        raise ConfigError(f"invalid option --alpha: must be in (0, 1), got {args.alpha}")
    name = _source_name(args)  # exactly one source, checked whether or not --out is given
    out = Path(args.out) if args.out else Path("reports") / name
    # before reading anything: refuse now, not after the work; the default folder is made with its parents
    check_out_folder(out, may_exist=True, parents=args.out is None)
    check_out_dir(out, overwrite=args.overwrite)
    frames = _load(args)
    paths = write_report(frames, out, baseline=args.baseline, welch=args.welch, title=args.title,
                         metric_by_task=metric_by_task, alpha=args.alpha, n_boot=args.n_boot, seed=args.boot_seed,
                         overwrite=args.overwrite)
    import pandas as pd

    key = "table:summary_" + summary_checkpoint([k.split("_", 1)[1] for k in paths if k.startswith("table:summary_")])
    s = pd.read_csv(paths[key])
    print(f"{key.split('_', 1)[1]} checkpoint, test {'%' if (s['scale'] == 100).all() else 'score'}; "
          f"p: {s['test'].iloc[0]} vs {s['baseline'].dropna().iloc[0] if s['baseline'].notna().any() else '-'}")
    for r in s.itertuples():
        std = "" if math.isnan(r.std) else f" ± {r.std:.2f}"
        p = "" if math.isnan(r.p) else f"  p={r.p:.4g}{' *' if r.significant else ''}"
        nan = f", {r.n_nan} NaN as 0" if r.n_nan else ""
        print(f"  {display_task(r.task):6s} {r.metric:9s} {r.method:28s} {r.mean:6.2f}{std} (n={r.n}{nan}){p}")
    n_fig = sum(k.startswith("figure:") for k in paths)
    print(f"wrote {paths['markdown']}, {paths['html']} and {n_fig} figures in {out / 'figures'}")
    return 0

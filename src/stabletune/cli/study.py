"""`stabletune study run|status|export`: methods x tasks x seeds from one YAML file, stored in SQLite.

    stabletune study run studies/smoke.yaml [--backend local|ray] [--workers N] [--quiet] [--retry-failed]
    stabletune study status studies/smoke.yaml
    stabletune study export studies/smoke.yaml --format csv [--out smoke.csv]
    stabletune study export studies/smoke.yaml --format tables [--out smoke-export]   (for `report --from-export`)

An invalid study file is reported in one line (exit 2) before anything is written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def register(sub) -> None:
    p = sub.add_parser("study", help="run, resume, inspect and export multi-seed studies",
                       description="Methods x tasks x seeds from one study YAML, stored in SQLite "
                                   "(<name>.db next to the file), resumable after any crash. See docs/studies.md.")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])
    ss = p.add_subparsers(dest="study_command", metavar="ACTION")

    r = ss.add_parser("run", help="run (or resume) a study",
                      description="Run every run of the study that has no result yet; rerun after a crash to "
                                  "resume. Example: stabletune study run studies/smoke.yaml --workers 2")
    _common(r)
    r.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: a process pool on this machine (default); ray: one Ray task per run")
    r.add_argument("--workers", type=int, metavar="N",
                   help="concurrent runs (local default: one per core up to 4 cores; 0: run in this process)")
    r.add_argument("--ray-address", metavar="ADDR",
                   help="join this Ray cluster (HOST:PORT of its GCS) instead of starting a local one; refused in "
                        "one line if it does not let the driver join within 30 s")
    r.add_argument("--data-dir", metavar="DIR", help="GLUE folder for every run (overrides the study file)")
    r.add_argument("--ensemble", default="auto", metavar="K|auto",
                   help="train up to K runs that differ only in their seeds at once as one vectorised model "
                        "(auto: 4 on a GPU, 1 on CPU, where separate worker processes are faster; "
                        "see docs/performance.md)")
    r.add_argument("--quiet", action="store_true", help="one log line per finished run instead of a progress bar")
    r.add_argument("--retry-failed", action="store_true", help="also redo runs recorded as failed")
    k = r.add_argument_group("early kill (Dodge et al., 2020; off by default)")
    k.add_argument("--early-kill", action="store_true",
                   help="stop runs whose validation score at an early evaluation is below the quantile of their "
                        "finished peers (same method/task) or below a threshold; recorded as killed")
    k.add_argument("--early-kill-eval", type=int, default=2, metavar="K",
                   help="the evaluation to judge at, 1-based (default 2, i.e. the 2nd of 10)")
    k.add_argument("--early-kill-quantile", type=float, metavar="Q",
                   help="kill below this quantile of the peers' scores (default 0.5 unless a threshold is given)")
    k.add_argument("--early-kill-threshold", type=float, metavar="X", help="kill below this score")
    k.add_argument("--early-kill-min-peers", type=int, default=3, metavar="M",
                   help="peers needed before the quantile rule applies (default 3)")
    r.set_defaults(func=cmd_run)

    s = ss.add_parser("status", help="done / running / failed / pending runs and ETA",
                      description="Show how far a study is (reads the database, writes nothing).")
    _common(s)
    s.add_argument("--workers", type=int, metavar="N", help="workers assumed for the ETA (default: as `run`)")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s.set_defaults(func=cmd_status)

    e = ss.add_parser("export", help="write one row per run as CSV or Parquet, or everything a report needs",
                      description="Export the study's runs (method, task, phase, seeds, status, timings, "
                                  "best/last val and test metrics) as one CSV or Parquet file; or, with --format "
                                  "tables, a folder with every result table (metrics, training loss, validation "
                                  "curves, parameter distances, runs; CSV) and meta.json, from which `stabletune "
                                  "report --from-export DIR` writes the study's report without the database.")
    _common(e)
    e.add_argument("--format", choices=("csv", "parquet", "tables"), default="csv",
                   help="csv or parquet: one row per run, one file; tables: a folder for `report --from-export` "
                        "(default csv)")
    e.add_argument("--out", metavar="PATH", help="output file (default: the database path with .csv/.parquet); "
                   "with --format tables a folder (default: <database name>-export beside it), an earlier "
                   "export there is replaced")
    e.set_defaults(func=cmd_export)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="FILE", help="the study YAML (e.g. studies/smoke.yaml)")
    p.add_argument("--db", metavar="PATH", help="the SQLite database (default: <name>.db next to FILE)")


def cmd_run(args: argparse.Namespace) -> int:
    from stabletune.study import EarlyKill, load_study, run_study

    from stabletune.errors import ConfigError

    spec = load_study(args.study)  # validate before anything else
    ensemble = None
    if args.ensemble != "auto":
        try:
            ensemble = int(args.ensemble)
        except ValueError:
            raise ConfigError(f"invalid option --ensemble: expected a number or auto, got {args.ensemble!r}") from None
        if ensemble < 1:
            raise ConfigError(f"invalid option --ensemble: must be >= 1, got {ensemble}")
    early = None
    for name in ("early_kill_quantile", "early_kill_threshold"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"invalid option --{name.replace('_', '-')}: must be a finite number, got {value}")
    if args.early_kill or args.early_kill_quantile is not None or args.early_kill_threshold is not None:
        quantile = args.early_kill_quantile
        if quantile is None and args.early_kill_threshold is None:
            quantile = 0.5
        early = EarlyKill(at_eval=args.early_kill_eval, quantile=quantile, threshold=args.early_kill_threshold,
                          min_peers=args.early_kill_min_peers)
    out = run_study(spec, db=args.db, backend=args.backend, workers=args.workers, ray_address=args.ray_address,
                    quiet=args.quiet, early_kill=early, retry_failed=args.retry_failed, data_dir=args.data_dir,
                    ensemble=ensemble)
    counts = ", ".join(f"{k} {v}" for k, v in out.counts.items() if v)
    sys.stderr.write(f"study {out.name}: {counts} of {out.total} runs ({out.ran} run now, {out.copied} reused "
                     f"from the search) in {out.wall_s:.1f} s; database {out.db}\n")
    for label, err in out.failures:
        sys.stderr.write(f"  failed: {label}: {err}\n")
    for method, task in out.blocked:
        sys.stderr.write(f"  blocked: {method}/{task}: no search candidate produced a validation score\n")
    return 0 if out.ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    from stabletune.study import study_status

    st = study_status(args.study, db=args.db, workers=args.workers)
    if args.json:
        st = {**st, "groups": {f"{m}/{t}": c for (m, t), c in st["groups"].items()}}
        print(json.dumps(st, indent=2, default=str))
        return 0
    from stabletune.study.runner import format_seconds

    c = st["counts"]
    state = "running now" if st["live"] else ("not running" if st["exists"] else "not started (no database yet)")
    print(f"study {st['name']}: {state}; database {st['db']}")
    done = c["finished"] + c["diverged"] + c["killed"]
    print(f"  {done}/{st['total']} done (finished {c['finished']}, diverged {c['diverged']}, killed {c['killed']}), "
          f"running {c['running']}, interrupted {c['interrupted']}, failed {c['failed']}, pending {c['pending']}")
    if st["mean_run_s"] is not None:
        print(f"  mean run {st['mean_run_s']:.1f} s; ETA {format_seconds(st['eta_s'])} with {st['workers']} worker(s)")
    for (method, task), g in st["groups"].items():
        print(f"  {method:<20} {task:<12} " + " ".join(f"{k} {v}" for k, v in sorted(g.items())))
    for line in st["choices"]:
        print(f"  search: {line}")
    for method, task in st["blocked"]:
        print(f"  blocked: {method}/{task}: no search candidate produced a validation score")
    if st["unplanned"]:
        print(f"  note: {st['unplanned']} stored run(s) are not planned by this study file (it was edited, or "
              f"stabletune changed how runs are identified); they are kept but not part of the results")
    for label, n in st["outdated"]["split"].items():
        print(f"  note: {n} stored run(s) were drawn with an older definition of split {label}; they are not reused "
              "(docs/studies.md, 'Split versions'): `study run` computes the current ones")
    if st["outdated"]["grouped"]:
        print(f"  note: {st['outdated']['grouped']} stored run(s) grouped training batches by length, the default "
              "before 2026-12-01; the study now plans them with random batches (pin `group_by_length: true` in the "
              "study file to keep the old runs)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stabletune.study import export_results

    if args.format == "tables":
        return _export_tables(args)
    if args.out:  # checked before the database is read
        from stabletune.outputs import check_out_file

        check_out_file(args.out, what=f"{args.format.upper()} file")
    path = export_results(args.study, fmt=args.format, out=args.out, db=args.db)
    print(path)
    return 0


def _export_tables(args: argparse.Namespace) -> int:
    from stabletune.analysis.frames import check_export_dir
    from stabletune.outputs import check_out_folder
    from stabletune.errors import UserError
    from stabletune.study import export_frames
    from stabletune.study.results import default_export_dir

    out = args.out or default_export_dir(args.study, args.db)
    # checked before the database is read: a folder named with --out must be in a folder that exists
    check_out_folder(out, may_exist=True, parents=args.out is None)
    try:
        check_export_dir(out)
    except UserError as e:
        raise UserError(f"invalid option --out: {e}") from None
    print(export_frames(args.study, out, db=args.db))
    return 0

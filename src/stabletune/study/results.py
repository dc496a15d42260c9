"""Read a study database into pandas: one row per run (:func:`load_results`), the report engine's
:class:`~stabletune.analysis.frames.ResultsFrames` (:func:`load_frames`), CSV/Parquet export of the runs
(:func:`export_results`) and the export of everything a report needs (:func:`export_frames`).

Only the runs of the study's current plan are read (the latest study file stored in the database, or the one
given): runs left over from an earlier version of the file (another learning rate, say) never mix in.
No torch here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from stabletune.errors import ConfigError, DataError, UserError
from stabletune.study.spec import StudySpec, load_study, parse_study
from stabletune.outputs import staged_file
from stabletune.study.store import TERMINAL, Store
from stabletune.study.tuning import Planner, candidate_label

log = logging.getLogger(__name__)

RUN_COLUMNS = ("run_id", "method", "task", "phase", "seed", "init_seed", "data_seed", "split_seed", "candidate",
               "status", "error", "attempts", "main_metric", "best_val", "best_step", "last_step", "num_steps",
               "wall_s", "train_s", "examples_per_s", "peak_memory_mb", "copied_from", "host", "created_at",
               "started_at", "finished_at")


def _open(source: str | Path | StudySpec, db: str | Path | None) -> tuple[Store, StudySpec | None]:
    """(read-only store, spec or None) from a study YAML / StudySpec or a database path."""
    if isinstance(source, StudySpec):
        spec = source
    else:
        p = Path(source)
        spec = load_study(p) if p.suffix.lower() in (".yaml", ".yml") else None
        if spec is None:
            db = db or p
    db_path = Path(db) if db is not None else spec.default_db
    store = Store.open(db_path, readonly=True)
    if spec is None:
        row = store.latest_spec()
        if row is not None:
            try:
                spec = parse_study(row["spec_text"], row["spec_path"])
            except ConfigError as e:
                log.warning("cannot re-read the study file stored in %s (%s); reading every run", db_path, e)
    return store, spec


def _planned_rows(store: Store, spec: StudySpec | None, all_runs: bool) -> list[Any]:
    if all_runs or spec is None:
        return store.runs()
    ids = Planner(spec).plan(store).ids  # in plan order: phase, seed, task, method
    rows = {r["run_id"]: r for r in store.runs(ids)}
    return [rows[i] for i in ids if i in rows]


def load_results(source: str | Path | StudySpec, *, db: str | Path | None = None, phase: str | None = None,
                 all_runs: bool = False) -> pd.DataFrame:
    """One row per run: method, task, phase, seeds, status, timings, best validation score, and one column
    per stored metric ``<checkpoint>_<split>_<metric>`` (e.g. ``best_test_acc``, ``last_test_acc``).

    Args:
        source: study YAML (its database is ``<name>.db`` beside it unless ``db``) or a database path.
        db: the database, when ``source`` is a study file.
        phase: ``"search"`` or ``"final"`` only (default both).
        all_runs: include stored runs that the current study file no longer plans.
    """
    store, spec = _open(source, db)
    with store:
        rows = _planned_rows(store, spec, all_runs)
        ids = [r["run_id"] for r in rows]
        metrics = _query(store, "test_metrics", ids)
    df = pd.DataFrame([{k: r[k] for k in RUN_COLUMNS} for r in rows], columns=list(RUN_COLUMNS))
    if phase is not None:
        df = df[df["phase"] == phase]
    if not metrics.empty:
        metrics["column"] = metrics["checkpoint"] + "_" + metrics["split"] + "_" + metrics["metric"]
        wide = metrics.pivot_table(index="run_id", columns="column", values="value", aggfunc="first", dropna=False)
        order = sorted(wide.columns, key=lambda c: (c.split("_")[1] != "test", c.split("_")[0] != "best", c))
        df = df.merge(wide[order], how="left", left_on="run_id", right_index=True)
    return df.reset_index(drop=True)


def _query(store: Store, table: str, ids: list[str]) -> pd.DataFrame:
    frames = []
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        frames.append(pd.read_sql_query(f"SELECT * FROM {table} WHERE run_id IN ({','.join('?' * len(chunk))})",
                                        store.conn, params=chunk))
    if not frames:
        cols = [r[1] for r in store.conn.execute(f"PRAGMA table_info({table})")]
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)


def load_frames(study_path: str | Path | StudySpec, *, db: str | Path | None = None,
                phase: str = "final") -> Any:
    """The study's results as :class:`stabletune.analysis.frames.ResultsFrames` (the report engine's input).

    Args:
        study_path: the study YAML (or a :class:`StudySpec`, or a database path).
        db: the database (default ``<name>.db`` beside the study file).
        phase: ``"final"`` (the reported runs; default) or ``"search"`` (e.g. Figure 8's curves); in the search
            phase every candidate is its own method, named ``"<method> <option>=<value> ..."``.

    Returns:
        ResultsFrames with ``metrics`` (method, task, seed, checkpoint, split, metric, value, init_seed,
        data_seed, run_id, status, max_steps, majority_baseline of the split's labels), ``train_loss``,
        ``evals``, ``param_distance``, ``runs``, ``predictions`` (per-example test predictions, when the
        database has them: schema version 2) and ``meta`` (study config text, versions, run counts). Only runs with a terminal status are included.
    """
    from stabletune.analysis.frames import ResultsFrames

    if phase not in ("search", "final"):
        raise UserError(f"phase must be 'search' or 'final', got {phase!r}")
    store, spec = _open(study_path, db)
    with store:
        rows = [r for r in _planned_rows(store, spec, False) if r["phase"] == phase]
        n_planned = len(rows)
        rows = [r for r in rows if r["status"] in TERMINAL]
        ids = [r["run_id"] for r in rows]
        runs = pd.DataFrame([{k: r[k] for k in RUN_COLUMNS} for r in rows], columns=list(RUN_COLUMNS))
        if phase == "search" and not runs.empty:
            # each search candidate is its own row of the report ("adam lr=0.0002"), not pooled into its method
            runs["method"] = [f"{m} {candidate_label(json.loads(c) if c else {})}".rstrip() for m, c in zip(runs["method"], runs["candidate"])]
        keys = runs[["run_id", "method", "task", "seed", "init_seed", "data_seed", "status", "num_steps"]]
        baselines = _majority_baselines(rows)
        metrics = _query(store, "test_metrics", ids)
        train_loss = _query(store, "train_loss", ids)
        evals = _query(store, "evals", ids)
        dist = _query(store, "param_distance", ids)
        preds = _query(store, "predictions", ids) if store.has_table("predictions") else pd.DataFrame()
        spec_row = store.latest_spec()
        versions: dict[str, Any] = {}
        for r in rows:
            if r["environment"]:
                versions = json.loads(r["environment"]).get("versions") or {}
                if versions:
                    break

    def with_keys(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
        out = keys.merge(df, on="run_id", how="inner")
        return out[["method", "task", "seed"] + cols + ["init_seed", "data_seed", "run_id"]]

    if metrics.empty:
        metrics_df = pd.DataFrame(columns=["method", "task", "seed", "checkpoint", "split", "metric", "value",
                                           "init_seed", "data_seed", "run_id", "status", "max_steps",
                                           "majority_baseline"])
    else:
        metrics_df = keys.merge(metrics, on="run_id", how="inner").rename(columns={"num_steps": "max_steps"})
        metrics_df = metrics_df[["method", "task", "seed", "checkpoint", "split", "metric", "value", "init_seed",
                                 "data_seed", "run_id", "status", "max_steps", "step"]]
        # the stored baseline is the score of the majority predictor in the run's MAIN metric (MCC 0 on CoLA): it
        # is no threshold for the run's other metrics (CoLA's accuracy), which get none (NaN)
        main = dict(zip(runs["run_id"], runs["main_metric"]))
        metrics_df["majority_baseline"] = [
            baselines.get((r, sp), float("nan")) if metric == main.get(r) else float("nan")
            for r, sp, metric in zip(metrics_df["run_id"], metrics_df["split"], metrics_df["metric"])]
    meta = {
        "config": spec_row["spec_text"] if spec_row is not None else (spec.text if spec else None),
        "study": spec.name if spec else (spec_row["name"] if spec_row is not None else None),
        "baseline": _phase_baseline(spec.baseline if spec else None, runs, phase),
        "versions": versions,
        "n_runs": len(rows),
        "n_planned": n_planned,
        "phase": phase,
        "source": str(store.path),
    }
    return ResultsFrames(
        metrics=metrics_df,
        train_loss=with_keys(train_loss, ["step", "loss", "lr", "grad_norm"]) if not train_loss.empty else None,
        evals=with_keys(evals, ["step", "epoch", "metric", "value"]) if not evals.empty else None,
        param_distance=with_keys(dist, ["step", "block", "distance"]) if not dist.empty else None,
        predictions=(with_keys(preds.merge(runs[["run_id", "split_seed"]], on="run_id"),
                               ["checkpoint", "split", "split_seed", "n", "data"]) if not preds.empty else None),
        runs=runs if not runs.empty else None,
        meta=meta,
    )


def _phase_baseline(baseline: str | None, runs: pd.DataFrame, phase: str) -> str | None:
    """The study's baseline method; in the search phase its first candidate (file order), if it was searched."""
    if phase != "search" or baseline is None or runs.empty or baseline in set(runs["method"]):
        return baseline
    labels = [m for m in dict.fromkeys(runs["method"]) if m.startswith(baseline + " ")]
    return labels[0] if labels else None


def _majority_baselines(rows: list[Any]) -> dict[tuple[str, str], float]:
    """(run id, "val"|"test") -> the majority-class baseline, in the run's main metric, of the labels the run was
    scored on (``data.
    majority_baseline`` of its summary, stored since 2026-12-01; runs stored earlier have none, and the analysis
    falls back to Table 3)."""
    out: dict[tuple[str, str], float] = {}
    for r in rows:
        summary = json.loads(r["summary"]) if r["summary"] else {}
        record = (summary.get("data") or {}).get("majority_baseline") or {}
        for name, split in (("validation", "val"), ("test", "test")):
            if record.get(name) is not None:
                out[(r["run_id"], split)] = float(record[name])
    return out


def export_results(source: str | Path, *, fmt: str = "csv", out: str | Path | None = None,
                   db: str | Path | None = None) -> Path:
    """Write :func:`load_results` as CSV or Parquet (default path: the database's, with the new suffix)."""
    if fmt not in ("csv", "parquet"):
        raise UserError(f"unknown export format {fmt!r}: choose csv or parquet")
    df = load_results(source, db=db)
    if df.empty or not df["status"].isin(TERMINAL).any():
        counts = df["status"].value_counts().to_dict() if not df.empty else {}
        raise DataError(_nothing_ran(source, ", ".join(f"{n} {status}" for status, n in counts.items())))
    if out is None:
        out = _database_path(source, db).with_suffix(f".{fmt}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(out) as tmp:  # a full disk leaves no half-written (or 0-byte) export
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            try:
                df.to_parquet(tmp, index=False)
            except ImportError:
                raise UserError("--format parquet needs pyarrow: pip install pyarrow") from None
    return out


def _nothing_ran(source: str | Path | StudySpec, held: str) -> str:
    name = source.name if isinstance(source, StudySpec) else Path(source).name
    return (f"{name}: the study has no results to export yet ({held or 'no runs'}): run `stabletune study run` first; "
            "nothing was written")


def _database_path(source: str | Path, db: str | Path | None) -> Path:
    if db is not None:
        return Path(db)
    if Path(source).suffix.lower() in (".yaml", ".yml"):
        return load_study(source).default_db
    return Path(source)


def default_export_dir(source: str | Path, db: str | Path | None = None) -> Path:
    """Where `study export --format tables` writes without --out: `<database name>-export/` beside the database."""
    base = _database_path(source, db)
    return base.with_name(f"{base.stem}-export")


def export_frames(source: str | Path | StudySpec, out: str | Path | None = None, *,
                  db: str | Path | None = None) -> Path:
    """Write everything a report needs as an export folder, so that a report is regenerated without the database.

    The final phase's :func:`load_frames` go to ``out`` (metrics, training loss, validation curves, parameter
    distances, runs: one CSV each, and meta.json; see :func:`stabletune.analysis.frames.write_frames`); when the
    study has a search phase, its frames go to ``out/search``. The results' source is named as `stabletune report
    STUDY` names it (the database relative to the study file), so `stabletune report --from-export OUT` writes the
    report `stabletune report STUDY` writes, report.md and tables byte for byte.

    Args:
        source: the study YAML (or its database).
        out: the export folder (default :func:`default_export_dir`); an earlier export there is replaced.
        db: the database, when ``source`` is a study file.

    Raises:
        UserError: ``out`` is a file or a folder that is not an earlier export (checked before reading).
    """
    from stabletune.analysis.frames import check_export_dir, name_study_source, write_frames

    out = Path(out) if out is not None else default_export_dir(source, db)
    check_export_dir(out)
    final = load_frames(source, db=db, phase="final")
    search = load_frames(source, db=db, phase="search")
    if final.metrics.empty and search.metrics.empty:  # an empty export would read as "a study with no results"
        planned = (final.meta.get("n_planned") or 0) + (search.meta.get("n_planned") or 0)
        raise DataError(_nothing_ran(source, f"{planned} run(s) planned, none with a result"))
    if not isinstance(source, StudySpec):
        for frames in (final, search):
            name_study_source(frames, source)
    return write_frames(final, out, subfolders={"search": search} if search.meta.get("n_planned") else None)


__all__ = ["load_results", "load_frames", "export_results", "export_frames", "default_export_dir", "DataError"]

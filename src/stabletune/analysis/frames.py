"""The results frames: the one input format of every statistic, table and figure.

A study store (``stabletune.study.load_frames``) or a CSV (:func:`from_long_csv`) produces a
:class:`ResultsFrames`; everything in :mod:`stabletune.analysis` reads only these pandas frames, never
models (this package must not import torch).

Task names are normalised to the lower-case canonical GLUE names (``"RTE"`` -> ``"rte"``,
``"STS-B"`` -> ``"sts-b"``) and metric names to the short names of :data:`MAIN_METRIC`
(``"spearmanr"`` -> ``"spearman"``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stabletune.errors import DataError, UserError
from stabletune.tasks import GLUE_TASKS, METRIC_ALIASES, canonical_name

#: Main metric of each GLUE task (paper Table 3, "Evaluation metric"), from the task registry.
MAIN_METRIC: dict[str, str] = {name: spec.metric for name, spec in GLUE_TASKS.items()}

#: Display names of the canonical tasks, in the paper's order.
TASK_DISPLAY: dict[str, str] = {name: spec.display_name for name, spec in GLUE_TASKS.items()}

_SPLIT_PREFIXES = {"test": "test", "val": "val", "eval": "val", "dev": "val", "valid": "val",
                   "validation": "val"}

CHECKPOINTS = ("best", "last")
SPLITS = ("val", "test")
METRICS_COLUMNS = ("method", "task", "seed", "checkpoint", "split", "metric", "value")
RUN_KEY_OPTIONAL = ("init_seed", "data_seed", "run_id")


def canonical_task(name: Any) -> str:
    """Lower-case canonical task name (``"STS-B"`` -> ``"sts-b"``, any spelling :func:`stabletune.tasks.get_task`
    accepts); unknown names are lower-cased."""
    key = str(name).strip().lower()
    return canonical_name(key) or key


def canonical_metric(name: Any) -> str:
    """Short metric name (``"spearmanr"`` -> ``"spearman"``); unknown names are lower-cased."""
    key = str(name).strip().lower()
    return METRIC_ALIASES.get(key, key)


def display_task(task: str) -> str:
    """The paper's spelling of a canonical task (``"sts-b"`` -> ``"STS-B"``)."""
    return TASK_DISPLAY.get(task, task)


def task_order(tasks: Any) -> list[str]:
    """Tasks in the paper's order (RTE, MRPC, STS-B, CoLA, SST-2, QNLI, QQP, MNLI), others after, sorted."""
    known = list(TASK_DISPLAY)
    uniq = list(dict.fromkeys(tasks))
    return [t for t in known if t in uniq] + sorted(t for t in uniq if t not in known)


def method_order(df: pd.DataFrame) -> list[str]:
    """Methods in order of first appearance (the study's order)."""
    return list(dict.fromkeys(df["method"].tolist()))


def _require(df: pd.DataFrame, cols: tuple[str, ...] | list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {', '.join(missing)} (columns present: {', '.join(map(str, df.columns))})")


def _normalise_common(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    if "task" in df.columns:
        df["task"] = df["task"].map(canonical_task)
    if "method" in df.columns:
        df["method"] = df["method"].astype(str)
    return df


def normalise_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Validate and normalise a metrics frame (columns of :data:`METRICS_COLUMNS`)."""
    _require(df, METRICS_COLUMNS, "metrics frame")
    df = _normalise_common(df)
    df["metric"] = df["metric"].map(canonical_metric)
    df["checkpoint"] = df["checkpoint"].astype(str).str.lower()
    df["split"] = df["split"].astype(str).str.lower().map(lambda s: _SPLIT_PREFIXES.get(s, s))
    for col, allowed in (("checkpoint", CHECKPOINTS), ("split", SPLITS)):
        bad = sorted(set(df[col]) - set(allowed))
        if bad:
            raise DataError(f"metrics frame: column {col} has value(s) {bad}; expected one of {list(allowed)}")
    bad_rows = _not_numbers(df["value"])
    if bad_rows.any():
        i = bad_rows.idxmax()
        raise DataError(f"metrics frame: row {i}: value {df.loc[i, 'value']!r} is not a number")
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    return df.reset_index(drop=True)


def _not_numbers(values: pd.Series) -> pd.Series:
    """True where a value is neither a number nor a missing value (NaN or empty are kept as NaN)."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers.isna() & values.notna() & ~values.astype(str).str.strip().str.lower().isin(["nan", ""])


@dataclass
class ResultsFrames:
    """All results of a study as pandas frames (only ``metrics`` is required).

    Attributes:
        metrics: long format ``method, task, seed, checkpoint (best|last), split (val|test), metric, value``;
            optional ``init_seed, data_seed, run_id, status, max_steps, majority_baseline`` (the score of
            always predicting the most frequent label of the split the row was scored on, same units as ``value``).
        train_loss: ``method, task, seed, step, loss``.
        evals: validation curve ``method, task, seed, step, metric, value``.
        param_distance: ``method, task, seed, step, block, distance`` (paper Figure 7).
        runs: one row per run ``method, task, seed, status (finished|failed|diverged|killed), ...``.
        meta: study config text (``config``), software versions (``versions``), ``n_runs``, ``source`` ...
    """

    metrics: pd.DataFrame
    train_loss: pd.DataFrame | None = None
    evals: pd.DataFrame | None = None
    param_distance: pd.DataFrame | None = None
    runs: pd.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metrics = normalise_metrics(self.metrics)
        specs = {
            "train_loss": ("method", "task", "seed", "step", "loss"),
            "evals": ("method", "task", "seed", "step", "metric", "value"),
            "param_distance": ("method", "task", "seed", "step", "block", "distance"),
            "runs": ("method", "task", "seed", "status"),
        }
        for name, cols in specs.items():
            frame = getattr(self, name)
            if frame is None:
                continue
            if frame.empty:
                setattr(self, name, None)
                continue
            _require(frame, cols, f"{name} frame")
            frame = _normalise_common(frame)
            if "metric" in frame.columns:
                frame["metric"] = frame["metric"].map(canonical_metric)
            if "status" in frame.columns:
                frame["status"] = frame["status"].astype(str).str.lower()
            setattr(self, name, frame)
        self.meta = dict(self.meta or {})


def run_key_columns(df: pd.DataFrame) -> list[str]:
    """Columns that identify one run inside a (method, task): ``run_id`` if present, else the seeds."""
    if "run_id" in df.columns and df["run_id"].notna().all():
        return ["run_id"]
    return ["seed"] + [c for c in ("init_seed", "data_seed") if c in df.columns and df[c].notna().all()]


def main_metric(task: str, metrics_present: Any = (), override: dict[str, str] | None = None) -> str:
    """The metric reported for ``task``: ``override[task]`` (or ``override["*"]``), else :data:`MAIN_METRIC`.

    For a task the paper does not use, the only metric present, else ``acc`` if present.
    """
    override = override or {}
    if task in override:
        return override[task]
    if "*" in override:
        return override["*"]
    if task in MAIN_METRIC:
        return MAIN_METRIC[task]
    present = sorted(set(metrics_present))
    if len(present) == 1:
        return present[0]
    if "acc" in present:
        return "acc"
    raise UserError(f"task {task!r}: no default main metric; choose one with --metric {task}=NAME (present: {present})")


def main_values(
    metrics: pd.DataFrame, *, task: str, method: str, metric: str, checkpoint: str, split: str
) -> pd.Series:
    """One value per run (index: run key) of one metric; NaN values are kept.

    Raises:
        DataError: when a run has two values for the same (checkpoint, split, metric).
    """
    sel = metrics[
        (metrics["task"] == task)
        & (metrics["method"] == method)
        & (metrics["metric"] == metric)
        & (metrics["checkpoint"] == checkpoint)
        & (metrics["split"] == split)
    ]
    keys = run_key_columns(metrics)
    dup = sel.duplicated(subset=keys, keep=False)
    if dup.any():
        row = sel[dup].iloc[0]
        who = ", ".join(f"{k}={row[k]}" for k in keys)
        raise DataError(
            f"metrics: {method}/{task} {who} has {int(dup.sum())} values of {split}_{metric} at checkpoint "
            f"{checkpoint}; each run must have one (is a checkpoint or split column missing from the mapping?)"
        )
    return sel.set_index(keys)["value"].sort_index()


# ------------------------------------------------------------------------------------------------
# CSV reader
# ------------------------------------------------------------------------------------------------
_CHECKPOINT_IN_NAME = re.compile(r"(?<![a-z])(best|last)(?![a-z])", re.IGNORECASE)


def checkpoint_from_name(name: str) -> str | None:
    """``best`` or ``last`` from a file name such as ``.../SEED0/test_best_log.txt`` (basename only)."""
    base = re.split(r"[/\\]", str(name))[-1]
    found = {m.lower() for m in _CHECKPOINT_IN_NAME.findall(base.replace("_", " ").replace("-", " ").replace(".", " "))}
    return found.pop() if len(found) == 1 else None


def split_metric_prefix(name: str, default_split: str) -> tuple[str, str]:
    """``"test_acc"`` -> ``("test", "acc")``; ``"eval_f1"`` -> ``("val", "f1")``; no prefix -> default split."""
    key = str(name).strip()
    head, sep, rest = key.partition("_")
    if sep and head.lower() in _SPLIT_PREFIXES and rest:
        return _SPLIT_PREFIXES[head.lower()], canonical_metric(rest)
    return default_split, canonical_metric(key)


def from_long_csv(
    path: str | Path,
    *,
    method_col: str = "method",
    task_col: str = "task",
    seed_col: str = "seed",
    metric_col: str = "metric",
    value_col: str = "value",
    checkpoint_col: str | None = None,
    file_col: str | None = None,
    split_col: str | None = None,
    init_seed_col: str | None = None,
    data_seed_col: str | None = None,
    default_checkpoint: str = "last",
    default_split: str = "test",
) -> ResultsFrames:
    """Read a long CSV (one metric value per row) into :class:`ResultsFrames`.

    Metric names may carry a split prefix (``test_acc``, ``val_f1``, ``eval_mcc``): it becomes the split
    unless ``split_col`` is given. The checkpoint comes from ``checkpoint_col``, else from the file name in
    ``file_col`` (``test_best_log.txt`` -> best), else ``default_checkpoint``. NaN values are kept.

    Example (the reference replication CSV)::

        from_long_csv(path, metric_col="metric_name", file_col="file")

    Raises:
        DataError: missing file or column, a non-numeric value, or a file name without best/last.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"results CSV not found: {path}")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot read as CSV: {str(exc).splitlines()[0]}") from exc
    options = {"--method-col": method_col, "--task-col": task_col, "--seed-col": seed_col,
               "--metric-col": metric_col, "--value-col": value_col, "--checkpoint-col": checkpoint_col,
               "--checkpoint-from-file": file_col, "--split-col": split_col,
               "--init-seed-col": init_seed_col, "--data-seed-col": data_seed_col}
    for opt, col in options.items():
        if col is not None and col not in raw.columns:
            close = difflib.get_close_matches(col, [str(c) for c in raw.columns], n=1)
            hint = f"; did you mean {opt} {close[0]}?" if close else ""
            raise DataError(f"{path}: no column {col!r} ({opt}); columns are: {', '.join(map(str, raw.columns))}{hint}")
    if default_checkpoint not in CHECKPOINTS:
        raise UserError(f"default checkpoint must be one of {CHECKPOINTS}, got {default_checkpoint!r}")

    bad_rows = _not_numbers(raw[value_col])
    if bad_rows.any():  # said here in file lines, as the other messages about the CSV are
        i = int(bad_rows.to_numpy().argmax())
        raise DataError(f"{path}: row {i + 2}: value {raw[value_col].iloc[i]!r} is not a number "
                        f"(column {value_col!r})")
    out = pd.DataFrame({
        "method": raw[method_col].astype(str),
        "task": raw[task_col],
        "seed": raw[seed_col],
        "value": raw[value_col],
    })
    prefixed = raw[metric_col].astype(str).map(lambda m: split_metric_prefix(m, default_split))
    out["metric"] = [m for _, m in prefixed]
    if split_col is not None:
        out["split"] = raw[split_col].astype(str).str.lower()
    else:
        out["split"] = [s for s, _ in prefixed]
    if checkpoint_col is not None:
        out["checkpoint"] = raw[checkpoint_col].astype(str).str.lower()
    elif file_col is not None:
        ck = raw[file_col].astype(str).map(checkpoint_from_name)
        if ck.isna().any():
            i = int(ck.isna().to_numpy().argmax())
            raise DataError(f"{path}: row {i + 2}: cannot tell best/last checkpoint from {file_col}={raw[file_col].iloc[i]!r}")
        out["checkpoint"] = ck
    else:
        out["checkpoint"] = default_checkpoint
    for col, name in ((init_seed_col, "init_seed"), (data_seed_col, "data_seed")):
        if col is not None:
            out[name] = raw[col]
    if file_col is not None:
        out["source_file"] = raw[file_col].astype(str)
    try:
        frames = ResultsFrames(metrics=out)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    keys = ["method", "task", "checkpoint", "split", "metric", *run_key_columns(frames.metrics)]
    dup = frames.metrics.duplicated(subset=keys)
    if dup.any():
        i = int(dup.to_numpy().argmax())
        row = frames.metrics.iloc[i]
        raise DataError(
            f"{path}: row {i + 2} repeats {row['split']}_{row['metric']} of method={row['method']}, task={row['task']}, "
            f"seed={row['seed']} at checkpoint {row['checkpoint']}: say which checkpoint each row is with "
            "--checkpoint-col or --checkpoint-from-file (or add a --split-col)")
    n_runs = len(frames.metrics.drop_duplicates(["method", "task"] + run_key_columns(frames.metrics)))
    frames.meta.update({
        "source": str(path),
        "n_rows": int(len(raw)),
        "n_runs": n_runs,
        "n_nan_values": int(np.isnan(frames.metrics["value"].to_numpy()).sum()),
    })
    return frames

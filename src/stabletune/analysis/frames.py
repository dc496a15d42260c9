"""The results frames: the one input format of every statistic, table and figure.

A study store (``stabletune.study.load_frames``), its export folder (:func:`read_frames`, written by
:func:`write_frames`) or a CSV (:func:`from_long_csv`) produces a :class:`ResultsFrames`; everything in
:mod:`stabletune.analysis` reads only these pandas frames, never models (this package must not import torch).

Task names are normalised to the lower-case canonical GLUE names (``"RTE"`` -> ``"rte"``,
``"STS-B"`` -> ``"sts-b"``) and metric names to the short names of :data:`MAIN_METRIC`
(``"spearmanr"`` -> ``"spearman"``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stabletune.outputs import staged_folder
from stabletune.errors import DataError, UserError
from stabletune.tasks import GLUE_TASKS, METRIC_ALIASES, NAME_RE, NAME_RULE, canonical_name

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


def check_task_names(tasks: pd.Series, where: str, *, first_line: int | None = None) -> None:
    """Refuse a task name that is not :data:`~stabletune.tasks.NAME_RE`: task names become file names of the
    report (``seed_grid_<task>.png``), so a name with ``/`` or ``..`` would write outside the report folder.
    Imported results (``--from-csv``, ``--from-export``) obey the rule study files already do.

    Args:
        first_line: when the rows are lines of a CSV file, the line of row 0 (the message names the line).
    """
    bad = ~tasks.astype(str).map(lambda t: bool(NAME_RE.match(t)))
    if bad.any():
        i = int(bad.to_numpy().argmax())
        at = f"row {i + first_line}" if first_line is not None else f"row {i}"
        raise DataError(f"{where}: {at}: task name {str(tasks.iloc[i])!r} must be {NAME_RULE} "
                        "(it names the report's files)")


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
        predictions: per-example test predictions ``method, task, seed, checkpoint, split, n, data`` (``data``
            one text per run and checkpoint, :mod:`stabletune.predcodec`; optional ``split_seed``, ``run_id``).
        meta: study config text (``config``), software versions (``versions``), ``n_runs``, ``source`` ...
    """

    metrics: pd.DataFrame
    train_loss: pd.DataFrame | None = None
    evals: pd.DataFrame | None = None
    param_distance: pd.DataFrame | None = None
    runs: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metrics = normalise_metrics(self.metrics)
        check_task_names(self.metrics["task"], "metrics frame")
        specs = {
            "train_loss": ("method", "task", "seed", "step", "loss"),
            "evals": ("method", "task", "seed", "step", "metric", "value"),
            "param_distance": ("method", "task", "seed", "step", "block", "distance"),
            "runs": ("method", "task", "seed", "status"),
            "predictions": ("method", "task", "seed", "checkpoint", "split", "n", "data"),
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
            check_task_names(frame["task"], f"{name} frame")
            if "metric" in frame.columns:
                frame["metric"] = frame["metric"].map(canonical_metric)
            if "status" in frame.columns:
                frame["status"] = frame["status"].astype(str).str.lower()
            setattr(self, name, frame)
        self.meta = dict(self.meta or {})

    def metric_by_task(self, override: dict[str, str] | None = None) -> dict[str, str]:
        """Task -> reported metric: ``override`` (``"*"``: every task) over the metric each task's runs were
        scored on (``runs.main_metric``), so a study task named ``cola-1k`` (CoLA at ``paper-1k``) reports MCC, not
        the accuracy that :func:`main_metric` falls back to for names it does not know."""
        override = dict(override or {})
        if "*" in override or self.runs is None or "main_metric" not in self.runs.columns:
            return override
        stored: dict[str, str] = {}
        for task, group in self.runs.dropna(subset=["main_metric"]).groupby("task", sort=False):
            names = {canonical_metric(x) for x in group["main_metric"]}
            if len(names) == 1:  # runs that disagree (edited study) leave the task to the defaults
                stored[task] = names.pop()
        return {**stored, **override}

    def to_dir(self, path: str | Path, *, subfolders: dict[str, ResultsFrames] | None = None) -> Path:
        """Write these results as an export folder (CSV per frame + meta.json; see :func:`write_frames`)."""
        return write_frames(self, path, subfolders=subfolders)

    @classmethod
    def from_dir(cls, path: str | Path) -> ResultsFrames:
        """Read an export folder (see :func:`read_frames`)."""
        return read_frames(path)


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
    check_task_names(raw[task_col], str(path), first_line=2)
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


# ------------------------------------------------------------------------------------------------
# Export folder: every frame as CSV + meta.json, so a report is regenerated without the study database
# ------------------------------------------------------------------------------------------------
#: ``format`` of an export's meta.json; ``format_version`` is raised when a reader of an older version could
#: misread a newer export (it then refuses it instead).
EXPORT_FORMAT = "stabletune-results-export"
EXPORT_VERSION = 2  # 2: the predictions table (an export without one is still written as version 1)
EXPORT_META = "meta.json"
#: The frames of :class:`ResultsFrames`, in the order they are written; each is ``<name>.csv``.
FRAME_NAMES = ("metrics", "train_loss", "evals", "param_distance", "runs", "predictions")
_INT_KINDS = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_FLOAT_KINDS = {"float32", "float64"}
_EXTENSION_KINDS = {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float32",
                    "Float64", "boolean", "string"}
#: pandas 3 parses floats exactly (correctly rounded) and deprecates `float_precision`; pandas 2's default parser
#: ("high") can be one ulp off, its "round_trip" is exact. The export's round-trip test checks it either way.
_EXACT_FLOATS: dict[str, str] = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def _column_kind(frame: pd.DataFrame, name: str, col: str) -> str:
    """How a column is written and read back: its dtype's name (``str``, or ``object`` for text in an object column).

    Raises:
        ValueError: a dtype a CSV cannot carry exactly (dates, categories, Python objects other than text).
    """
    dtype = frame[col].dtype
    kind = str(dtype)
    if kind in _INT_KINDS or kind in _FLOAT_KINDS or kind in _EXTENSION_KINDS or kind == "bool":
        return kind
    if kind == "str":  # text as pandas 3 infers it
        return kind
    if kind == "object":  # text in an object column (pandas 2; or only missing values, None, under pandas 3)
        values = frame[col].dropna()
        odd = values[~values.map(lambda v: isinstance(v, str))]
        if odd.empty:
            return "object"
        raise ValueError(f"{name} frame: column {col!r} holds {type(odd.iloc[0]).__name__} objects "
                         f"(e.g. {odd.iloc[0]!r}); only numbers and text can be exported")
    raise ValueError(f"{name} frame: column {col!r} has dtype {kind}, which the export cannot carry exactly")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):  # a numpy scalar that slipped into meta (np.int64 counts, say)
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def is_export_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder written by :func:`write_frames` (its meta.json says so)."""
    meta = Path(path) / EXPORT_META
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_export_dir(path: str | Path) -> None:
    """Refuse an export target that would replace something else: a file, or a non-empty folder that is not an
    earlier export (an earlier export is replaced whole, as a rerun of a report replaces the report).

    Raises:
        UserError: what is there and why it is kept.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_export_dir(out):
        raise UserError(f"{out} is a folder that holds something other than a results export ({EXPORT_META} "
                        "missing or not an export's): not replacing it; choose another folder")


def write_frames(frames: ResultsFrames, path: str | Path, *,
                 subfolders: dict[str, ResultsFrames] | None = None) -> Path:
    """Write ``frames`` as an export folder: ``<frame>.csv`` per frame present and ``meta.json``.

    ``meta.json`` holds the format and its version, each file's column types (so that seeds read back as
    integers and NaN stays NaN) and ``frames.meta`` as it is (study config, versions, run counts, the source the
    report names). Floats are written by pandas' shortest round-trip representation and read back by an exact
    parser (see ``_EXACT_FLOATS``): every float64 (NaN, -0.0, subnormals, infinities included) is the same
    bits after a round trip. CSV, not Parquet, because exports are committed to git and reviewed as text.

    The folder is written beside its target and renamed into place: a failure leaves any earlier export whole,
    and an earlier export is replaced as a whole (no stale file of it stays).

    Args:
        frames: the results.
        path: the export folder.
        subfolders: more results written as exports in subfolders (``{"search": ...}``: a study's search phase).

    Returns:
        ``path``.

    Raises:
        UserError: ``path`` is a file or a folder that is not an earlier export (:func:`check_export_dir`).
        ValueError: a frame column or a meta value the export cannot carry exactly.
    """
    out = Path(path)
    check_export_dir(out)
    for name in subfolders or {}:
        if not name or Path(name).name != name or name.startswith(".") or name.endswith(".csv") or name == EXPORT_META:
            raise ValueError(f"invalid export subfolder name {name!r}")
    with staged_folder(out) as stage:  # an earlier export (or an empty folder) is replaced whole
        _write_export(frames, stage)
        for name, sub in (subfolders or {}).items():
            _write_export(sub, stage / name)
    return out


def _write_export(frames: ResultsFrames, folder: Path) -> None:
    folder.mkdir(parents=True)
    tables: dict[str, Any] = {}
    for name in FRAME_NAMES:
        frame = getattr(frames, name)
        if frame is None:
            continue
        cols = [str(c) for c in frame.columns]
        if len(set(cols)) != len(cols):
            raise ValueError(f"{name} frame: duplicate column names {cols}")
        dtypes = {str(c): _column_kind(frame, name, c) for c in frame.columns}
        file = f"{name}.csv"
        # na_rep "" (NaN and None), floats as numpy's shortest repr that reads back to the same bits
        frame.to_csv(folder / file, index=False, lineterminator="\n")
        tables[name] = {"file": file, "rows": len(frame), "columns": dtypes}
    version = EXPORT_VERSION if "predictions" in tables else 1  # readers of version 1 read it whole
    doc = {"format": EXPORT_FORMAT, "format_version": version, "tables": tables, "meta": frames.meta}
    try:
        text = json.dumps(doc, indent=2, ensure_ascii=False, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"results meta cannot be exported as JSON: {exc}") from None
    (folder / EXPORT_META).write_text(text + "\n", encoding="utf-8")


def read_frames(path: str | Path) -> ResultsFrames:
    """Read an export folder written by :func:`write_frames` (the same frames, dtypes and meta).

    Raises:
        DataError: a missing folder or file, a meta.json that is not an export's (or of a newer format version),
            a CSV whose columns or values do not match meta.json; each message names the file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"export folder not found: {folder}")
    meta_path = folder / EXPORT_META
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: not found: {folder} is not a results export "
                        "(written by `stabletune study export --format tables`)")
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{meta_path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise DataError(f"{meta_path}: not a results export's meta.json (no \"format\": \"{EXPORT_FORMAT}\")")
    version = doc.get("format_version")
    if not isinstance(version, int) or version < 1 or version > EXPORT_VERSION:
        raise DataError(f"{meta_path}: export format version {version!r}; this stabletune reads versions 1 to "
                        f"{EXPORT_VERSION} (a newer stabletune wrote it?)")
    tables, meta = doc.get("tables"), doc.get("meta")
    if not isinstance(tables, dict) or not isinstance(meta, dict) or "metrics" not in tables:
        raise DataError(f"{meta_path}: malformed: needs \"tables\" (with \"metrics\") and \"meta\" objects")
    unknown = sorted(set(tables) - set(FRAME_NAMES))
    if unknown:
        raise DataError(f"{meta_path}: unknown table(s) {unknown}; known: {list(FRAME_NAMES)}")
    frames: dict[str, pd.DataFrame] = {}
    for name, spec in tables.items():
        frames[name] = _read_table(folder, meta_path, name, spec)
    try:
        return ResultsFrames(**frames, meta=meta)
    except DataError as exc:
        raise DataError(f"{folder}: {exc}") from None


def _read_table(folder: Path, meta_path: Path, name: str, spec: Any) -> pd.DataFrame:
    if not (isinstance(spec, dict) and isinstance(spec.get("file"), str) and isinstance(spec.get("columns"), dict)):
        raise DataError(f"{meta_path}: malformed entry for table {name!r}")
    file = folder / spec["file"]
    if Path(spec["file"]).name != spec["file"] or not file.is_file():
        raise DataError(f"{file}: not found (listed in {meta_path})")
    kinds: dict[str, str] = spec["columns"]
    bad = {c: k for c, k in kinds.items()
           if k not in _INT_KINDS | _FLOAT_KINDS | _EXTENSION_KINDS | {"bool", "str", "object"}}
    if bad:
        raise DataError(f"{meta_path}: table {name!r}: unknown column type(s) {bad}")
    dtype = {c: (str if k == "str" else object if k == "object" else k) for c, k in kinds.items()}
    try:  # only an empty field is missing: a method or task called "NA" or "null" stays text
        df = pd.read_csv(file, dtype=dtype, keep_default_na=False, na_values=[""], **_EXACT_FLOATS)
    except (ValueError, TypeError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read as the export's {name} table: {str(exc).splitlines()[0]}") from None
    if [str(c) for c in df.columns] != list(kinds):
        raise DataError(f"{file}: columns {list(map(str, df.columns))} differ from {meta_path}'s {list(kinds)}")
    if isinstance(spec.get("rows"), int) and spec["rows"] != len(df):
        raise DataError(f"{file}: {len(df)} rows, {meta_path} says {spec['rows']} (truncated or edited?)")
    return df


def name_study_source(frames: ResultsFrames, study_file: str | Path) -> ResultsFrames:
    """Name where the results came from as a report shows them, the same on every machine: ``meta["source"]``
    (the database) relative to the study file's folder and ``meta["study_file"]`` (the file's name), never an
    absolute path of this machine. An export keeps both, so that a report regenerated from it says the same.

    Returns:
        ``frames`` (changed in place).
    """
    study = Path(study_file)
    source = frames.meta.get("source")
    if source:
        frames.meta["source"] = os.path.relpath(Path(source).resolve(), study.resolve().parent)
    frames.meta["study_file"] = study.name
    return frames

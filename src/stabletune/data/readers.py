"""Reading GLUE and user datasets into :class:`Example` lists.

:func:`load_task_data` reads a GLUE task from the TSV files of the GLUE download
(``<data_dir>/<TASK>/train.tsv`` and ``dev.tsv``), from the Hugging Face hub when no folder is given, or a user
dataset from CSV/TSV/JSONL files. Every problem a user can cause raises :class:`~stabletune.errors.DataError`
naming the file and line. The paper's splits of what is read here live in :mod:`stabletune.data.splits`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from stabletune.config import DATA_DIR_ENV
from stabletune.errors import DataError, InvalidValue
from stabletune.tasks import TaskSpec, get_task

logger = logging.getLogger(__name__)

PARTIAL_TRAIN = "partial/train_subset_9999.tsv"
"""Fallback training file of a task whose full ``train.tsv`` is missing (see the data's PROVENANCE.md)."""
SMALL_DEV = 20
"""A dev set with fewer examples draws a warning: halved by ``paper-small``, it gives fewer than 10 validation and
10 test examples, too few for a score that means anything (RTE, the smallest paper task, has 277)."""
MISSING_LABELS = frozenset({"nan", "-nan", "na", "n/a", "#n/a", "<na>", "null"})
"""Label strings that spreadsheets, pandas and R write for a missing value (compared lower-case): a missing label
is not a class, so a row holding one is refused rather than read as a class named ``NaN``."""


@dataclass
class Example:
    """One labelled example.

    Attributes:
        text_a: First (or only) text.
        text_b: Second text of a sentence-pair task, else ``None``.
        label: Class index into ``TaskSpec.labels``, or the score of a regression task.
    """

    text_a: str
    text_b: str | None
    label: int | float


# ------------------------------------------------------------------------------------------------
# GLUE TSV files
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _GlueFormat:
    """Column layout of one GLUE task's TSV files (as read by the ``transformers`` GLUE processors)."""

    text_a: int
    text_b: int | None
    label: int
    columns: tuple[int, ...]  # accepted numbers of tab-separated fields per row
    header: bool = True
    dev: str = "dev.tsv"


_GLUE_FORMATS: dict[str, _GlueFormat] = {
    "rte": _GlueFormat(1, 2, 3, (4,)),
    "mrpc": _GlueFormat(3, 4, 0, (5,)),  # header starts with a UTF-8 BOM
    "sts-b": _GlueFormat(7, 8, 9, (10,)),
    "cola": _GlueFormat(3, None, 1, (4,), header=False),  # source, label, original label, sentence
    "sst-2": _GlueFormat(0, None, 1, (2,)),
    "qnli": _GlueFormat(1, 2, 3, (4,)),
    "qqp": _GlueFormat(3, 4, 5, (6,)),
    # train.tsv has 12 columns, dev_matched.tsv 16; sentence1/sentence2 are columns 8/9, gold_label is last.
    "mnli": _GlueFormat(8, 9, -1, (12, 16), dev="dev_matched.tsv"),
}


def glue_dev_file(spec: TaskSpec) -> str:
    """Name of the dev file of a GLUE task inside its folder (``dev.tsv``; MNLI ``dev_matched.tsv``)."""
    return _GLUE_FORMATS[spec.name].dev


def read_glue_tsv(path: str | os.PathLike, task: str | TaskSpec) -> tuple[list[Example], list[int]]:
    """Read one GLUE TSV file (train or dev) of a task.

    Fields are split on tabs with quoting off (``csv.QUOTE_NONE``): GLUE text contains unbalanced quotes.
    A UTF-8 BOM is dropped (MRPC). The first row is taken as a header when it has the expected number of
    columns and its label field is not a valid label, so CoLA (no header) and header-less copies of other
    tasks read correctly. Rows with the wrong number of fields (QQP has such rows) are skipped, counted and
    reported with a logged warning; blank lines are ignored.

    Args:
        path: The TSV file.
        task: GLUE task name or spec.

    Returns:
        ``(examples, skipped)``: the examples in file order, and the 1-based line numbers of skipped rows.

    Raises:
        DataError: The file is missing, empty, not UTF-8, has no well-formed row, or a row has a label
            that is not one of the task's labels (message names the file and line).
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    fmt = _GLUE_FORMATS[spec.name]
    path = Path(path)
    examples: list[Example] = []
    skipped: list[int] = []
    for line, row in _tsv_rows(path):
        if len(row) not in fmt.columns:
            skipped.append(line)
            continue
        raw = row[fmt.label]
        label = _glue_label(spec, raw)
        if label is None:
            if line == 1 and fmt.header:
                continue  # the header row
            expected = "a number" if spec.is_regression else ", ".join(spec.labels)
            raise DataError(f"{path}, line {line}: unknown label {raw!r} for task {spec.name} (expected {expected})")
        text_b = row[fmt.text_b] if fmt.text_b is not None else None
        examples.append(Example(row[fmt.text_a], text_b, label))
    if not examples and not skipped:
        raise DataError(f"{path}: empty file (no data rows)")
    if not examples:
        raise DataError(f"{path}: no row has the {_columns(fmt)} tab-separated fields of a {spec.name} file "
                        f"({len(skipped)} rows skipped): is it the right file?")
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        logger.warning("%s: skipped %d malformed row(s) without %s tab-separated fields (line %s)",
                       path, len(skipped), _columns(fmt), shown)
    return examples, skipped


def _columns(fmt: _GlueFormat) -> str:
    return " or ".join(map(str, fmt.columns))


def _glue_label(spec: TaskSpec, raw: str) -> int | float | None:
    """The label of a raw field, or None if it is not a valid label of the task."""
    raw = raw.strip()
    if spec.is_regression:
        return _as_float(raw)
    return spec.labels.index(raw) if raw in spec.labels else None


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` of a tab-separated file, quoting off, BOM dropped, blank lines skipped."""
    with _open(path) as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            for row in reader:
                if row:
                    yield reader.line_num, row
        except UnicodeDecodeError as e:
            raise DataError(f"{path}, line {reader.line_num + 1}: not UTF-8 text ({e.reason})") from None
        except csv.Error as e:
            raise DataError(f"{path}, line {reader.line_num}: {e}") from None


def _open(path: Path):
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None


def _load_glue_dir(spec: TaskSpec, root: Path) -> tuple[list[Example], list[Example]]:
    """Train and dev examples of a GLUE task from ``root/<TASK>/``; dev is ``[]`` when its file is missing."""
    if not root.is_dir():
        raise DataError(f"data directory not found: {root}")
    task_dir = root / spec.glue_dir
    if not task_dir.is_dir():  # tolerate "sts-b" or "rte" folder names
        matches = [d for d in root.iterdir() if d.is_dir() and d.name.lower() == spec.glue_dir.lower()]
        task_dir = matches[0] if matches else task_dir
    train_path = task_dir / "train.tsv"
    if not train_path.is_file():
        partial = task_dir / PARTIAL_TRAIN
        if not partial.is_file():
            raise DataError(f"training file not found: {train_path}")
        logger.warning("%s not found: training on %s, a PARTIAL subset of the GLUE training set "
                       "(the paper's exact 1k draws cannot be rebuilt from it)", train_path, partial)
        train_path = partial
    train, _ = read_glue_tsv(train_path, spec)
    dev_path = task_dir / glue_dev_file(spec)
    if dev_path.is_file():
        dev, _ = read_glue_tsv(dev_path, spec)
        _warn_small_dev(dev_path, len(dev))
    else:
        logger.warning("%s not found: task %s has no dev set; splits that test on it will fail", dev_path, spec.name)
        dev = []
    return train, dev


# ------------------------------------------------------------------------------------------------
# GLUE from the Hugging Face hub
# ------------------------------------------------------------------------------------------------
_HUB_COLUMNS = {
    "rte": ("sentence1", "sentence2"),
    "mrpc": ("sentence1", "sentence2"),
    "sts-b": ("sentence1", "sentence2"),
    "cola": ("sentence", None),
    "sst-2": ("sentence", None),
    "qnli": ("question", "sentence"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
}


def _load_from_hub(spec: TaskSpec) -> tuple[list[Example], list[Example]]:
    """Train and dev examples of a GLUE task via ``datasets.load_dataset("nyu-mll/glue", ...)``."""
    config = spec.name.replace("-", "")
    dev_split = "validation_matched" if spec.name == "mnli" else "validation"
    try:
        import datasets

        train = datasets.load_dataset("nyu-mll/glue", config, split="train")
        dev = datasets.load_dataset("nyu-mll/glue", config, split=dev_split)
    except Exception as e:  # ImportError, no network, hub errors: all mean "not available here"
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise DataError(f"could not load GLUE task {spec.name} from the Hugging Face hub ({reason}); "
                        f"use --data-dir DIR or set {DATA_DIR_ENV}") from None
    return _hub_examples(spec, train), _hub_examples(spec, dev)


def _hub_examples(spec: TaskSpec, ds: Any) -> list[Example]:
    """Convert a hub split to examples, mapping its label ids onto ``spec.labels`` by label name.

    The hub's MNLI order (entailment, neutral, contradiction) differs from the GLUE processors' order;
    binary tasks whose hub names are words (``not_equivalent``/``equivalent``) map id ``i`` to label ``"i"``.
    """
    col_a, col_b = _HUB_COLUMNS[spec.name]
    texts_b = ds[col_b] if col_b else [None] * len(ds[col_a])
    if spec.is_regression:
        labels = [float(v) for v in ds["label"]]
    else:
        names = list(ds.features["label"].names)
        by_name = set(names) <= set(spec.labels)
        mapping = {i: spec.labels.index(name if by_name else str(i)) for i, name in enumerate(names)}
        labels = [mapping[int(v)] for v in ds["label"]]
    return [Example(a, b, y) for a, b, y in zip(ds[col_a], texts_b, labels)]


# ------------------------------------------------------------------------------------------------
# User datasets (CSV / TSV / JSONL)
# ------------------------------------------------------------------------------------------------
_USER_FORMATS = (".csv", ".tsv", ".jsonl", ".json")


def _user_records(path: Path, columns: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(location, record)`` of a user file; location (``"line 3"``, ``"item 0"``) is for messages.

    CSV/TSV files need a header row naming ``columns`` and use standard CSV quoting. ``.jsonl``/``.json``
    files hold one JSON object per line, or (``.json``) one JSON array of objects.
    """
    suffix = path.suffix.lower()
    if suffix not in _USER_FORMATS:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use {', '.join(_USER_FORMATS)}")
    with _open(path) as f:
        try:
            if suffix in (".csv", ".tsv"):
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                if reader.fieldnames is None:
                    raise DataError(f"{path}: empty file (no header row)")
                repeated = sorted({c for c in reader.fieldnames if reader.fieldnames.count(c) > 1})
                if repeated:  # csv.DictReader would silently keep the LAST column of each repeated name
                    raise DataError(f"{path}, line 1: column name(s) {', '.join(map(repr, repeated))} appear more "
                                    "than once in the header; rename them so each column has its own name")
                for column in columns:
                    if column not in reader.fieldnames:
                        raise DataError(f"{path}: column {column!r} not found "
                                        f"(columns: {', '.join(reader.fieldnames)})")
                start = 2  # the line after the header
                for record in reader:
                    yield f"line {start}", record
                    start = reader.line_num + 1
                return
            text = f.read()
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
        except csv.Error as e:
            raise DataError(f"{path}: {e}") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {e.lineno}: invalid JSON ({e.msg})") from None
        located = [(f"item {i}", item) for i, item in enumerate(items)]
    else:
        located = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    located.append((f"line {number}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {number}: invalid JSON ({e.msg})") from None
    for where, item in located:
        if not isinstance(item, dict):
            raise DataError(f"{path}, {where}: expected a JSON object, got {type(item).__name__}")
        missing = [column for column in columns if column not in item]
        if missing:
            raise DataError(f"{path}, {where}: column {missing[0]!r} not found")
        yield where, item


def _text(value: Any, path: Path, where: str, column: str) -> str:
    """A field as a non-empty string (JSON numbers are converted), else DataError."""
    if isinstance(value, (dict, list)):
        raise DataError(f"{path}, {where}: column {column!r} holds a JSON {type(value).__name__}, not text")
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if not text.strip():
        raise DataError(f"{path}, {where}: empty value in column {column!r}")
    return text


def _warn_small_dev(path: Path, n: int) -> None:
    if 0 < n < SMALL_DEV:
        logger.warning("%s has only %d example(s): the validation and test sets drawn from it (split paper-small "
                       "halves it) are too small for a meaningful score", path, n)


def _read_user_file(path: Path, text_columns: list[str], label_column: str
                    ) -> list[tuple[str, str, str | None, str]]:
    """Rows of a user file as ``(location, text_a, text_b, label string)``; a missing label is refused."""
    rows = []
    for where, record in _user_records(path, [*text_columns, label_column]):
        texts = [_text(record[column], path, where, column) for column in text_columns]
        value = record[label_column]
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{path}, {where}: empty value in column {label_column!r} (a missing label is not a class)")
        label = _text(value, path, where, label_column).strip()
        if label.lower() in MISSING_LABELS:
            raise DataError(f"{path}, {where}: label {label!r} in column {label_column!r} marks a missing value "
                            "(a missing label is not a class)")
        rows.append((where, texts[0], texts[1] if len(texts) > 1 else None, label))
    if not rows:
        raise DataError(f"{path}: empty file (no data rows)")
    return rows


def _as_float(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _resolve_task_type(task_type: str, raw_labels: list[str]) -> bool:
    """True for regression. ``auto``: regression iff every label is a finite number and one is not an integer."""
    if task_type == "regression":
        return True
    if task_type == "classification":
        return False
    if task_type != "auto":
        raise InvalidValue("task_type", f"{task_type!r} (choose auto, classification, regression)")
    values = [_as_float(raw) for raw in raw_labels]
    return all(v is not None for v in values) and any(not v.is_integer() for v in values)


def _load_user_data(name: str, train_file: str, dev_file: str | None, text_columns: list[str] | None,
                    label_column: str, task_type: str) -> tuple[TaskSpec, list[Example], list[Example]]:
    if not text_columns or len(text_columns) > 2:
        raise InvalidValue("text_columns", f"give one or two column names, got {text_columns!r}")
    train_path = Path(train_file)
    train_rows = _read_user_file(train_path, text_columns, label_column)
    dev_path = Path(dev_file) if dev_file is not None else None
    dev_rows = _read_user_file(dev_path, text_columns, label_column) if dev_path is not None else []
    if dev_path is not None:
        _warn_small_dev(dev_path, len(dev_rows))

    regression = _resolve_task_type(task_type, [row[3] for row in train_rows])
    if regression:
        labels, convert, problem = None, _as_float, "is not a number (task type regression)"
    else:
        distinct = {row[3] for row in train_rows}
        numeric = all(_as_float(raw) is not None for raw in distinct)
        labels = tuple(sorted(distinct, key=lambda raw: (float(raw), raw) if numeric else (0.0, raw)))
        if len(labels) < 2:
            raise DataError(f"{train_path}: column {label_column!r} has a single label {labels[0]!r}; "
                            "classification needs at least two")
        convert = {label: i for i, label in enumerate(labels)}.get
        problem = f"does not occur in the training file {train_path.name}"

    def examples(path: Path | None, rows: list[tuple[str, str, str | None, str]]) -> list[Example]:
        out = []
        for where, text_a, text_b, raw in rows:
            label = convert(raw)
            if label is None:
                raise DataError(f"{path}, {where}: label {raw!r} {problem}")
            out.append(Example(text_a, text_b, label))
        return out

    spec = TaskSpec(name, labels, "spearman" if regression else "acc", None)
    return spec, examples(train_path, train_rows), examples(dev_path, dev_rows)


def read_user_examples(path: str | os.PathLike, spec: TaskSpec, *, text_columns: list[str],
                       label_column: str) -> list[Example]:
    """Examples of one more user file (a test file) labelled like the training file that made ``spec``.

    Raises:
        DataError: the file is missing, empty or malformed, lacks a column, or a label is not one of
            ``spec.labels`` (regression: not a number); the message names the file and line.
    """
    path = Path(path)
    if spec.is_regression:
        convert, problem = _as_float, "is not a number (task type regression)"
    else:
        convert = {label: i for i, label in enumerate(spec.labels)}.get
        problem = f"is not one of the training labels ({', '.join(spec.labels)})"
    out = []
    for where, text_a, text_b, raw in _read_user_file(path, text_columns, label_column):
        label = convert(raw)
        if label is None:
            raise DataError(f"{path}, {where}: label {raw!r} {problem}")
        out.append(Example(text_a, text_b, label))
    return out


def read_records(path: str | os.PathLike, columns: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every record of a CSV/TSV/JSONL/JSON file as ``(location, record)``, checking that ``columns`` exist.

    Raises:
        DataError: missing or malformed file, a missing column, or no data rows.
    """
    path = Path(path)
    records = list(_user_records(path, columns))
    if not records:
        raise DataError(f"{path}: empty file (no data rows)")
    return records


# ------------------------------------------------------------------------------------------------
# Public entry point
# ------------------------------------------------------------------------------------------------
def sentence_pairs(*, task: str | None, train_file: str | None = None,
                   text_columns: list[str] | None = None) -> bool:
    """Whether the examples of a task are text pairs (known before reading any file): a GLUE task's layout, or
    two ``text_columns`` of a user dataset."""
    if train_file is not None or task is None:
        return len(text_columns or []) == 2
    return _GLUE_FORMATS[get_task(task).name].text_b is not None


def load_task_data(*, task: str | None, data_dir: str | None, train_file: str | None = None,
                   dev_file: str | None = None, text_columns: list[str] | None = None,
                   label_column: str = "label", task_type: str = "auto"
                   ) -> tuple[TaskSpec, list[Example], list[Example]]:
    """Read a task's training and dev examples.

    GLUE task (``train_file`` is None): from ``<data_dir>/<TASK>/train.tsv`` and ``dev.tsv``
    (MNLI: ``dev_matched.tsv``). ``data_dir`` defaults to ``$STABLETUNE_DATA_DIR``; without either the
    task is loaded from the Hugging Face hub (``datasets``). A missing ``train.tsv`` falls back to
    ``partial/train_subset_9999.tsv`` with a warning. A missing dev file gives an empty dev list (QQP and
    MNLI in the shared data): :func:`make_splits` then refuses the splits that test on it.

    User dataset (``train_file`` given): CSV (header row), TSV (header row), JSONL or JSON files with
    ``text_columns`` (one or two) and ``label_column``. The task is named ``task`` or the training file's
    stem. With ``task_type="auto"`` it is a regression task when every training label is a finite number
    and at least one is not an integer (``0.5``, ``3.8``); integer-valued labels (``0/1``, ``1..5``) are
    classes. Class labels are the distinct training label strings, sorted (numerically when all are
    numbers). ``dev_file`` None gives an empty dev list.

    Args:
        task: GLUE task name (any spelling :func:`~stabletune.tasks.get_task` accepts) or a user dataset name.
        data_dir: Folder holding the GLUE task folders.
        train_file: User dataset: training file.
        dev_file: User dataset: dev file (split into validation/test like GLUE dev).
        text_columns: User dataset: one or two text column names.
        label_column: User dataset: label column name.
        task_type: User dataset: ``"auto"``, ``"classification"`` or ``"regression"``.

    Returns:
        ``(spec, train, dev)``.

    Raises:
        ConfigError: Unknown GLUE task.
        InvalidValue: Bad ``text_columns``/``task_type``, or neither a task nor a training file.
        DataError: Missing folder or file, unreadable or malformed file (message names file and line).
    """
    if train_file is not None:
        name = task if task else Path(train_file).stem
        return _load_user_data(name, train_file, dev_file, text_columns, label_column, task_type)
    if task is None:
        raise InvalidValue("task", "give a GLUE task, or a train_file and dev_file of your own data")
    spec = get_task(task)
    root = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    train, dev = _load_from_hub(spec) if root is None else _load_glue_dir(spec, Path(root))
    return spec, train, dev



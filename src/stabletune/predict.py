"""`stabletune predict`: apply a saved sequence classifier to a CSV/JSONL file.

Works on the folder ``stabletune fit`` writes, on a ``stabletune train --save-model`` run folder (or its
``model/``), and on any Hugging Face sequence-classification folder. Texts are tokenised as in training (the
model's ``config.json`` records its text columns and maximum length under ``stabletune``), sorted by length and
batched (no compute spent on padding), and written back in input order: every input column (an id column
included), then ``prediction`` (the label name, or a regression's score) and ``prob_<label>`` per class.
When the input has the label column, the predictions are also scored (the selecting metric and the others).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabletune.outputs import staged_file
from stabletune.errors import ConfigError, DataError, UserError

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 128
DEFAULT_BATCH_SIZE = 128
"""As ``RunConfig.eval_batch_size``: the same length-sorted batches as a run's evaluation, hence the same
numbers."""
OUTPUT_FORMATS = (".csv", ".tsv", ".jsonl", ".json")


@dataclass
class Classifier:
    """A loaded sequence classifier and what predict needs to know about it."""

    model: Any
    tokenizer: Any
    path: Path
    labels: tuple[str, ...] | None
    """Class names in index order (``config.id2label``); None for a regression (one output)."""
    meta: dict = field(default_factory=dict)
    """``config.stabletune``: text columns, label column, maximum length, task (empty for a foreign model)."""

    @property
    def is_regression(self) -> bool:
        return self.labels is None


@dataclass
class Prediction:
    """What :func:`predict_file` returns."""

    rows: int
    output: str | None
    labels: list | None
    """Predicted label names (regression: scores), in input order."""
    probabilities: list[list[float]] | None
    metrics: dict[str, float] | None = None
    metric: str | None = None
    majority_baseline: float | None = None


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """The folder holding ``config.json``: ``path`` itself, or ``path/model`` of a train run folder."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"model folder not found: {p}")
    if not p.is_dir():
        raise DataError(f"{p} is a file, not a model folder")
    if (p / "model" / "config.json").is_file():  # a train run folder (its own config.json is the run's)
        return p / "model"
    if not (p / "config.json").is_file():
        raise UserError(f"{p} is not a model folder (no config.json; a `stabletune train` run needs --save-model)")
    return p


def load_classifier(path: str | os.PathLike, *, device: str = "auto") -> Classifier:
    """Load a sequence-classification model and its tokenizer; UserError (one line) if it is not one."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from stabletune.engine.setup import resolve_device

    p = resolve_model_dir(path)
    try:
        config = AutoConfig.from_pretrained(p)
    except (OSError, ValueError) as e:
        raise UserError(f"{p}: unreadable model config ({str(e).splitlines()[0][:200]})") from None
    archs = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        what = ", ".join(archs) if archs else f"a {config.model_type} model without a task head"
        raise UserError(f"{p} holds {what}, not a sequence classifier (fine-tune one with stabletune fit or "
                        "stabletune train --save-model)")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(p)
        tokenizer = AutoTokenizer.from_pretrained(p)
    except (OSError, ValueError) as e:
        raise UserError(f"{p}: cannot load the model or its tokenizer ({str(e).splitlines()[0][:200]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    n = config.num_labels
    regression = getattr(config, "problem_type", None) == "regression" or n == 1
    labels = None if regression else tuple(str(config.id2label.get(i, f"LABEL_{i}")) for i in range(n))
    model.to(resolve_device(device)).eval()
    meta = getattr(config, "stabletune", None)
    return Classifier(model, tokenizer, p, labels, dict(meta) if isinstance(meta, dict) else {})


def _task_spec(clf: Classifier):
    """The TaskSpec the model was selected with (metric and positive class from its metadata)."""
    from stabletune.tasks import TaskSpec

    task = clf.meta.get("task") or {}
    metric = task.get("metric") or ("spearman" if clf.is_regression else "acc")
    positive = task.get("positive_label")
    try:
        return TaskSpec(str(task.get("name") or clf.path.name), clf.labels, metric, None,
                        positive if positive in (clf.labels or ()) else None)
    except ValueError:  # metadata of another shape: fall back to the plain defaults
        return TaskSpec(clf.path.name, clf.labels, "spearman" if clf.is_regression else "acc", None)


def predict_file(model_dir: str | os.PathLike, input_file: str | os.PathLike, output_file: str | os.PathLike | None,
                 *, text_columns: list[str] | str | None = None, label_column: str | None = None,
                 batch_size: int | None = None, max_seq_length: int | None = None, device: str = "auto",
                 threads: int | None = None, progress: bool = True) -> Prediction:
    """Predict every row of ``input_file`` and write ``output_file`` (CSV/TSV/JSONL by its suffix; None: only
    return and score).

    Args:
        model_dir: a fit output folder, a train run folder (``--save-model``) or any HF classifier folder.
        input_file: CSV (header row), TSV, JSONL or JSON array of objects.
        output_file: where to write the input's columns plus ``prediction`` and (classes) ``prob_<label>``.
        text_columns: one or two columns (default: the ones the model was trained on).
        label_column: gold labels to score against (default: the training label column, if the file has it).
        batch_size: examples per forward pass (length-sorted batches; default: the training evaluation's, 128).
        max_seq_length: truncation length (default: the training one, else 128).
        device, threads: where and how to run (``auto``: a GPU if there is one).

    Raises:
        UserError/DataError (one line): a folder that is not a classifier, missing columns, an empty file, a
            label the model does not know, an output name clash.
    """
    import numpy as np
    import torch

    from stabletune.data import read_records
    from stabletune.data.batching import collate, encode
    from stabletune.data.readers import Example, _text

    if batch_size is not None and batch_size <= 0:
        raise ConfigError(f"invalid option --batch-size: must be > 0, got {batch_size}")
    if threads:
        torch.set_num_threads(threads)
    out_path = Path(output_file) if output_file is not None else None
    if out_path is not None:
        from stabletune.outputs import check_out_file

        if out_path.suffix.lower() not in OUTPUT_FORMATS:
            raise ConfigError(f"invalid option --output: {out_path.name}: use a {', '.join(OUTPUT_FORMATS)} file")
        check_out_file(out_path, option="--output")
    if max_seq_length is not None:
        from stabletune.model import input_limits

        limit = input_limits(str(resolve_model_dir(model_dir))).max_length
        if max_seq_length <= 0 or (limit is not None and max_seq_length > limit):
            raise ConfigError(f"invalid option --max-seq-length: {max_seq_length} is not in 1..{limit} "
                              f"(the model's positions)")
    if not Path(input_file).is_file():  # before the model is loaded
        raise DataError(f"invalid option --input: {input_file} not found")
    clf = load_classifier(model_dir, device=device)
    if isinstance(text_columns, str):
        text_columns = [c.strip() for c in text_columns.split(",") if c.strip()]
    text_columns = list(text_columns or clf.meta.get("text_columns") or [])
    if not text_columns:
        raise ConfigError(f"give --text-columns: {clf.path} does not record which column(s) hold the text")
    if len(text_columns) > 2:
        raise ConfigError(f"invalid option --text-columns: one or two columns, got {len(text_columns)}")
    max_length = max_seq_length or clf.meta.get("max_seq_length") or DEFAULT_MAX_LENGTH
    batch_size = batch_size or clf.meta.get("eval_batch_size") or DEFAULT_BATCH_SIZE
    path = Path(input_file)
    records = read_records(path, text_columns + ([label_column] if label_column else []))
    if label_column is None:  # score against the training label column when the file has it
        trained = clf.meta.get("label_column")
        label_column = trained if trained and trained in records[0][1] else None

    # --- texts and (optional) gold labels -----------------------------------------------------------------
    examples, gold = [], []
    index = {name: i for i, name in enumerate(clf.labels or ())}
    for where, rec in records:
        texts = [_text(rec.get(c), path, where, c) for c in text_columns]
        examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, 0.0 if clf.is_regression else 0))
        if label_column is not None:
            raw = _text(rec.get(label_column), path, where, label_column).strip()
            if clf.is_regression:
                try:
                    value = float(raw)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise DataError(f"{path}, {where}: label {raw!r} in column {label_column!r} is not a number "
                                    "(the model is a regression)")
                gold.append(value)
            elif raw not in index:
                raise DataError(f"{path}, {where}: label {raw!r} in column {label_column!r} is not one the model "
                                f"knows ({', '.join(clf.labels)})")
            else:
                gold.append(index[raw])
    new_columns = ["prediction"] + ([] if clf.is_regression else [f"prob_{name}" for name in clf.labels])
    clash = [c for c in new_columns if c in records[0][1]]
    if clash and out_path is not None:
        raise DataError(f"{path}: the input already has a column {clash[0]!r}, which predict writes; rename it")

    # --- length-sorted batches, as a run's evaluation --------------------------------------------------------
    enc = encode(clf.tokenizer, examples, max_length=max_length, is_regression=clf.is_regression)
    if enc.num_truncated:
        log.info("%d of %d inputs truncated to %d tokens", enc.num_truncated, len(enc), max_length)
    order = np.argsort(-enc.lengths, kind="stable")
    pad_id = clf.tokenizer.pad_token_id if clf.tokenizer.pad_token_id is not None else 0
    device_ = next(clf.model.parameters()).device
    outputs = np.empty((len(enc), 1 if clf.is_regression else len(clf.labels)), dtype=np.float64)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(enc), desc="predict", unit="row", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            batch = {k: v.to(device_) for k, v in collate(enc, idx, pad_id=pad_id).items() if k != "labels"}
            logits = clf.model(**batch).logits.float()
            values = logits if clf.is_regression else torch.softmax(logits, dim=-1)
            outputs[idx] = values.cpu().numpy()
            bar.update(len(idx))
    bar.close()

    if clf.is_regression:
        scores = outputs[:, 0]
        predicted: list = [float(v) for v in scores]
        probabilities = None
        pred_for_metrics = scores
    else:
        pred_idx = outputs.argmax(axis=1)
        predicted = [clf.labels[i] for i in pred_idx]
        probabilities = outputs.tolist()
        pred_for_metrics = pred_idx

    result = Prediction(rows=len(records), output=str(out_path) if out_path else None, labels=predicted,
                        probabilities=probabilities)
    if label_column is not None:
        from stabletune.metrics import compute_metrics, majority_baseline

        spec = _task_spec(clf)
        result.metrics = compute_metrics(spec, pred_for_metrics, np.asarray(gold))
        result.metric = spec.metric
        result.majority_baseline = majority_baseline(spec, np.asarray(gold)) if not spec.is_regression else 0.0
    if out_path is not None:
        rows = []
        for i, (_, rec) in enumerate(records):
            row = dict(rec)
            row["prediction"] = predicted[i]  # a label name, or a regression's score
            for j, name in enumerate(clf.labels or ()):
                row[f"prob_{name}"] = outputs[i, j]
            rows.append(row)
        _write_rows(out_path, rows, [*records[0][1].keys(), *new_columns])
    return result


def _write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    """CSV/TSV (header = ``columns``) or JSONL/JSON, written to a temporary name and renamed (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    with staged_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            if suffix in (".csv", ".tsv"):
                writer = csv.DictWriter(f, fieldnames=columns, delimiter="\t" if suffix == ".tsv" else ",",
                                        extrasaction="ignore")
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: _plain(v) for k, v in row.items()})
            elif suffix == ".json":
                json.dump([{k: _plain(v) for k, v in row.items()} for row in rows], f, ensure_ascii=False)
                f.write("\n")
            else:
                for row in rows:
                    f.write(json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False) + "\n")


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v

"""The task registry: label sets, evaluation metrics, names and spellings of the eight GLUE tasks of the paper.

Zhang et al. (2021), Section 3 and Table 3 (Appendix A): RTE (accuracy), MRPC (F1), STS-B (Spearman
correlation, regression), CoLA (Matthews correlation), SST-2, QNLI, QQP and MNLI (accuracy; MNLI matched).
The label order of every task is the one of the GLUE processors in ``transformers`` (and therefore of the
paper's official ``run_glue.py``), so class indices mean the same thing as in the official code.

The one source of these facts: training (:mod:`stabletune.data`), studies and the analysis
(:mod:`stabletune.analysis.frames`) all read them here. Torch-free (the analysis must not import torch).

User datasets get a :class:`TaskSpec` built by :func:`stabletune.data.load_task_data`
(``glue_dir=None`` marks them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from stabletune.errors import ConfigError

#: The one rule for a name that becomes part of a file name (a study, a task, a method of a study file): a word of
#: letters, digits, '.', '_' or '-' that starts with a letter or digit -- no '/', no '..', no spaces.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAME_RULE = "a word of letters, digits, '.', '_' or '-'"

METRICS = ("acc", "f1", "spearman", "mcc", "f1_macro", "pearson")
CLASSIFICATION_METRICS = ("acc", "f1", "f1_macro", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")
METRIC_ALIASES = {"accuracy": "acc", "macro-f1": "f1_macro", "macro_f1": "f1_macro", "f1-macro": "f1_macro",
                  "matthews": "mcc", "matthews_correlation": "mcc", "spearmanr": "spearman", "pearsonr": "pearson"}
"""Other names of the metrics (``--metric``, results files of other tools) -> the short names used here."""


@dataclass(frozen=True)
class TaskSpec:
    """What the training loop needs to know about a task.

    Attributes:
        name: Canonical GLUE name (``"rte"``, ``"mrpc"``, ``"sts-b"``, ``"cola"``, ``"sst-2"``, ``"qnli"``,
            ``"qqp"``, ``"mnli"``) or the name of a user dataset.
        labels: Label names in class-index order; ``None`` for regression (one output).
        metric: Key of the main metric in :func:`stabletune.metrics.compute_metrics`'s result:
            ``"acc"``, ``"f1"``, ``"spearman"`` or ``"mcc"`` (Table 3, "Evaluation metric").
        glue_dir: Folder of the task in the GLUE download (``"RTE"``, ``"STS-B"``, ...); ``None`` for a
            user dataset.
        positive_label: The class whose F1 ``"f1"`` is; ``None``: label ``"1"`` of a GLUE task, else the
            second label of a binary task (``"1"`` of 0/1, ``"yes"`` of no/yes, ``"positive"`` of
            negative/positive: labels are sorted), and no ``"f1"`` for more than two classes.
    """

    name: str
    labels: tuple[str, ...] | None
    metric: str
    glue_dir: str | None = None
    positive_label: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose from {', '.join(METRICS)}")
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError(f"a classification task needs at least two labels, got {self.labels!r}")
        if self.positive_label is not None and (self.labels is None or self.positive_label not in self.labels):
            raise ValueError(f"positive label {self.positive_label!r} is not a label of task {self.name!r}")

    @property
    def positive_index(self) -> int | None:
        """Class index of the positive class of ``"f1"`` (see ``positive_label``); None if there is none."""
        if self.labels is None:
            return None
        if self.positive_label is not None:
            return self.labels.index(self.positive_label)
        if self.glue_dir is not None:
            return self.labels.index("1") if "1" in self.labels else None
        return 1 if len(self.labels) == 2 else None

    @property
    def display_name(self) -> str:
        """The paper's spelling (``"STS-B"``, ``"CoLA"``), which is the task's GLUE folder name; a user dataset's
        own name."""
        return self.glue_dir or self.name

    @property
    def is_regression(self) -> bool:
        """True when the task predicts one real-valued score (STS-B)."""
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Number of model outputs: the number of classes, or 1 for regression."""
        return 1 if self.labels is None else len(self.labels)


_BINARY = ("0", "1")
_ENTAILMENT = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, TaskSpec] = {
    "rte": TaskSpec("rte", _ENTAILMENT, "acc", "RTE"),
    "mrpc": TaskSpec("mrpc", _BINARY, "f1", "MRPC"),
    "sts-b": TaskSpec("sts-b", None, "spearman", "STS-B"),
    "cola": TaskSpec("cola", _BINARY, "mcc", "CoLA"),
    "sst-2": TaskSpec("sst-2", _BINARY, "acc", "SST-2"),
    "qnli": TaskSpec("qnli", _ENTAILMENT, "acc", "QNLI"),
    "qqp": TaskSpec("qqp", _BINARY, "acc", "QQP"),
    "mnli": TaskSpec("mnli", ("contradiction", "entailment", "neutral"), "acc", "MNLI"),
}
"""The eight GLUE tasks of the paper (Table 3), keyed by canonical name, in the paper's order."""

PAPER_MAJORITY_VAL: dict[str, float] = {
    "rte": 0.529, "mrpc": 0.813, "sts-b": 0.0, "cola": 0.0, "sst-2": 0.500, "qnli": 0.500, "qqp": 0.500, "mnli": 0.333,
}
"""Majority-class baseline of the paper's *validation* split, in the task's main metric (Table 3, val row). Used
only for results that carry no baseline of their own (imported without labels): it is the score on the official
code's draw; stabletune's own runs store the baseline of the labels they were scored on (``majority_baseline``)."""

PAPER_MAJORITY_TEST: dict[str, float] = {
    "rte": 0.525, "mrpc": 0.812, "sts-b": 0.0, "cola": 0.0, "sst-2": 0.491, "qnli": 0.505, "qqp": 0.632, "mnli": 0.318,
}
"""Majority-class baseline of the paper's *test* split, in the task's main metric (Table 3, test row); a fallback
as :data:`PAPER_MAJORITY_VAL`: the official code's draw gives test the larger half of each odd class (RTE 73/139),
stabletune's paper-small RTE test half has 73/138."""

SMALL_TASKS = ("rte", "mrpc", "sts-b", "cola")
"""Tasks with fewer than 10k training examples, studied with their full training set (Section 3)."""

LARGE_TASKS = ("sst-2", "qnli", "qqp", "mnli")
"""Tasks studied only in their 1k-downsampled version (Section 3)."""

# Spellings, compared without case, dashes, underscores and spaces: "STS-B", "stsb", "sts_b", "SST2" all match.
_ALIASES = {key.replace("-", ""): key for key in GLUE_TASKS}  # "stsb" -> "sts-b", "sst2" -> "sst-2"
_ALIASES.update({"sts": "sts-b", "sst": "sst-2", "mnlim": "mnli", "mnlimatched": "mnli"})


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "-_ ")


def canonical_name(name: str) -> str | None:
    """The canonical name of a GLUE task in any accepted spelling (``"STS-B"``, ``"stsb"``, ``"sts"`` ->
    ``"sts-b"``); None when ``name`` is not one of the eight."""
    return _ALIASES.get(_normalise(str(name)))


def is_glue_task(name: str) -> bool:
    """True if ``name`` (any spelling accepted by :func:`get_task`) names one of the eight GLUE tasks."""
    return canonical_name(name) is not None


def get_task(name: str) -> TaskSpec:
    """Look up a GLUE task by name.

    Matching ignores case, dashes, underscores and spaces, so ``"STS-B"``, ``"stsb"``, ``"sts_b"`` and
    ``"SST2"`` all work.

    Args:
        name: Task name.

    Returns:
        The task's :class:`TaskSpec`.

    Raises:
        ConfigError: ``name`` is not a GLUE task; the message lists the valid names.
    """
    key = canonical_name(name)
    if key is None:
        raise ConfigError(
            f"unknown task {name!r}: choose one of {', '.join(GLUE_TASKS)} "
            "(or give --train-file/--dev-file for your own data)"
        )
    return GLUE_TASKS[key]


def parse_metric(text: str) -> tuple[str, str | None]:
    """``(metric, positive label)`` of a metric name: ``acc``, ``f1``, ``f1:LABEL``, ``f1_macro``, ``mcc``,
    ``pearson``, ``spearman`` (``accuracy`` and ``macro-f1`` are accepted too). Raises ValueError."""
    name, sep, label = str(text).strip().partition(":")
    name = METRIC_ALIASES.get(name.lower(), name.lower())
    choices = "acc, f1, f1:LABEL, f1_macro, mcc, pearson, spearman"
    if name not in METRICS:
        raise ValueError(f"unknown metric {text!r}; choose {choices}")
    if label and name != "f1":
        raise ValueError(f"only f1 takes a positive class (f1:LABEL), got {text!r}")
    if sep and not label:
        raise ValueError(f"f1: needs a label after the colon, got {text!r}")
    return name, (label or None)


def with_metric(spec: TaskSpec, metric: str | None) -> TaskSpec:
    """``spec`` scored by ``metric`` (see :func:`parse_metric`; None keeps the task's own, Table 3).

    Raises:
        ValueError: an unknown metric, a classification metric for a regression task or the reverse, ``f1``
            without a positive class on more than two classes, or ``f1:LABEL`` with a label the task lacks.
    """
    if metric is None:
        return spec
    name, label = parse_metric(metric)
    if spec.is_regression and name not in REGRESSION_METRICS:
        raise ValueError(f"{metric!r} scores classes, but task {spec.name!r} is a regression task "
                         f"(use {' or '.join(REGRESSION_METRICS)})")
    if not spec.is_regression and name not in CLASSIFICATION_METRICS:
        raise ValueError(f"{metric!r} scores a regression, but task {spec.name!r} has classes "
                         f"(use {', '.join(CLASSIFICATION_METRICS)})")
    if label is not None and label not in spec.labels:
        raise ValueError(f"{label!r} is not a label of task {spec.name!r} (labels: {', '.join(spec.labels)})")
    spec = replace(spec, metric=name, positive_label=label if label is not None else spec.positive_label)
    if name == "f1" and spec.positive_index is None:
        raise ValueError(f"f1 of which class? task {spec.name!r} has {len(spec.labels)} labels "
                         f"({', '.join(spec.labels)}): use f1:LABEL or f1_macro")
    return spec

"""Evaluation metrics of the GLUE tasks (Zhang et al., 2021, Table 3), with NumPy and SciPy only.

The definitions follow scikit-learn and SciPy (the tests compare against ``sklearn.metrics`` and
``scipy.stats``), which is what ``transformers.glue_compute_metrics`` — used by the paper's official
``run_glue.py`` — computes:

- accuracy;
- binary F1 of the positive class (label ``"1"``) for MRPC and QQP, and ``acc_and_f1`` = their mean;
- Matthews correlation (MCC) for CoLA, 0 when it is undefined (constant predictions), as in scikit-learn;
- Pearson and Spearman correlation for STS-B, and ``corr`` = their mean. Undefined correlations
  (constant or non-finite predictions, e.g. a regression head that collapsed) are NaN, never 0 — the
  paper's Table 3 reports 0 for the *majority baseline* only, see :func:`majority_baseline`.

User datasets get accuracy, F1 of the positive class (binary tasks, or ``--metric f1:LABEL``), macro F1 and MCC
(classification) or Pearson/Spearman (regression); ``--metric`` picks the one that selects checkpoints.
This module does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from stabletune.tasks import TaskSpec

ArrayLike = Sequence[float] | np.ndarray


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predictions equal to the labels."""
    p, y = _pair(predictions, labels, int)
    return float(np.mean(p == y))


def f1_binary(predictions: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of class ``positive`` (``sklearn.metrics.f1_score(average="binary")``; 0 when undefined)."""
    p, y = _pair(predictions, labels, int)
    return _f1(p, y, positive)


def f1_macro(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Unweighted mean of the per-class F1 over the classes present in labels or predictions.

    Same as ``sklearn.metrics.f1_score(average="macro")`` with its default ``labels=None``.
    """
    p, y = _pair(predictions, labels, int)
    classes = np.union1d(p, y)
    return float(np.mean([_f1(p, y, c) for c in classes]))


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation coefficient, multi-class form of ``sklearn.metrics.matthews_corrcoef``.

    Returns 0.0 when it is undefined (all predictions or all labels in one class).
    """
    p, y = _pair(predictions, labels, int)
    classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
    k, n = len(classes), len(y)
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (inverse[:n], inverse[n:]), 1.0)
    t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n_samples = float(n)
    cov_ytyp = np.trace(confusion) * n_samples - t_sum @ p_sum
    cov_ypyp = n_samples**2 - p_sum @ p_sum
    cov_ytyt = n_samples**2 - t_sum @ t_sum
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp))


def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation (``scipy.stats.pearsonr``); NaN for constant or non-finite input."""
    p, y = _pair(predictions, labels, float)
    if _degenerate(p, y):
        return math.nan
    return float(stats.pearsonr(p, y).statistic)


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``); NaN for constant or non-finite input."""
    p, y = _pair(predictions, labels, float)
    if _degenerate(p, y):
        return math.nan
    return float(stats.spearmanr(p, y).statistic)


#: What a NaN score counts as wherever runs are compared or averaged: model selection (``study/tuning.py``), means
#: and t-tests, expected performance (``analysis/stats.py``). A NaN main metric is a failed run -- a constant
#: predictor, whose correlation is undefined -- so it counts as the worst score: 0, Table 3's score of a constant
#: predictor for correlations and MCC (no accuracy or F1 is below it). It is also counted as degenerate, and
#: every table says how many NaN scores it counted as 0.
NAN_SCORE = 0.0

#: Metrics that count examples (accuracy, F1): x 100 they are percentages. MCC and correlations lie in [-1, 1]:
#: x 100 they are points, not percent (MCC 0.45 is "45", never "45 %").
PROPORTION_METRICS = frozenset({"acc", "f1", "f1_macro", "acc_and_f1"})


def is_proportion(metric: str) -> bool:
    """Whether ``metric`` (``acc``, ``test_f1``, ``f1:yes``, ...) is a share of examples (see
    :data:`PROPORTION_METRICS`)."""
    name = metric.split("_", 1)[1] if metric.startswith(("test_", "val_", "eval_")) else metric
    return name.split(":", 1)[0] in PROPORTION_METRICS


def score_or_worst(value: float | None) -> float:
    """``value``, or :data:`NAN_SCORE` when it is missing or NaN (the one NaN rule, see :data:`NAN_SCORE`)."""
    return NAN_SCORE if value is None or math.isnan(value) else float(value)


def compute_metrics(spec: TaskSpec, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """All metrics of a task, as the paper's official code reports them.

    Args:
        spec: The task.
        predictions: Class indices (classification) or real scores (regression), one per example.
        labels: Gold class indices or scores, same length.

    Returns:
        Classification: ``acc`` always; MRPC/QQP add ``f1`` (positive class = label ``"1"``) and
        ``acc_and_f1``; CoLA adds ``mcc``; user datasets add ``f1`` (of ``spec.positive_index``, when there is
        one), ``f1_macro`` and ``mcc``; a GLUE task scored by another ``spec.metric`` adds that one.
        Regression: ``pearson``, ``spearman`` and ``corr`` (their mean; NaN if either is NaN).

    Raises:
        ValueError: Lengths differ or there are no examples.
    """
    if spec.is_regression:
        r, rho = pearson(predictions, labels), spearman(predictions, labels)
        return {"pearson": r, "spearman": rho, "corr": (r + rho) / 2}
    out = {"acc": accuracy(predictions, labels)}
    positive = spec.positive_index
    if spec.glue_dir is None:  # a user dataset: every classification metric --metric can select
        if positive is not None:
            out["f1"] = f1_binary(predictions, labels, positive=positive)
        out["f1_macro"] = f1_macro(predictions, labels)
        out["mcc"] = matthews_corrcoef(predictions, labels)
    elif spec.name in ("mrpc", "qqp") and positive is not None:
        out["f1"] = f1_binary(predictions, labels, positive=positive)
        out["acc_and_f1"] = (out["acc"] + out["f1"]) / 2
    if spec.metric == "mcc" and "mcc" not in out:
        out["mcc"] = matthews_corrcoef(predictions, labels)
    if spec.metric == "f1" and "f1" not in out:  # --metric f1 on a GLUE task other than MRPC/QQP
        out["f1"] = f1_binary(predictions, labels, positive=positive)
    if spec.metric == "f1_macro" and "f1_macro" not in out:
        out["f1_macro"] = f1_macro(predictions, labels)
    return out


def main_metric(spec: TaskSpec, metrics: dict[str, float]) -> float:
    """The task's main metric (Table 3) out of a :func:`compute_metrics` result."""
    try:
        return float(metrics[spec.metric])
    except KeyError:
        raise KeyError(f"metrics for task {spec.name!r} lack its main metric {spec.metric!r}: "
                       f"got {sorted(metrics)}") from None


def majority_baseline(spec: TaskSpec, labels: ArrayLike) -> float:
    """Main metric of always predicting the most frequent class of ``labels`` (Table 3, "Majority baseline").

    Correlations (STS-B) and MCC (CoLA) of a constant prediction are reported as 0, as in Table 3.
    Ties between classes go to the lowest class index.
    """
    if spec.is_regression or spec.metric in ("mcc", "spearman", "pearson"):
        return 0.0
    y = np.asarray(labels, dtype=np.int64)
    if y.size == 0:
        raise ValueError("majority baseline of an empty label list")
    majority = int(np.argmax(np.bincount(y)))
    return main_metric(spec, compute_metrics(spec, np.full_like(y, majority), y))


# ------------------------------------------------------------------------------------------------
def _pair(predictions: ArrayLike, labels: ArrayLike, kind: type) -> tuple[np.ndarray, np.ndarray]:
    dtype = np.int64 if kind is int else np.float64
    p = np.asarray(predictions, dtype=dtype).reshape(-1)
    y = np.asarray(labels, dtype=dtype).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} labels")
    if p.size == 0:
        raise ValueError("no predictions to score")
    return p, y


def _f1(p: np.ndarray, y: np.ndarray, positive: int) -> float:
    tp = float(np.sum((p == positive) & (y == positive)))
    fp = float(np.sum((p == positive) & (y != positive)))
    fn = float(np.sum((p != positive) & (y == positive)))
    denominator = 2 * tp + fp + fn
    return 0.0 if denominator == 0 else 2 * tp / denominator


def _degenerate(p: np.ndarray, y: np.ndarray) -> bool:
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
        return True
    return p.size < 2 or np.ptp(p) == 0 or np.ptp(y) == 0

"""Metrics against scikit-learn and SciPy (the references the paper's official code used)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from stabletune.metrics import (accuracy, compute_metrics, f1_binary, f1_macro, main_metric, majority_baseline,
                                matthews_corrcoef, pearson, spearman)
from stabletune.tasks import GLUE_TASKS, TaskSpec, get_task

USER_CLS = TaskSpec("reviews", ("bad", "good", "ok"), "acc")
USER_REG = TaskSpec("scores", None, "spearman")


def _random_cls(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))  # correlated with y
    return p, y


@pytest.mark.parametrize("seed, n, k", [(0, 50, 2), (1, 7, 2), (2, 300, 3), (3, 40, 5), (4, 1, 2)])
def test_classification_metrics_match_sklearn(seed, n, k):
    p, y = _random_cls(seed, n, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert accuracy(p, y) == pytest.approx(skm.accuracy_score(y, p))
        assert matthews_corrcoef(p, y) == pytest.approx(skm.matthews_corrcoef(y, p))
        assert f1_macro(p, y) == pytest.approx(skm.f1_score(y, p, average="macro"))
        if k == 2:
            assert f1_binary(p, y) == pytest.approx(skm.f1_score(y, p))
            assert f1_binary(p, y, positive=0) == pytest.approx(skm.f1_score(y, p, pos_label=0))


@pytest.mark.parametrize("seed, n", [(0, 20), (1, 500), (2, 3)])
def test_correlations_match_scipy(seed, n):
    rng = np.random.default_rng(seed)
    y = np.round(rng.uniform(0, 5, n), 1)  # ties, as STS-B scores have
    p = y + rng.normal(0, 1.5, n)
    assert pearson(p, y) == pytest.approx(stats.pearsonr(p, y).statistic)
    assert spearman(p, y) == pytest.approx(stats.spearmanr(p, y).statistic)
    tied = np.round(p)
    assert spearman(tied, y) == pytest.approx(stats.spearmanr(tied, y).statistic)


def test_degenerate_cases():
    y = np.array([0, 1, 1, 0, 1])
    constant = np.ones(5, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert matthews_corrcoef(constant, y) == skm.matthews_corrcoef(y, constant) == 0.0
        no_positive = np.zeros(5, dtype=int)
        assert f1_binary(no_positive, np.zeros(5, dtype=int)) == skm.f1_score(np.zeros(5), no_positive) == 0.0
    scores = np.array([0.5, 1.0, 3.2, 4.8, 2.0])
    out = compute_metrics(get_task("sts-b"), np.full(5, 2.5), scores)
    assert math.isnan(out["pearson"]) and math.isnan(out["spearman"]) and math.isnan(out["corr"])
    assert math.isnan(pearson(scores, np.full(5, 1.0)))  # constant labels
    assert math.isnan(spearman(np.array([1.0, np.nan, 2.0, 3.0, 4.0]), scores))  # a diverged model
    with pytest.raises(ValueError):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_compute_metrics_keys_per_task():
    p, y = _random_cls(5, 60, 2)
    keys = {name: set(compute_metrics(spec, *((p, y) if not spec.is_regression else (p + 0.1 * y, y * 1.0))))
            for name, spec in GLUE_TASKS.items() if name != "mnli"}
    assert keys["rte"] == keys["sst-2"] == keys["qnli"] == {"acc"}
    assert keys["mrpc"] == keys["qqp"] == {"acc", "f1", "acc_and_f1"}
    assert keys["cola"] == {"acc", "mcc"}
    assert keys["sts-b"] == {"pearson", "spearman", "corr"}
    p3, y3 = _random_cls(6, 90, 3)
    assert set(compute_metrics(get_task("mnli"), p3, y3)) == {"acc"}
    assert set(compute_metrics(USER_CLS, p3, y3)) == {"acc", "f1_macro", "mcc"}  # 3 classes: no positive one
    assert set(compute_metrics(USER_REG, p3 * 1.0, y3 * 1.0)) == {"pearson", "spearman", "corr"}


def test_compute_metrics_values():
    p, y = _random_cls(7, 80, 2)
    mrpc = compute_metrics(get_task("mrpc"), p, y)
    assert mrpc["f1"] == pytest.approx(skm.f1_score(y, p))  # positive class = label "1" = index 1
    assert mrpc["acc_and_f1"] == pytest.approx((skm.accuracy_score(y, p) + skm.f1_score(y, p)) / 2)
    assert compute_metrics(get_task("cola"), p, y)["mcc"] == pytest.approx(skm.matthews_corrcoef(y, p))
    p3, y3 = _random_cls(8, 90, 3)
    assert compute_metrics(USER_CLS, p3, y3)["f1_macro"] == pytest.approx(skm.f1_score(y3, p3, average="macro"))
    rng = np.random.default_rng(9)
    ys = rng.uniform(0, 5, 40)
    ps = ys + rng.normal(0, 1, 40)
    out = compute_metrics(get_task("sts-b"), ps, ys)
    assert out["corr"] == pytest.approx((stats.pearsonr(ps, ys).statistic + stats.spearmanr(ps, ys).statistic) / 2)
    # predictions may come as a (n, 1) array from a regression head
    assert compute_metrics(USER_REG, ps[:, None], ys)["spearman"] == pytest.approx(out["spearman"])


def test_main_metric():
    p, y = _random_cls(10, 50, 2)
    for name, spec in GLUE_TASKS.items():
        preds = p * 1.0 + 0.1 * y if spec.is_regression else p
        out = compute_metrics(spec, preds, y)
        assert main_metric(spec, out) == out[spec.metric]
    with pytest.raises(KeyError, match="spearman"):
        main_metric(get_task("sts-b"), {"acc": 1.0})


def test_majority_baseline():
    y = np.array([1] * 68 + [0] * 32)
    share = 0.68
    assert majority_baseline(get_task("rte"), y) == pytest.approx(share)
    assert majority_baseline(get_task("mrpc"), y) == pytest.approx(2 * share / (1 + share))  # F1 of all-"1"
    assert majority_baseline(get_task("mrpc"), 1 - y) == 0.0  # majority "0": F1 of the positive class is 0
    assert majority_baseline(get_task("cola"), y) == 0.0
    assert majority_baseline(get_task("sts-b"), [0.5, 1.5, 4.0]) == 0.0
    assert majority_baseline(get_task("mnli"), [2, 2, 0, 1, 2]) == pytest.approx(0.6)
    assert majority_baseline(get_task("qnli"), [0, 1]) == pytest.approx(0.5)  # tie -> lowest index


def test_selected_metrics_match_sklearn():
    """--metric on user data and on GLUE tasks: F1 of a named class, macro F1, MCC, Pearson (sklearn/scipy)."""
    from stabletune.tasks import TaskSpec, with_metric

    p, y = _random_cls(11, 70, 2)
    user = TaskSpec("mine", ("no", "yes"), "acc")
    out = compute_metrics(with_metric(user, "f1:no"), p, y)
    assert out["f1"] == pytest.approx(skm.f1_score(y, p, pos_label=0))
    out = compute_metrics(user, p, y)  # binary user data: F1 of the second label, macro F1 and MCC too
    assert out["f1"] == pytest.approx(skm.f1_score(y, p, pos_label=1))
    assert out["f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert out["mcc"] == pytest.approx(skm.matthews_corrcoef(y, p))
    rte = compute_metrics(with_metric(get_task("rte"), "f1_macro"), p, y)
    assert rte["f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    sst = compute_metrics(with_metric(get_task("sst-2"), "mcc"), p, y)
    assert sst["mcc"] == pytest.approx(skm.matthews_corrcoef(y, p))
    assert majority_baseline(with_metric(user, "mcc"), y) == 0.0
    majority = int(np.argmax(np.bincount(y)))
    assert majority_baseline(with_metric(user, "f1:no"), y) == pytest.approx(
        skm.f1_score(y, np.full_like(y, majority), pos_label=0))


def test_is_proportion_names_percentages_only():
    from stabletune.metrics import is_proportion

    assert all(is_proportion(m) for m in ("acc", "f1", "f1_macro", "acc_and_f1", "test_acc", "val_f1", "f1:yes"))
    assert not any(is_proportion(m) for m in ("mcc", "pearson", "spearman", "corr", "test_mcc", "test_spearmanr"))

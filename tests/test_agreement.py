"""Agreement between seeds, checked against hand computation, the closed-form Fleiss' kappa and an exact
enumeration of the permutation test."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from stabletune.analysis.agreement import (agreement_table, fleiss, lower_disagreement_test, mean_pairwise,
                                           pairwise_distances, prediction_matrix)
from stabletune.predcodec import encode_predictions


def fleiss_closed_form(P: np.ndarray) -> float:
    """Fleiss (1971): P_i = (sum_j n_ij^2 - n) / (n (n-1)), p_j = sum_i n_ij / (N n), kappa = (Pbar - Pe)/(1 - Pe)."""
    n, N = P.shape
    classes = np.unique(P)
    counts = np.array([[np.sum(P[:, i] == c) for c in classes] for i in range(N)], dtype=float)
    P_i = (np.sum(counts ** 2, axis=1) - n) / (n * (n - 1))
    p_j = counts.sum(axis=0) / (N * n)
    pe = np.sum(p_j ** 2)
    return (P_i.mean() - pe) / (1 - pe)


def test_pairwise_disagreement_by_hand():
    P = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]])
    D = pairwise_distances(P, "class")
    assert D[0, 1] == 0.25 and D[0, 2] == 0.75 and D[1, 2] == 0.5 and np.all(np.diag(D) == 0)
    assert mean_pairwise(D) == pytest.approx((0.25 + 0.75 + 0.5) / 3)
    assert mean_pairwise(D, [0, 2]) == 0.75 and np.isnan(mean_pairwise(D, [1]))
    S = np.array([[1.0, 2.0], [2.0, 4.0]])
    assert pairwise_distances(S, "score")[0, 1] == pytest.approx(1.5)


def test_fleiss_matches_the_closed_form():
    rng = np.random.default_rng(3)
    for raters, classes in ((5, 2), (8, 3)):
        P = rng.integers(0, classes, size=(raters, 40))
        P[:, :20] = P[0, :20]  # some agreement beyond chance
        assert fleiss(P) == pytest.approx(fleiss_closed_form(P), abs=1e-12)
    assert fleiss(np.array([[0, 1, 0], [0, 1, 0]])) == pytest.approx(1.0)
    assert np.isnan(fleiss(np.zeros((4, 10), dtype=int)))  # every run predicts one class: 0/0


def test_permutation_test_equals_exact_enumeration():
    rng = np.random.default_rng(7)
    consensus = rng.integers(0, 2, size=60)
    P_a = np.array([np.where(rng.random(60) < 0.1, 1 - consensus, consensus) for _ in range(4)])
    P_b = np.array([np.where(rng.random(60) < 0.3, 1 - consensus, consensus) for _ in range(4)])
    res = lower_disagreement_test(P_a, P_b, "class")
    P = np.vstack([P_a, P_b])
    D = pairwise_distances(P, "class")
    observed = mean_pairwise(D, range(4)) - mean_pairwise(D, range(4, 8))
    assert res["diff"] == pytest.approx(observed) and observed < 0
    stats = []
    for a in itertools.combinations(range(8), 4):  # all 70 splits: scipy enumerates them when it can
        b = [i for i in range(8) if i not in a]
        stats.append(mean_pairwise(D, a) - mean_pairwise(D, b))
    exact = np.mean(np.array(stats) <= observed + 1e-12)
    assert res["p"] == pytest.approx(exact)
    assert res["p"] < 0.05
    assert lower_disagreement_test(P_b, P_a, "class")["p"] > 0.5  # the other direction
    assert np.isnan(lower_disagreement_test(P_a[:1], P_b, "class")["p"])


def test_agreement_table_groups_by_method_and_split():
    rows = []
    for method, preds in (("a", [[0, 1, 1], [0, 1, 1]]), ("b", [[0, 1, 1], [1, 0, 1]])):
        for seed, p in enumerate(preds):
            for ck in ("best", "last"):
                rows.append({"method": method, "task": "t", "seed": seed, "checkpoint": ck, "split": "test",
                             "split_seed": 0, "n": 3, "data": encode_predictions(np.array(p), regression=False)})
    table = agreement_table(pd.DataFrame(rows), checkpoint="best")
    got = table.set_index("method")
    assert got.loc["a", "disagreement"] == 0 and got.loc["a", "fleiss_kappa"] == pytest.approx(1.0)
    assert got.loc["b", "disagreement"] == pytest.approx(2 / 3)
    assert list(got["n_runs"]) == [2, 2] and set(got["kind"]) == {"class"}
    mixed = pd.DataFrame(rows[:2] + [{**rows[0], "seed": 5, "data": "f:AAAAAA=="}])
    with pytest.raises(ValueError, match="all predict classes or all scores"):
        prediction_matrix(mixed)

"""Instability beyond the standard deviation: do seeds that score alike predict the same examples?

Two runs can reach the same test accuracy while disagreeing on many examples (Du & Nguyen, "Measuring the
Instability of Fine-Tuning", ACL 2023). From the per-example test predictions a study stores per run
(:mod:`stabletune.predcodec`), per method and task:

* **pairwise disagreement**: over all pairs of runs, the mean fraction of test examples on which the two predict
  different classes (regression: the mean absolute difference of their predicted scores, in the label's units);
* **Fleiss' kappa** of the runs as raters of the test examples (``statsmodels.stats.inter_rater``; classification
  only): 1 = every seed predicts every example alike, 0 = agreement at chance level given the class frequencies;
* a **one-sided permutation test** that method A's runs disagree less than method B's: the statistic is the
  difference of mean pairwise disagreement, runs are exchanged between the two methods (``scipy.stats.
  permutation_test``, independent samples). A permutation test because the pairs of one method share runs, so
  the pairwise values are not independent observations and no t-test on them is valid.

Runs are compared only when they predicted the same test examples: the same task, split seed and test size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from stabletune.predcodec import decode_predictions

AGREEMENT_COLUMNS = ("method", "task", "split_seed", "checkpoint", "n_runs", "n_examples", "kind",
                     "disagreement", "fleiss_kappa")


def prediction_matrix(predictions: pd.DataFrame) -> tuple[np.ndarray, list[int], str]:
    """(runs x examples) predictions of one group of runs, their seeds, and their kind (``class`` | ``score``).

    Raises:
        ValueError: the runs did not predict the same number of examples, or mix classes and scores.
    """
    rows = predictions.sort_values("seed")
    arrays = [decode_predictions(text) for text in rows["data"]]
    kinds = {text[0] for text in rows["data"]}
    if len(kinds) != 1 or len({len(a) for a in arrays}) != 1:
        raise ValueError("runs of one group must all predict classes or all scores, on the same examples")
    return np.vstack(arrays), [int(s) for s in rows["seed"]], "class" if kinds.pop() == "c" else "score"


def pairwise_distances(P: np.ndarray, kind: str) -> np.ndarray:
    """(runs x runs): the fraction of examples two runs predict differently (``class``), or the mean absolute
    difference of their scores (``score``)."""
    if kind == "class":
        return (P[:, None, :] != P[None, :, :]).mean(axis=2)
    return np.abs(P[:, None, :] - P[None, :, :]).mean(axis=2)


def mean_pairwise(D: np.ndarray, idx: Any = None) -> float:
    """Mean of ``D`` over the unordered pairs of ``idx`` (all runs by default); NaN for fewer than 2 runs."""
    idx = np.arange(len(D)) if idx is None else np.asarray(idx, dtype=int)
    if len(idx) < 2:
        return float("nan")
    sub = D[np.ix_(idx, idx)]
    return float(sub[np.triu_indices(len(idx), k=1)].mean())


def fleiss(P: np.ndarray) -> float:
    """Fleiss' kappa of the runs (rows) as raters of the examples (columns); NaN when every run predicts one and
    the same class for every example (kappa is 0/0 there)."""
    table, _ = aggregate_raters(P.T.astype(int))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = fleiss_kappa(table, method="fleiss")
    return float(k) if np.isfinite(k) else float("nan")


def _groups(predictions: pd.DataFrame, checkpoint: str) -> Any:
    p = predictions[(predictions["checkpoint"] == checkpoint) & (predictions["split"] == "test")].copy()
    if "split_seed" not in p.columns:
        p["split_seed"] = 0
    return p.groupby(["method", "task", "split_seed", "n"], sort=False)


def agreement_table(predictions: pd.DataFrame, *, checkpoint: str = "best") -> pd.DataFrame:
    """Per method, task and split seed: runs, examples, mean pairwise disagreement and Fleiss' kappa."""
    rows = []
    for (method, task, split_seed, n), group in _groups(predictions, checkpoint):
        P, _, kind = prediction_matrix(group)
        D = pairwise_distances(P, kind)
        rows.append({"method": method, "task": task, "split_seed": int(split_seed), "checkpoint": checkpoint,
                     "n_runs": len(P), "n_examples": int(n), "kind": kind, "disagreement": mean_pairwise(D),
                     "fleiss_kappa": fleiss(P) if kind == "class" else float("nan")})
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))


def lower_disagreement_test(P_a: np.ndarray, P_b: np.ndarray, kind: str, *, n_resamples: int = 9999,
                            seed: int = 0) -> dict[str, float]:
    """One-sided permutation test of H1: runs of A disagree less with each other than runs of B.

    Returns:
        ``{"disagreement_a", "disagreement_b", "diff" (a - b), "p"}``; p is NaN when either side has < 2 runs.
        With at most ``n_resamples`` distinct splits scipy enumerates them all (an exact test).
    """
    P = np.vstack([P_a, P_b])
    D = pairwise_distances(P, kind)
    na = len(P_a)
    a_idx, b_idx = np.arange(na), np.arange(na, len(P))
    da, db = mean_pairwise(D, a_idx), mean_pairwise(D, b_idx)
    out = {"disagreement_a": da, "disagreement_b": db, "diff": da - db, "p": float("nan")}
    if len(a_idx) < 2 or len(b_idx) < 2:
        return out

    def statistic(a: np.ndarray, b: np.ndarray) -> float:
        return mean_pairwise(D, a) - mean_pairwise(D, b)

    res = stats.permutation_test((a_idx, b_idx), statistic, permutation_type="independent", vectorized=False,
                                 alternative="less", n_resamples=n_resamples, random_state=seed)
    out["p"] = float(res.pvalue)
    return out


__all__ = ["AGREEMENT_COLUMNS", "prediction_matrix", "pairwise_distances", "mean_pairwise", "fleiss",
           "agreement_table", "lower_disagreement_test"]

"""Statistics of multi-seed studies: the numbers behind the paper's tables and figures.

* :func:`summary_table` -- mean +- std over seeds and a one-tailed t-test against a baseline
  (Tables 1, 2, 4, 7; Section 4-6 use a one-tailed Student's t-test, p < 0.05); the tests themselves are in
  :mod:`stabletune.analysis.inference` (scipy / statsmodels).
* :func:`degenerate_runs` -- runs that do not beat the majority-class baseline of their own test labels
  (Section 4; Table 3's constants only for imported results without labels).
* :func:`expected_max_performance` -- expected test score of the model selected on validation among k random
  trials: the closed form of Dodge et al. (2019) for the curve, a bootstrap for its band (Figures 4 and 12).
* :func:`bias_correction_ratio` -- the Adam bias ratio of Figure 1.
* :func:`seed_grid_stats` -- controlled initialisation / data-order seeds (Appendix B, Figures 9 and 10).
* :func:`iteration_sweep` -- validation score against the number of training iterations (Figures 8, 14).

NaN scores follow one rule everywhere (:data:`stabletune.metrics.NAN_SCORE`): a NaN is a failed run (a constant
predictor) and counts as the worst score, 0, in means, t-tests and expected performance; it is counted as
degenerate, and every table reports how many NaN scores it counted.

Everything takes pandas/NumPy data; nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from stabletune.analysis.frames import (
    MAIN_METRIC,
    main_metric,
    main_values,
    method_order,
    run_key_columns,
    task_order,
)
from stabletune.analysis.inference import one_tailed_ttest, ttest_name
from stabletune.errors import UserError
from stabletune.metrics import NAN_SCORE, is_proportion
from stabletune.tasks import PAPER_MAJORITY_TEST, PAPER_MAJORITY_VAL

#: Training-set sizes of the tasks in Figure 1 (paper Table 3 / GLUE).
PAPER_TRAIN_SIZES: dict[str, int] = {"RTE": 2490, "MRPC": 3668, "STS-B": 5749, "CoLA": 8551, "MNLI": 392702}

def fill_nan(values: Any) -> np.ndarray:
    """A float array with every NaN replaced by :data:`~stabletune.metrics.NAN_SCORE` (the one NaN rule)."""
    x = np.asarray(values, dtype=float)
    return np.where(np.isnan(x), NAN_SCORE, x)


def fine_tuning_iterations(n_train: int, *, batch_size: int = 32, epochs: int = 3) -> int:
    """Number of updates of ``epochs`` passes with the last partial batch kept: ``ceil(n/batch) * epochs``."""
    return math.ceil(n_train / batch_size) * epochs


#: Iterations of the paper's recipe (batch 32, 3 epochs) -- the vertical lines of Figure 1.
PAPER_ITERATIONS: dict[str, int] = {k: fine_tuning_iterations(v) for k, v in PAPER_TRAIN_SIZES.items()}


# ------------------------------------------------------------------------------------------------
# summary table
# ------------------------------------------------------------------------------------------------
def default_baseline(methods: Sequence[str]) -> str:
    """``standard_debiased`` if present (debiased Adam, the paper's standard recipe), else the first method."""
    methods = list(methods)
    if not methods:
        raise UserError("no methods in the results")
    return "standard_debiased" if "standard_debiased" in methods else methods[0]


def percent_scale(values: Any) -> float:
    """100 when every finite value lies in [-1, 1] (fractions, shown as %), else 1 (already in %)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return 100.0 if v.size == 0 or np.all(np.abs(v) <= 1.0) else 1.0


def score_unit_label(metric: str | None, scale: float) -> str:
    """The unit of a score of ``metric`` multiplied by ``scale``: "%" for accuracy or F1 x 100, "× 100" for MCC or a
    correlation x 100 (:func:`stabletune.metrics.is_proportion`) or a metric not named, "" for a score left as it
    is."""
    if scale != 100.0:
        return ""
    return "%" if metric and is_proportion(metric) else "× 100"


def resolve_metric(metrics: pd.DataFrame, task: str, metric_by_task: dict[str, str] | None) -> str:
    """The metric reported for ``task`` (see :func:`~stabletune.analysis.frames.main_metric`), checked present."""
    present = metrics.loc[metrics["task"] == task, "metric"].unique()
    metric = main_metric(task, present, metric_by_task)
    if metric not in set(present):
        raise UserError(f"task {task}: metric {metric!r} not in the results (present: {sorted(present)}); "
                        f"choose one with --metric {task}=NAME")
    return metric


def summary_table(
    df: pd.DataFrame,
    *,
    metric_by_task: dict[str, str] | None = None,
    baseline: str | None = None,
    welch: bool = False,
    checkpoint: str = "last",
    split: str = "test",
    alpha: float = 0.05,
    percent: bool | None = None,
) -> pd.DataFrame:
    """Mean +- std (ddof=1) over seeds of each method x task, and a one-tailed t-test against ``baseline``.

    Paper Tables 1, 2, 4 and 7. NaN values (constant predictions: failed runs) count as the worst score,
    0 (:func:`fill_nan`), in mean, std and the t-test, and ``n_nan`` says how many there were: dropping them
    would flatter exactly the methods that collapse. ``tie_with_best`` marks, per task, the best mean and the
    methods not significantly worse than it (one-tailed test best > method, p >= alpha), as the paper highlights.

    Args:
        df: the metrics frame (see :class:`~stabletune.analysis.frames.ResultsFrames`).
        metric_by_task: task -> metric (``"*"`` for all tasks); default: the paper's main metric.
        baseline: the method every other is tested against; default :func:`default_baseline`.
        welch: Welch's t-test instead of Student's.
        checkpoint: ``"best"`` or ``"last"``.
        split: ``"test"`` or ``"val"``.
        alpha: significance level.
        percent: scale mean/std by 100; default: when all values are fractions.

    Returns:
        One row per (task, method): ``task, method, metric, checkpoint, split, n, n_nan, mean, std, scale,
        baseline, t, p, significant, tie_with_best, test``.
    """
    metrics = df
    sel = metrics[(metrics["checkpoint"] == checkpoint) & (metrics["split"] == split)]
    if sel.empty:
        raise UserError(f"no {split} results at checkpoint {checkpoint!r}")
    methods = method_order(sel)
    baseline = baseline or default_baseline(methods)
    if baseline not in set(metrics["method"]):
        raise UserError(f"unknown baseline method {baseline!r}; methods are: {', '.join(method_order(metrics))}")
    rows = []
    for task in task_order(sel["task"]):
        metric = resolve_metric(sel, task, metric_by_task)
        values = {m: main_values(sel, task=task, method=m, metric=metric, checkpoint=checkpoint, split=split)
                  for m in methods}
        values = {m: v for m, v in values.items() if len(v)}
        if percent is None:
            scale = percent_scale(np.concatenate([v.to_numpy() for v in values.values()]))
        else:
            scale = 100.0 if percent else 1.0
        n_nan = {m: int(v.isna().sum()) for m, v in values.items()}
        values = {m: fill_nan(v.to_numpy()) for m, v in values.items()}
        base = values.get(baseline)
        means = {m: float(x.mean()) for m, x in values.items() if len(x) >= 2}
        best = max(means, key=means.get) if means else None
        for method, x in values.items():
            t = p = float("nan")
            if base is not None and method != baseline:
                t, p = one_tailed_ttest(x, base, welch=welch)
            tie = ""
            if method == best:
                tie = "best"
            elif best is not None and method in means:
                _, p_best = one_tailed_ttest(values[best], x, welch=welch)
                tie = "tie" if not (p_best < alpha) else ""
            rows.append({
                "task": task, "method": method, "metric": metric, "checkpoint": checkpoint, "split": split,
                "n": int(len(x)), "n_nan": n_nan[method],
                "mean": float(x.mean() * scale) if x.size else float("nan"),
                "std": float(x.std(ddof=1) * scale) if x.size >= 2 else float("nan"),
                "scale": scale,
                "baseline": baseline if base is not None else None,
                "t": t, "p": p, "significant": bool(p < alpha) if not math.isnan(p) else False,
                "tie_with_best": tie, "test": ttest_name(welch),
            })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# degenerate runs
# ------------------------------------------------------------------------------------------------
def degenerate_runs(
    df: pd.DataFrame,
    *,
    metric_by_task: dict[str, str] | None = None,
    checkpoint: str = "last",
    split: str = "test",
    majority: dict[str, float] | None = None,
    baseline_col: str = "majority_baseline",
    tol: float = 0.0005,
) -> pd.DataFrame:
    """Count runs that fail to beat the majority-class baseline (paper Section 4, Table 3).

    A run is degenerate when its score is NaN (a constant predictor: correlation undefined) or does not beat
    its threshold. The threshold is, per run:

    1. the run's own majority baseline, column ``baseline_col`` of the frame: the score of always predicting
       the most frequent label of the split the run was scored on (every run stores it, computed from its
       labels; ``score <= baseline`` is degenerate). Table 3's constants are for the paper's draw: on
       stabletune's ``paper-small`` RTE test half the majority predictor scores 73/138 = 52.9 %, above Table 3's
       52.5 % (the official code's half has 139 examples);
    2. otherwise (imported results that carry no labels) ``majority`` (task -> fraction) if given, else the
       paper's Table 3 row for ``split``; Table 3 is rounded to 0.1 %, so ``tol`` (0.05 points) is added:
       ``score <= threshold + tol``.

    Thresholds and ``tol`` are fractions, multiplied by 100 when the scores are in percent; ``baseline_col``
    values are taken in the units of the scores.

    Returns:
        One row per (method, task): ``method, task, metric, n, n_constant, n_degenerate, share, threshold,
        threshold_max, threshold_source``; ``threshold`` is the lowest threshold of the cell and ``threshold_max``
        the highest (equal when every run was scored on the same labels); NaN when unknown, and then only
        constant predictors are counted.
    """
    table = majority if majority is not None else (PAPER_MAJORITY_TEST if split == "test" else PAPER_MAJORITY_VAL)
    constant_source = f"paper Table 3 ({split})" if majority is None else "given"
    sel = df[(df["checkpoint"] == checkpoint) & (df["split"] == split)]
    rows = []
    for task in task_order(sel["task"]):
        metric = resolve_metric(sel, task, metric_by_task)
        tsel = sel[(sel["task"] == task) & (sel["metric"] == metric)]
        unit = 1.0 if percent_scale(tsel["value"]) == 100.0 else 100.0  # scores in fractions or in %
        # Table 3 gives each task's majority baseline in the paper's metric only (CoLA: MCC 0): no threshold for others
        paper_metric = majority is not None or metric == MAIN_METRIC.get(task)
        constant = table[task] * unit if task in table and paper_metric else float("nan")
        for method in method_order(tsel):
            main_values(tsel, task=task, method=method, metric=metric, checkpoint=checkpoint, split=split)  # 1 per run
            msel = tsel[tsel["method"] == method]
            x = msel["value"].to_numpy(dtype=float)
            own = (msel[baseline_col].to_numpy(dtype=float) if baseline_col in msel.columns
                   else np.full(len(x), np.nan))
            has_own = ~np.isnan(own)
            threshold = np.where(has_own, own, constant + tol * unit)  # exact baselines need no rounding slack
            const = np.isnan(x)
            with np.errstate(invalid="ignore"):
                below = ~const & (x <= threshold)  # unknown threshold (NaN): never below
            deg = const | below
            sources = ([f"run's own {split} labels"] if has_own.any() else []) + \
                      ([constant_source] if (~has_own).any() and not math.isnan(constant) else []) + \
                      (["unknown"] if (~has_own).any() and math.isnan(constant) else [])
            shown = np.where(has_own, own, constant)
            finite = shown[~np.isnan(shown)]
            rows.append({
                "method": method, "task": task, "metric": metric, "n": int(len(x)),
                "n_constant": int(const.sum()), "n_degenerate": int(deg.sum()),
                "share": float(deg.mean()) if len(x) else float("nan"),
                "threshold": float(finite.min()) if finite.size else float("nan"),
                "threshold_max": float(finite.max()) if finite.size else float("nan"),
                "threshold_source": " + ".join(sources),
            })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# expected performance vs number of random trials
# ------------------------------------------------------------------------------------------------
def expected_max_performance(
    val: Sequence[float] | None,
    test: Sequence[float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    k_max: int | None = None,
) -> pd.DataFrame:
    """Expected test score of the best-on-validation run among k random trials (Figures 4, 12; Dodge et al.).

    ``mean`` / ``val_mean`` are exact: the closed form of Dodge et al. (2019, "Show your work") for k draws with
    replacement from the n runs. Sort the distinct validation scores v_1 < ... < v_m, let c_j be the number of
    runs scoring at most v_j; the best validation score of k draws is v_j with probability
    ``(c_j / n)^k - (c_{j-1} / n)^k``, and the selected run is then uniform over the runs tied at v_j (the first
    of them drawn), so ``E[test] = sum_j P_j * mean(test | val = v_j)``. With ``val=None`` the selection is by
    test score: the expected *maximum* test score (an optimistic oracle without held-out model selection).

    ``std`` / ``val_std`` (the band of the figures) are the spread of the selected run's score over ``n_boot``
    simulated selections (``numpy.random.default_rng(seed)``), as the paper draws them (Section 4: 1,000 times).

    NaN scores count as the worst score, 0 (:func:`fill_nan`): a collapsed run stays in the pool of trials.

    Args:
        val: validation score per run, aligned with ``test``; None to select by test.
        test: test score per run.
        n_boot: simulations per k for the band (paper: 1,000).
        seed: seed of the generator.
        k_max: largest k (default: the number of runs).

    Returns:
        ``DataFrame(k, mean, std, val_mean, val_std)``; std over the simulations (ddof=0).
    """
    t = fill_nan(test)
    v = t.copy() if val is None else fill_nan(val)
    if v.shape != t.shape:
        raise ValueError(f"val and test must have the same length, got {v.shape} and {t.shape}")
    n = len(t)
    if n == 0:
        return pd.DataFrame(columns=["k", "mean", "std", "val_mean", "val_std"])
    # closed form: groups of runs tied on validation, in increasing order
    levels, group = np.unique(v, return_inverse=True)
    counts = np.bincount(group)
    cum = np.cumsum(counts) / n
    test_by_level = np.bincount(group, weights=t) / counts
    rng = np.random.default_rng(seed)
    rows = []
    rows_idx = np.arange(n_boot)
    for k in range(1, (k_max or n) + 1):
        p = cum**k - np.concatenate([[0.0], cum[:-1]]) ** k
        idx = rng.integers(0, n, size=(n_boot, k))
        chosen = idx[rows_idx, np.argmax(v[idx], axis=1)]
        rows.append({"k": k, "mean": float(p @ test_by_level), "std": float(t[chosen].std()),
                     "val_mean": float(p @ levels), "val_std": float(v[chosen].std())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Figure 1
# ------------------------------------------------------------------------------------------------
def bias_correction_ratio(t: Any, beta1: float = 0.9, beta2: float = 0.999) -> np.ndarray:
    """Ratio of the biased to the bias-corrected Adam update, ``(1 - beta1^t) / sqrt(1 - beta2^t)`` (Figure 1).

    Above 1 early in training (BERTAdam over-estimates the update), tends to 1 as t grows.
    """
    t = np.asarray(t, dtype=float)
    if np.any(t < 1):
        raise ValueError("the step t starts at 1")
    return (1.0 - beta1**t) / np.sqrt(1.0 - beta2**t)


# ------------------------------------------------------------------------------------------------
# controlled seeds (Appendix B)
# ------------------------------------------------------------------------------------------------
@dataclass
class SeedGrid:
    """Validation score over init seed x data seed, with the margins of Figures 9 and 10.

    Attributes:
        grid: rows init seeds, columns data seeds (mean when a cell has several values).
        by_init: per init seed (data seed varies): ``min, mean, max, std``.
        by_data: per data seed (init seed varies): ``min, mean, max, std``.
        std_fixed_init: mean over init seeds of the std across data seeds (randomness of data order/dropout).
        std_fixed_data: mean over data seeds of the std across init seeds (randomness of the initialisation).
        std_all: std over all cells.
    """

    grid: pd.DataFrame
    by_init: pd.DataFrame
    by_data: pd.DataFrame
    std_fixed_init: float
    std_fixed_data: float
    std_all: float


def seed_grid_stats(
    df: pd.DataFrame, *, value_col: str = "value", init_col: str = "init_seed", data_col: str = "data_seed"
) -> SeedGrid:
    """Grid and margins of scores over initialisation seed x data-order seed (paper Figures 9 and 10).

    Args:
        df: one row per run (one method, one task) with ``init_col``, ``data_col`` and ``value_col``.
    """
    for c in (value_col, init_col, data_col):
        if c not in df.columns:
            raise UserError(f"seed grid: missing column {c!r}")
    grid = df.pivot_table(index=init_col, columns=data_col, values=value_col, aggfunc="mean", dropna=False)
    grid = grid.sort_index().sort_index(axis=1)

    def margins(g: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"min": g.min(axis=1), "mean": g.mean(axis=1), "max": g.max(axis=1),
                             "std": g.std(axis=1, ddof=1)})

    by_init, by_data = margins(grid), margins(grid.T)
    return SeedGrid(
        grid=grid, by_init=by_init, by_data=by_data,
        std_fixed_init=float(by_init["std"].mean()), std_fixed_data=float(by_data["std"].mean()),
        std_all=float(np.nanstd(grid.to_numpy(), ddof=1)),
    )


# ------------------------------------------------------------------------------------------------
# iteration sweeps (Figures 8, 14)
# ------------------------------------------------------------------------------------------------
_ITERS_IN_NAME = re.compile(
    r"^(?P<head>.*?)(?:^|[-_ ])(?:iterations|iters|iter|steps|step)[-_ =]?(?P<n>\d+)(?P<tail>.*)$", re.IGNORECASE)


def parse_iterations(method: str) -> tuple[str, int] | None:
    """``"reinit-iters-400"`` -> ``("reinit", 400)``; ``"iters-200"`` -> ``("all", 200)``; else None."""
    m = _ITERS_IN_NAME.match(str(method))
    if not m:
        return None
    group = (m.group("head") + m.group("tail")).strip("-_ ") or "all"
    return group, int(m.group("n"))


def iteration_sweep(
    metrics: pd.DataFrame,
    *,
    metric_by_task: dict[str, str] | None = None,
    checkpoint: str | None = None,
) -> tuple[pd.DataFrame, str, str] | None:
    """Score against number of training iterations when the study is an iteration sweep (Figures 8, 14).

    A sweep is shown by a ``max_steps`` column with several values within a (task, method), or by method names
    carrying an iteration count (``iters-200``, ``reinit_steps400``). Uses the validation split when present, else test,
    and the ``checkpoint`` given, else ``last`` when present, else ``best``.

    Returns:
        ``(frame(task, group, iterations, <run key>, value), split, checkpoint)`` or None when no sweep is found.
    """
    split = "val" if (metrics["split"] == "val").any() else "test"
    sel = metrics[metrics["split"] == split]
    checkpoint = checkpoint or ("last" if (sel["checkpoint"] == "last").any() else "best")
    sel = sel[sel["checkpoint"] == checkpoint]
    if sel.empty:
        return None
    # max_steps differs between tasks in any study (3 epochs of each dataset); a sweep varies it within a method
    if "max_steps" in sel.columns and sel.groupby(["task", "method"])["max_steps"].nunique().max() > 1:
        sel = sel[sel["max_steps"].notna()]
        sel = sel.assign(group=sel["method"], iterations=sel["max_steps"].astype(int))
    else:
        parsed = {m: parse_iterations(m) for m in sel["method"].unique()}
        if sum(p is not None for p in parsed.values()) < 2:
            return None
        sel = sel[sel["method"].map(lambda m: parsed[m] is not None)]
        sel = sel.assign(group=sel["method"].map(lambda m: parsed[m][0]),
                         iterations=sel["method"].map(lambda m: parsed[m][1]))
    if sel.groupby("group")["iterations"].nunique().max() < 2:
        return None
    keys = run_key_columns(sel)
    parts = []
    for task in task_order(sel["task"]):
        metric = resolve_metric(sel, task, metric_by_task)
        part = sel[(sel["task"] == task) & (sel["metric"] == metric)]
        parts.append(part[["task", "metric", "group", "iterations", *keys, "value"]])
    out = pd.concat(parts, ignore_index=True)
    return out, split, checkpoint

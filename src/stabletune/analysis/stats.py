"""Statistics of multi-seed studies: the numbers behind the paper's tables and figures.

* :func:`summary_table` -- mean +- std over seeds and a one-tailed t-test against a baseline
  (Tables 1, 2, 4, 7; Section 4-6 use a one-tailed Student's t-test, p < 0.05).
* :func:`degenerate_runs` -- runs that do not beat the majority-class baseline (Section 4, Table 3).
* :func:`expected_max_performance` -- expected test score of the model selected on validation among k random
  trials, by bootstrap (Figures 4 and 12, following Dodge et al., 2020).
* :func:`bias_correction_ratio` -- the Adam bias ratio of Figure 1.
* :func:`seed_grid_stats` -- controlled initialisation / data-order seeds (Appendix B, Figures 9 and 10).
* :func:`iteration_sweep` -- validation score against the number of training iterations (Figures 8, 14).

Everything takes pandas/NumPy data; nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from stabletune.analysis.frames import (
    main_metric,
    main_values,
    method_order,
    run_key_columns,
    task_order,
)
from stabletune.errors import UserError
from stabletune.tasks import PAPER_MAJORITY_TEST, PAPER_MAJORITY_VAL

#: Training-set sizes of the tasks in Figure 1 (paper Table 3 / GLUE).
PAPER_TRAIN_SIZES: dict[str, int] = {"RTE": 2490, "MRPC": 3668, "STS-B": 5749, "CoLA": 8551, "MNLI": 392702}

#: Correlation-type metrics: NaN means the model predicted a constant (no correlation defined).
CORRELATION_METRICS = frozenset({"spearman", "pearson", "corr", "mcc"})


def fine_tuning_iterations(n_train: int, *, batch_size: int = 32, epochs: int = 3) -> int:
    """Number of updates of ``epochs`` passes with the last partial batch kept: ``ceil(n/batch) * epochs``."""
    return math.ceil(n_train / batch_size) * epochs


#: Iterations of the paper's recipe (batch 32, 3 epochs) -- the vertical lines of Figure 1.
PAPER_ITERATIONS: dict[str, int] = {k: fine_tuning_iterations(v) for k, v in PAPER_TRAIN_SIZES.items()}


# ------------------------------------------------------------------------------------------------
# t-test
# ------------------------------------------------------------------------------------------------
def one_tailed_ttest(a: Sequence[float], b: Sequence[float], *, welch: bool = False) -> tuple[float, float]:
    """One-tailed two-sample t-test of H1: mean(a) > mean(b) (paper Section 5: one-tailed Student's t-test).

    Student's t with pooled variance by default (as the paper), Welch's t (unequal variances) with
    ``welch=True``. NaN values are removed first (callers report them). Needs two finite values per side.

    Returns:
        ``(t, p)``; both NaN when a side has fewer than two values or both variances are zero with equal means.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x = x[~np.isnan(x)]
    y = y[~np.isnan(y)]
    n1, n2 = len(x), len(y)
    if n1 < 2 or n2 < 2:
        return float("nan"), float("nan")
    v1, v2 = x.var(ddof=1), y.var(ddof=1)
    if welch:
        s1, s2 = v1 / n1, v2 / n2
        se2 = s1 + s2
        dof = se2**2 / (s1**2 / (n1 - 1) + s2**2 / (n2 - 1)) if se2 > 0 else 1.0
    else:
        pooled = ((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2)
        se2 = pooled * (1.0 / n1 + 1.0 / n2)
        dof = n1 + n2 - 2
    diff = x.mean() - y.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / np.sqrt(se2)
    if np.isnan(t):
        return float("nan"), float("nan")
    return float(t), float(sps.t.sf(t, dof))


def ttest_name(welch: bool) -> str:
    """Human-readable name of the test :func:`one_tailed_ttest` runs."""
    return ("one-tailed Welch's t-test (unequal variances)" if welch
            else "one-tailed Student's t-test (pooled, equal variances)")


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

    Paper Tables 1, 2, 4 and 7. NaN values (constant predictions) are counted in ``n`` and ``n_nan`` but
    excluded from mean, std and the t-test. ``tie_with_best`` marks, per task, the best mean and the methods
    not significantly worse than it (one-tailed test best > method, p >= alpha), as the paper highlights.

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
        base = values.get(baseline)
        finite_means = {m: np.nanmean(v.to_numpy()) for m, v in values.items() if v.notna().sum() >= 2}
        best = max(finite_means, key=finite_means.get) if finite_means else None
        for method, v in values.items():
            x = v.to_numpy(dtype=float)
            finite = x[~np.isnan(x)]
            t = p = float("nan")
            if base is not None and method != baseline:
                t, p = one_tailed_ttest(x, base.to_numpy(), welch=welch)
            tie = ""
            if method == best:
                tie = "best"
            elif best is not None and method in finite_means:
                _, p_best = one_tailed_ttest(values[best].to_numpy(), x, welch=welch)
                tie = "tie" if not (p_best < alpha) else ""
            rows.append({
                "task": task, "method": method, "metric": metric, "checkpoint": checkpoint, "split": split,
                "n": int(len(x)), "n_nan": int(np.isnan(x).sum()),
                "mean": float(finite.mean() * scale) if finite.size else float("nan"),
                "std": float(finite.std(ddof=1) * scale) if finite.size >= 2 else float("nan"),
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
    """Count runs that fail to beat the majority-class baseline (paper Section 4; thresholds of Table 3).

    A run is degenerate when its score is NaN (a constant predictor: correlation undefined) or
    ``score <= threshold + tol``. The threshold comes from ``baseline_col`` of the frame when present,
    else ``majority`` (task -> fraction), else the paper's Table 3 row for ``split``. ``tol`` (0.05 percentage
    points by default) absorbs the rounding of Table 3 to 0.1 %: RTE's majority predictor scores
    73/139 = 52.52 %, printed as 52.5. Thresholds and ``tol`` are fractions, multiplied by 100 when the
    scores are in percent.

    Returns:
        One row per (method, task): ``method, task, metric, n, n_constant, n_degenerate, share, threshold,
        threshold_source``; ``n_degenerate`` counts constant predictors too; with no known threshold only
        constant predictors are counted and ``threshold`` is NaN.
    """
    table = majority if majority is not None else (PAPER_MAJORITY_TEST if split == "test" else PAPER_MAJORITY_VAL)
    sel = df[(df["checkpoint"] == checkpoint) & (df["split"] == split)]
    rows = []
    for task in task_order(sel["task"]):
        metric = resolve_metric(sel, task, metric_by_task)
        tsel = sel[(sel["task"] == task) & (sel["metric"] == metric)]
        unit = 1.0 if percent_scale(tsel["value"]) == 100.0 else 100.0  # scores in fractions or in %
        source = "unknown"
        threshold = float("nan")
        if baseline_col in tsel.columns and tsel[baseline_col].notna().any():
            threshold = float(tsel[baseline_col].dropna().iloc[0])
            source = f"frame column {baseline_col}"
        elif task in table:
            threshold = table[task] * unit
            source = f"paper Table 3 ({split})" if majority is None else "given"
        for method in method_order(tsel):
            x = main_values(tsel, task=task, method=method, metric=metric, checkpoint=checkpoint,
                            split=split).to_numpy(dtype=float)
            const = np.isnan(x)
            below = (x <= threshold + tol * unit) if not math.isnan(threshold) else np.zeros_like(const)
            deg = const | below
            rows.append({
                "method": method, "task": task, "metric": metric, "n": int(len(x)),
                "n_constant": int(const.sum()), "n_degenerate": int(deg.sum()),
                "share": float(deg.mean()) if len(x) else float("nan"),
                "threshold": threshold, "threshold_source": source,
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
    nan_value: float | None = None,
) -> pd.DataFrame:
    """Expected test score of the best-on-validation run among k random trials, by bootstrap (Figure 4).

    For k = 1..n: draw k runs with replacement ``n_boot`` times (``numpy.random.default_rng(seed)``), select
    the draw with the highest validation score and record its test and validation scores (same run, same
    checkpoint). With ``val=None`` the selection is by test score, i.e. the expected *maximum* test score
    (an optimistic oracle: there is no held-out model selection).

    Args:
        val: validation score per run, aligned with ``test``; None to select by test.
        test: test score per run.
        n_boot: simulations per k (paper: 1,000).
        seed: seed of the generator.
        k_max: largest k (default: the number of runs).
        nan_value: replace NaN scores by this value (e.g. 0 for a constant predictor's correlation).
            Otherwise a NaN validation score is never selected unless all k draws are NaN, and a NaN test
            score of a selected run makes that k's mean NaN.

    Returns:
        ``DataFrame(k, mean, std, val_mean, val_std)``; std over the simulations (ddof=0).
    """
    t = np.asarray(test, dtype=float)
    v = t.copy() if val is None else np.asarray(val, dtype=float)
    if v.shape != t.shape:
        raise ValueError(f"val and test must have the same length, got {v.shape} and {t.shape}")
    if nan_value is not None:
        t = np.where(np.isnan(t), nan_value, t)
        v = np.where(np.isnan(v), nan_value, v)
    n = len(t)
    if n == 0:
        return pd.DataFrame(columns=["k", "mean", "std", "val_mean", "val_std"])
    score = np.where(np.isnan(v), -np.inf, v)
    rng = np.random.default_rng(seed)
    rows = []
    rows_idx = np.arange(n_boot)
    for k in range(1, (k_max or n) + 1):
        idx = rng.integers(0, n, size=(n_boot, k))
        chosen = idx[rows_idx, np.argmax(score[idx], axis=1)]
        tt, vv = t[chosen], v[chosen]
        rows.append({"k": k, "mean": tt.mean(), "std": tt.std(), "val_mean": vv.mean(), "val_std": vv.std()})
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
        parts.append(part[["task", "group", "iterations", *keys, "value"]])
    out = pd.concat(parts, ignore_index=True)
    return out, split, checkpoint

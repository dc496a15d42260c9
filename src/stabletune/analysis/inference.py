"""Hypothesis tests of multi-seed studies, from the field's libraries (scipy.stats, statsmodels).

* :func:`one_tailed_ttest` -- H1: mean(a) > mean(b); Student (pooled), Welch, or paired by seed
  (``scipy.stats.ttest_ind`` / ``ttest_rel`` with ``alternative="greater"``).
* :func:`spread_smaller` -- a directed Brown-Forsythe test of H1: spread(a) < spread(b).
* :func:`holm` -- Holm's step-down adjustment over a family of p-values (``statsmodels``' ``multipletests``).
* :func:`min_detectable_effect` -- the smallest standardised effect (Cohen's d) a one-tailed t-test detects with
  80 % power at the given sample sizes (``statsmodels.stats.power``).
* :func:`equivalence_test` -- two one-sided tests (TOST) of |mean(a) - mean(b)| < margin (``statsmodels``).

Every function removes NaN first (callers count and report them) and returns NaN where the test is undefined:
fewer than two values on a side, or no variance at all on either side. The last case deserves a word: with both
samples constant, the t statistic is 0/0 or +-inf and Welch's degrees of freedom are 0/0; scipy returns p = 0
there (and Welch df = 1), which would call two constant predictors "significantly different" on no evidence of
their sampling variation. Here such a test is undefined (NaN), never significant.

Nothing here imports torch.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import ttost_ind, ttost_paired


def _clean(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[~np.isnan(x)]


def _no_variance(*samples: np.ndarray) -> bool:
    return all(np.all(s == s[0]) for s in samples)


def one_tailed_ttest(a: Sequence[float], b: Sequence[float], *, welch: bool = False,
                     paired: bool = False) -> tuple[float, float]:
    """One-tailed t-test of H1: mean(a) > mean(b) (paper Section 5: one-tailed Student's t-test).

    Student's t with pooled variance by default (as the paper); Welch's t with ``welch=True``; the paired t-test on
    the differences ``a - b`` with ``paired=True`` (``a`` and ``b`` aligned by seed: the design pairs them, and
    pairing removes the seed's shared variation). NaN values are removed first (pairs with a NaN, when paired).

    Returns:
        ``(t, p)``; both NaN when a side has fewer than two values or the test is undefined (no variance).
    """
    if paired:
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if x.shape != y.shape:
            raise ValueError(f"a paired test needs aligned samples, got {x.shape} and {y.shape}")
        keep = ~(np.isnan(x) | np.isnan(y))
        d = x[keep] - y[keep]
        if len(d) < 2 or _no_variance(d):
            return float("nan"), float("nan")
        res = sps.ttest_rel(x[keep], y[keep], alternative="greater")
        return float(res.statistic), float(res.pvalue)
    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2 or _no_variance(x, y):
        return float("nan"), float("nan")
    res = sps.ttest_ind(x, y, equal_var=not welch, alternative="greater")
    return float(res.statistic), float(res.pvalue)


def ttest_name(welch: bool, paired: bool = False) -> str:
    """Human-readable name of the test :func:`one_tailed_ttest` runs."""
    if paired:
        return "one-tailed paired t-test (by seed)"
    return ("one-tailed Welch's t-test (unequal variances)" if welch
            else "one-tailed Student's t-test (pooled, equal variances)")


def spread_smaller(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Directed Brown-Forsythe test of H1: the spread of ``a`` is smaller than the spread of ``b``.

    Brown-Forsythe is Levene's test centred on the median: an ANOVA on the absolute deviations
    ``|x - median(x)|``. For two groups its F is the square of the pooled two-sample t on those deviations, so the
    one-sided test is that t-test with ``alternative="less"`` -- its direction comes from its own statistic (the mean
    absolute deviation), not from the sample standard deviations, which can order the groups the other way.
    Its two-sided p equals ``scipy.stats.levene(a, b, center="median").pvalue``.

    Returns:
        ``(t, p)`` of the t-test on absolute deviations (t < 0: ``a`` less spread); NaN when undefined.
    """
    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2:
        return float("nan"), float("nan")
    dx, dy = np.abs(x - np.median(x)), np.abs(y - np.median(y))
    if _no_variance(dx, dy):
        return float("nan"), float("nan")
    res = sps.ttest_ind(dx, dy, equal_var=True, alternative="less")
    return float(res.statistic), float(res.pvalue)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values of a family (NaN entries are not part of the family and stay NaN).

    Holm's step-down method controls the family-wise error rate at any dependence between the tests; it is
    uniformly more powerful than Bonferroni (``statsmodels.stats.multitest.multipletests(method="holm")``).
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    keep = ~np.isnan(p)
    if keep.any():
        out[keep] = multipletests(p[keep], method="holm")[1]
    return out


def min_detectable_effect(n1: int, n2: int | None = None, *, paired: bool = False, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """Smallest standardised effect (Cohen's d) that a one-tailed t-test at ``alpha`` detects with ``power``.

    Two-sample (pooled) with ``n1`` and ``n2`` values (``n2`` defaults to ``n1``); with ``paired=True`` the one-sample
    test on ``n1`` differences (d in units of the differences' std). Multiply by the std to read it in score units.
    NaN below two values per side.
    """
    n2 = n1 if n2 is None else n2
    if n1 < 2 or (not paired and n2 < 2):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if paired:
            d = TTestPower().solve_power(effect_size=None, nobs=n1, alpha=alpha, power=power, alternative="larger")
        else:
            d = TTestIndPower().solve_power(effect_size=None, nobs1=n1, ratio=n2 / n1, alpha=alpha, power=power,
                                            alternative="larger")
    return float(np.asarray(d).item())


def equivalence_test(a: Sequence[float], b: Sequence[float], margin: float, *, paired: bool = False) -> float:
    """Two one-sided tests (TOST, Schuirmann 1987) of equivalence: H1 is ``-margin < mean(a) - mean(b) < margin``.

    ``margin`` is in the units of the scores and must be declared before the data are seen (a study file's
    ``equivalence_margin``). A small p shows the difference lies inside the margin: evidence of *no* difference,
    which a non-significant t-test is not. Pooled variance (as the paper's t-test); paired by seed with
    ``paired=True``.

    Returns:
        The TOST p-value (the larger of the two one-sided p-values); NaN when undefined.
    """
    if not (margin > 0 and math.isfinite(margin)):
        raise ValueError(f"invalid margin: {margin!r} (a positive finite number)")
    if paired:
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        if len(x) < 2 or _no_variance(x - y):
            return float("nan")
        return float(ttost_paired(x, y, -margin, margin)[0])
    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2 or _no_variance(x, y):
        return float("nan")
    return float(ttost_ind(x, y, -margin, margin, usevar="pooled")[0])

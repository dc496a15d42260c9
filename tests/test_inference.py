"""stabletune.analysis.inference against scipy / statsmodels (to 1e-12), closed forms, and the cases where the
code it replaced gave the wrong answer (issue 25)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import ttost_ind

from stabletune.analysis.inference import (
    equivalence_test,
    holm,
    min_detectable_effect,
    one_tailed_ttest,
    spread_smaller,
)


def _old_std_smaller(a, b):
    """The one-sided Brown-Forsythe of scripts/paper_claims.py before issue 25: direction from the sample SDs."""
    p2 = float(sps.levene(a, b, center="median").pvalue)
    agrees = bool(np.std(a, ddof=1) < np.std(b, ddof=1))
    return p2 / 2 if agrees else 1 - p2 / 2


def test_brown_forsythe_direction_comes_from_its_own_statistic():
    # a: one outlier -> larger SD, but smaller mean absolute deviation from the median than b
    a = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0])
    b = np.array([-3.0, 3.0, -3.0, 3.0, -3.0, 3.0, 0.0])
    assert a.std(ddof=1) > b.std(ddof=1)
    dev_a, dev_b = np.abs(a - np.median(a)), np.abs(b - np.median(b))
    assert dev_a.mean() < dev_b.mean()  # Brown-Forsythe's statistic says a is *less* spread
    t, p = spread_smaller(a, b)
    assert t < 0 and p < 0.5
    assert _old_std_smaller(a, b) > 0.5  # the old code pointed the other way
    # the two one-sided p-values make up Levene-median's two-sided p, to 1e-12
    p2 = sps.levene(a, b, center="median").pvalue
    assert 2 * min(p, spread_smaller(b, a)[1]) == pytest.approx(p2, rel=1e-12)
    assert p + spread_smaller(b, a)[1] == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_brown_forsythe_two_sided_equals_scipy_levene_median(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, 10 + seed), rng.standard_t(3, 20 - seed) * 2
    p_less, p_greater = spread_smaller(a, b)[1], spread_smaller(b, a)[1]
    assert 2 * min(p_less, p_greater) == pytest.approx(sps.levene(a, b, center="median").pvalue, rel=1e-12)
    f = sps.levene(a, b, center="median").statistic
    assert spread_smaller(a, b)[0] ** 2 == pytest.approx(f, rel=1e-12)


def test_paired_gap_test_uses_the_pairing():
    # per-seed gaps that share a large seed effect: unpaired, the seed effect drowns the difference
    rng = np.random.default_rng(3)
    seed_effect = rng.normal(0, 5, 10)
    gap_short = seed_effect + 1.0 + rng.normal(0, 0.3, 10)
    gap_long = seed_effect + rng.normal(0, 0.3, 10)
    _, p_unpaired = one_tailed_ttest(gap_short, gap_long)
    t, p_paired = one_tailed_ttest(gap_short, gap_long, paired=True)
    assert p_unpaired > 0.05 and p_paired < 1e-4  # the old (unpaired) test missed a clear paired effect
    ref = sps.ttest_rel(gap_short, gap_long, alternative="greater")
    assert t == pytest.approx(ref.statistic, rel=1e-12) and p_paired == pytest.approx(ref.pvalue, rel=1e-12)
    with pytest.raises(ValueError, match="aligned"):
        one_tailed_ttest([1, 2, 3], [1, 2], paired=True)
    # a NaN drops its pair
    t2, p2 = one_tailed_ttest([1.0, 2.0, np.nan, 4.0], [0.5, 1.0, 2.0, 2.0], paired=True)
    assert p2 == pytest.approx(sps.ttest_rel([1.0, 2.0, 4.0], [0.5, 1.0, 2.0], alternative="greater").pvalue)


def test_welch_with_zero_variances_is_undefined_not_significant():
    # both samples constant: scipy (and the old code, which set 1 degree of freedom) call it p = 0
    assert sps.ttest_ind([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], equal_var=False, alternative="greater").pvalue == 0.0
    for welch in (False, True):
        t, p = one_tailed_ttest([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], welch=welch)
        assert math.isnan(t) and math.isnan(p)
    # one side constant is a defined test (Welch df = n - 1 of the other side)
    t, p = one_tailed_ttest([1.0, 1.0, 1.0], [0.0, 0.5, -0.2, 0.1], welch=True)
    ref = sps.ttest_ind([1.0, 1.0, 1.0], [0.0, 0.5, -0.2, 0.1], equal_var=False, alternative="greater")
    assert p == pytest.approx(ref.pvalue, rel=1e-12) and ref.df == pytest.approx(3.0)


@pytest.mark.parametrize("welch", [False, True])
def test_ttest_matches_scipy_to_1e12(welch):
    rng = np.random.default_rng(7)
    for n1, n2 in ((3, 3), (10, 20), (20, 20)):
        a, b = rng.normal(0.3, 1, n1), rng.normal(0, 2, n2)
        ref = sps.ttest_ind(a, b, equal_var=not welch, alternative="greater")
        t, p = one_tailed_ttest(a, b, welch=welch)
        assert t == pytest.approx(ref.statistic, rel=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-12)


def test_holm_matches_statsmodels_and_hand_computation():
    p = [0.01, 0.04, 0.03, float("nan"), 0.005]
    adj = holm(p)
    assert math.isnan(adj[3])
    ref = multipletests([0.01, 0.04, 0.03, 0.005], method="holm")[1]
    np.testing.assert_allclose(adj[[0, 1, 2, 4]], ref, rtol=1e-12)
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, running max
    np.testing.assert_allclose(adj[[4, 0, 2, 1]], [0.02, 0.03, 0.06, 0.06], rtol=1e-12)


def test_min_detectable_effect_reproduces_the_issue_s_power_figures():
    # issue 25: a one-tailed test at n = 10, d = 0.8 has power 0.53; n = 5, d = 1: 0.42
    assert TTestIndPower().power(0.8, 10, 0.05, alternative="larger") == pytest.approx(0.53, abs=0.005)
    assert TTestIndPower().power(1.0, 5, 0.05, alternative="larger") == pytest.approx(0.42, abs=0.005)
    d10, d20 = min_detectable_effect(10), min_detectable_effect(20)
    assert d20 < d10
    assert TTestIndPower().power(d10, 10, 0.05, alternative="larger") == pytest.approx(0.8, abs=1e-6)  # root-finder tolerance
    dp = min_detectable_effect(12, paired=True)
    assert TTestPower().power(dp, 12, 0.05, alternative="larger") == pytest.approx(0.8, abs=1e-6)  # root-finder tolerance
    assert math.isnan(min_detectable_effect(1))


def test_equivalence_test_matches_statsmodels_and_its_meaning():
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, 40), rng.normal(0.05, 1, 40)
    p = equivalence_test(a, b, 1.0)
    assert p == pytest.approx(ttost_ind(a, b, -1.0, 1.0, usevar="pooled")[0], rel=1e-12)
    assert p < 0.05  # 40 seeds, a true difference of 0.05 std: shown inside a margin of 1 std
    # 5 seeds each: nothing detected and nothing shown either -- the case a non-significant t-test calls "no gain"
    small_a, small_b = a[:5], b[:5] + 0.3
    assert one_tailed_ttest(small_a, small_b)[1] > 0.05 and equivalence_test(small_a, small_b, 0.5) > 0.05
    with pytest.raises(ValueError, match="margin"):
        equivalence_test(a, b, 0.0)

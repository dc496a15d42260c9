"""scripts/paper_claims.py: the verdict rule, the ANOVA against a least-squares reference, and docs/results.md
being exactly what the script prints from the committed exports."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def claims():
    spec = importlib.util.spec_from_file_location("paper_claims", ROOT / "scripts" / "paper_claims.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paper_claims"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_verdict_rule(claims):
    assert claims.verdict(0.01, True) == "holds"
    assert claims.verdict(0.2, True) == "inconclusive at this scale"
    assert claims.verdict(0.9, False, 0.1) == "does not hold"
    assert claims.verdict(0.99, False, 0.01) == "does not hold (significant)"


def _rss(y: np.ndarray, x: np.ndarray) -> float:
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(((y - x @ beta) ** 2).sum())


def test_two_way_anova_matches_nested_least_squares(claims):
    """F of each factor = (RSS without it - RSS full) / df / (RSS full / df_err), from dummy-coded regressions."""
    rng = np.random.default_rng(0)
    r, c = 5, 4
    grid = rng.normal(size=(r, c)) + np.arange(r)[:, None] * 0.7 + np.arange(c)[None, :] * 0.2
    y = grid.ravel()
    rows = np.repeat(np.arange(r), c)
    cols = np.tile(np.arange(c), r)
    one = np.ones((r * c, 1))
    dr = (rows[:, None] == np.arange(1, r)[None, :]).astype(float)
    dc = (cols[:, None] == np.arange(1, c)[None, :]).astype(float)
    full = _rss(y, np.hstack([one, dr, dc]))
    df_e = (r - 1) * (c - 1)
    f_rows = (_rss(y, np.hstack([one, dc])) - full) / (r - 1) / (full / df_e)
    f_cols = (_rss(y, np.hstack([one, dr])) - full) / (c - 1) / (full / df_e)
    f_r, p_r, f_c, p_c = claims.two_way_anova(grid)
    assert f_r == pytest.approx(f_rows, rel=1e-10) and f_c == pytest.approx(f_cols, rel=1e-10)
    from scipy import stats

    assert p_r == pytest.approx(stats.f.sf(f_rows, r - 1, df_e)) and 0 < p_c < 1


def test_std_smaller_direction(claims):
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 30), rng.normal(0, 5, 30)
    p, p_opp, agrees = claims.std_smaller(a, b)
    assert agrees and p < 0.01 and p_opp > 0.99
    p, p_opp, agrees = claims.std_smaller(b, a)
    assert not agrees and p_opp < 0.01


def test_results_md_is_the_scripts_output(claims):
    """docs/results.md holds the table the script prints from the committed exports, unchanged."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert claims.main([]) == 0
    table = out.getvalue().strip()
    assert table.startswith("| claim (paper)")
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert table in text, "docs/results.md is stale: rerun `python scripts/paper_claims.py` and paste its table"

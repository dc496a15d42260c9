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


def _frames(tmp_path: Path, means: dict[str, float], *, n: int = 8, sd: float = 1.0, val_shift: dict | None = None):
    """A long CSV of CoLA-1k-like results: per method, n seeds of test and val MCC drawn around ``means`` (x 100)."""
    import pandas as pd

    from stabletune.analysis.frames import from_long_csv

    rng = np.random.default_rng(0)
    rows = []
    for method, mu in means.items():
        for seed in range(n):
            for split in ("test", "val"):
                shift = (val_shift or {}).get(method, 0.0) if split == "val" else 0.0
                rows.append({"method": method, "task": "cola-1k", "seed": seed, "split": split, "checkpoint": "best",
                             "metric": "mcc", "value": (mu + shift + sd * rng.normal()) / 100})
    path = tmp_path / "long.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return from_long_csv(path, split_col="split", checkpoint_col="checkpoint")


def test_sec6_claims_follow_the_data(claims, tmp_path):
    """Longer training clearly better for standard (and the gap closing); Re-init flat -> its rows do not hold."""
    f = _frames(tmp_path, {"adam-steps-96": 40, "adam-steps-200": 44, "adam-steps-400": 48,
                           "reinit-steps-96": 46, "reinit-steps-200": 44, "reinit-steps-400": 43})
    rows = {(r.claim, r.task): r for r in claims.adjust(claims.sec6_claims(f))}
    longer = rows[("Training longer improves the mean test score over three epochs (standard)", "cola-1k")]
    assert longer.verdict == "holds" and "adam-steps-400" in longer.ours
    assert rows[("Training longer narrows the gap between standard fine-tuning and Re-init", "cola-1k")].verdict \
        == "holds"
    reinit = rows[("Training longer improves the mean test score over three epochs (Re-init)", "cola-1k")]
    assert reinit.verdict != "holds"
    fewer = rows[("Re-init needs fewer updates to reach its best validation score", "cola-1k")]
    assert fewer.verdict == "holds" and "at 96 updates (Re-init) vs 400" in fewer.ours


def test_sec7_claims_follow_the_data(claims, tmp_path):
    """A method with a large real gain fails the 'no gain' claim; a method with none passes it."""
    f = _frames(tmp_path, {"standard": 40, "reinit-3": 43, "longer-400": 41, "mixout-0.3": 40,
                           "llrd-0.95": 46, "pretrained-wd-0.01": 40, "int-task-mnli": 44})
    rows = {r.claim: r for r in claims.adjust(claims.sec7_claims(f))}
    assert rows["Intermediate-task fine-tuning (MNLI) improves the mean test score"].verdict == "holds"
    assert rows["LLRD gives no significant gain over standard fine-tuning with debiased Adam"].verdict == \
        "does not hold (significant gain)"
    # no margin declared before the run: absence of a detected gain is not shown to be absence of a gain
    mixout = rows["Mixout gives no significant gain over standard fine-tuning with debiased Adam"]
    assert mixout.verdict == "not shown (no equivalence margin declared before the run)"
    assert mixout.mde.endswith("(d 1.31)")  # 8 vs 8 seeds: d = 1.31 detectable at 80 % power
    vs_fix = rows["LLRD does not beat the simpler fixes (Re-init, longer training)"]
    assert "reinit-3 (the better on validation)" in vs_fix.ours and vs_fix.verdict == "does not hold (significant gain)"
    assert "95 % CI" in vs_fix.ours
    # the study file declared a margin: a TOST decides; a margin too tight for 8 seeds is "not shown"
    for margin, expected in ((3, "equivalent (within ±3)"), (0.2, "not shown (±0.2 margin)")):
        f.meta = {"config": f"name: x\nequivalence_margin: {margin}\n"}
        rows = {r.claim: r for r in claims.adjust(claims.sec7_claims(f))}
        mixout = rows["Mixout gives no significant gain over standard fine-tuning with debiased Adam"]
        assert mixout.test == f"TOST, margin ±{margin:g}" and mixout.verdict == expected
        assert rows["LLRD gives no significant gain over standard fine-tuning with debiased Adam"].verdict == \
            "does not hold (significant gain)"

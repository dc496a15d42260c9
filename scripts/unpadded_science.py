#!/usr/bin/env python
"""Does the unpadded encoder change the science? The analysis of studies/unpadded-science.yaml (issue 14).

    python scripts/unpadded_science.py studies/unpadded-science.yaml          # table
    python scripts/unpadded_science.py studies/unpadded-science.yaml --json   # the same as JSON

The study runs each method twice, as ``<method>-hf`` (Hugging Face padded forward) and ``<method>-unpadded``. For
each method and task this compares the two paths' scores over the seeds with a **two-tailed Welch t-test**
(``scipy.stats.ttest_ind(equal_var=False)``: the two paths need not have equal variances), Bonferroni-corrected
over the methods compared (``p_adj = min(1, p * m)``). "No difference" means ``p_adj > alpha`` (0.05); with 10
seeds per side that is a weak, not an equivalence, statement, so the table also gives both means and standard
deviations and the difference. Only finished runs count (diverged or failed runs are reported, not averaged). It
also reports the wall time of each path (sum and mean per run of the stored ``wall_s``, and the mean training
throughput), the study's cost on either path.

Exit status: 0 when every comparison finds no difference, 1 when one does, 2 for a usage or data problem.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

PATHS = ("hf", "unpadded")


def split_method(name: str) -> tuple[str, str] | None:
    """``"adam-unpadded"`` -> ``("adam", "unpadded")``; None for a method of neither path."""
    for path in PATHS:
        if name.endswith(f"-{path}"):
            return name[: -len(path) - 1], path
    return None


def compare_paths(df: pd.DataFrame, *, score: str, alpha: float = 0.05) -> dict:
    """Welch per (task, method) between the paths, Bonferroni over the methods of each task; wall time per path.

    Args:
        df: one row per run with columns ``method``, ``task``, ``status``, ``wall_s``, ``examples_per_s`` and
            ``score`` (e.g. ``best_test_mcc``), as :func:`stabletune.study.load_results` returns.
        score: the column compared.
        alpha: family-wise level.
    """
    from scipy import stats

    if score not in df.columns:
        raise ValueError(f"no column {score!r} in the results (columns: {', '.join(map(str, df.columns))})")
    parsed = df["method"].map(split_method)
    df = df.assign(base=parsed.map(lambda x: x[0] if x else None), path=parsed.map(lambda x: x[1] if x else None))
    df = df[df["base"].notna()]
    done = df[df["status"] == "finished"]
    comparisons = []
    for task, tdf in done.groupby("task", sort=False):
        bases = [b for b in dict.fromkeys(tdf["base"]) if set(tdf[tdf["base"] == b]["path"]) == set(PATHS)]
        for base in bases:
            x, y = (tdf[(tdf["base"] == base) & (tdf["path"] == p)][score].dropna().to_numpy(float) for p in PATHS)
            if len(x) < 2 or len(y) < 2:
                t, p = math.nan, math.nan
            else:
                t, p = (float(v) for v in stats.ttest_ind(x, y, equal_var=False))
            comparisons.append({"task": task, "method": base, "n_hf": len(x), "n_unpadded": len(y),
                                "mean_hf": float(np.mean(x)) if len(x) else math.nan,
                                "mean_unpadded": float(np.mean(y)) if len(y) else math.nan,
                                "sd_hf": float(np.std(x, ddof=1)) if len(x) > 1 else math.nan,
                                "sd_unpadded": float(np.std(y, ddof=1)) if len(y) > 1 else math.nan,
                                "t": t, "p": p, "m": len(bases)})
    for c in comparisons:
        c["diff"] = c["mean_unpadded"] - c["mean_hf"]
        c["p_bonferroni"] = min(1.0, c["p"] * c["m"]) if not math.isnan(c["p"]) else math.nan
        c["no_difference"] = bool(c["p_bonferroni"] > alpha) if not math.isnan(c["p_bonferroni"]) else None
    wall = {}
    for path in PATHS:
        pdf = done[done["path"] == path]
        wall[path] = {"runs": int(len(pdf)), "wall_s_total": float(pdf["wall_s"].sum()),
                      "wall_s_mean": float(pdf["wall_s"].mean()) if len(pdf) else math.nan,
                      "examples_per_s_mean": float(pdf["examples_per_s"].mean()) if len(pdf) else math.nan}
    other = df[df["status"] != "finished"].groupby(["method", "status"]).size()
    return {"score": score, "alpha": alpha, "comparisons": comparisons, "wall": wall,
            "not_finished": {f"{m}/{s}": int(n) for (m, s), n in other.items()},
            "all_no_difference": bool(comparisons) and all(c["no_difference"] for c in comparisons)}


def fmt(res: dict) -> str:
    out = [f"{res['score']}: hf vs unpadded, two-tailed Welch t-test, Bonferroni over methods (alpha {res['alpha']})",
           f"{'task':8} {'method':10} {'n':>5} {'mean hf':>8} {'sd':>6} {'mean unp':>8} {'sd':>6} {'diff':>7} "
           f"{'p':>6} {'p_adj':>6}  verdict"]
    for c in res["comparisons"]:
        verdict = {True: "no difference", False: "DIFFERENT", None: "too few runs"}[c["no_difference"]]
        out.append(f"{c['task']:8} {c['method']:10} {c['n_hf']:>2}/{c['n_unpadded']:<2} {c['mean_hf']:8.4f} "
                   f"{c['sd_hf']:6.4f} {c['mean_unpadded']:8.4f} {c['sd_unpadded']:6.4f} {c['diff']:+7.4f} "
                   f"{c['p']:6.3f} {c['p_bonferroni']:6.3f}  {verdict}")
    for path, w in res["wall"].items():
        out.append(f"wall time, {path}: {w['wall_s_total']:.0f} s over {w['runs']} runs ({w['wall_s_mean']:.1f} s "
                   f"per run; {w['examples_per_s_mean']:.1f} training examples/s)")
    if res["wall"]["hf"]["runs"] and res["wall"]["unpadded"]["runs"]:
        out.append(f"unpadded / hf wall time per run: "
                   f"{res['wall']['unpadded']['wall_s_mean'] / res['wall']['hf']['wall_s_mean']:.2f}")
    for k, n in res["not_finished"].items():
        out.append(f"not finished: {k}: {n}")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="the study file (studies/unpadded-science.yaml)")
    p.add_argument("--db", help="the study database (default: beside the study file)")
    p.add_argument("--score", help="the compared column (default: best_test_<the task's main metric>)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from stabletune.errors import UserError
    from stabletune.study import load_results

    try:
        df = load_results(Path(args.study), db=args.db, phase="final")
        if df.empty:
            raise ValueError(f"no stored runs for {args.study}: run `stabletune study run {args.study}` first")
        score = args.score or f"best_test_{df['main_metric'].dropna().iloc[0]}"
        res = compare_paths(df, score=score, alpha=args.alpha)
    except (UserError, ValueError) as e:
        sys.stderr.write(f"unpadded_science: {e}\n")
        return 2
    print(json.dumps(res, indent=1) if args.json else fmt(res))
    return 0 if res["all_no_difference"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""The report's sections, one function per paper table or figure (the summary sentences, the test table,
degenerate runs, agreement between seeds, expected validation performance, the seed grid) and the number
formats they share. Each writes into a :class:`~stabletune.analysis.document.Document`."""

from __future__ import annotations

import importlib.metadata
import math
import platform
from typing import Any

import pandas as pd

from stabletune.analysis import plots
from stabletune.analysis.frames import (
    ResultsFrames,
    display_task,
    main_values,
    method_order,
    run_key_columns,
    task_order,
)
from stabletune.analysis.stats import (
    resolve_metric,
    expected_max_performance,
    percent_scale,
    score_unit_label,
    seed_grid_stats,
    ttest_name,
)
from stabletune.analysis.document import Cell, Document
from stabletune.errors import UserError


# ------------------------------------------------------------------------------------------------
def units_note(pairs: Any) -> str:
    """", in %" / ", × 100" (MCC, correlations) / both, for the ``(metric, scale)`` pairs a table shows."""
    labels = {score_unit_label(m, sc) for m, sc in pairs} - {""}
    if len(labels) == 2:
        return ", × 100 (accuracy and F1: in %)"
    return f", in {labels.pop()}" if labels == {"%"} else f", {labels.pop()}" if labels else ""


def fmt(x: float, nd: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def p_phrase(p: float) -> str:
    """``p < 0.0001`` or ``p = 0.0123`` for a sentence."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


def versions(meta_versions: Any) -> dict[str, str]:
    versions: dict[str, str] = {"python": platform.python_version()}
    for pkg in ("stabletune", "numpy", "pandas", "scipy", "matplotlib"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    if isinstance(meta_versions, dict):
        versions.update({str(k): str(v) for k, v in meta_versions.items()})
    return versions


def status_frame(frames: ResultsFrames) -> pd.DataFrame | None:
    if frames.runs is not None:
        return frames.runs
    if "status" in frames.metrics.columns:
        keys = ["method", "task", *run_key_columns(frames.metrics)]
        return frames.metrics.drop_duplicates(keys)[keys + ["status"]]
    return None


def n_runs(frames: ResultsFrames) -> int:
    if frames.runs is not None:
        return len(frames.runs)
    keys = ["method", "task", *run_key_columns(frames.metrics)]
    return len(frames.metrics.drop_duplicates(keys))


# ------------------------------------------------------------------------------------------------
def summary_block(doc: Document, s: pd.DataFrame, *, ck: str, baseline: str, welch: bool, alpha: float,
                   main: bool = False) -> None:
    tasks = list(dict.fromkeys(s["task"]))
    methods = list(dict.fromkeys(s["method"]))
    header = ["Method"]
    for t in tasks:
        metric = s.loc[s["task"] == t, "metric"].iloc[0]
        header += [f"{display_task(t)} {metric}", "p"]
    rows = []
    for meth in methods:
        row: list[Any] = [meth]
        for t in tasks:
            r = s[(s["task"] == t) & (s["method"] == meth)]
            if r.empty:
                row += ["", ""]
                continue
            r = r.iloc[0]
            n_text = f"n={r['n']}" + (f", {r['n_nan']} NaN as 0" if r["n_nan"] else "")
            val = fmt(r["mean"]) + (f" ± {fmt(r['std'])}" if not math.isnan(r["std"]) else "")
            row.append(Cell(f"{val} ({n_text})", bold=r["tie_with_best"] in ("best", "tie")))
            p_text = "baseline" if meth == baseline else fmt_p(r["p"]) + (" *" if r["significant"] else "")
            row.append(p_text)
        rows.append(row)
    notes = [
        f"Mean ± standard deviation (ddof=1) over seeds of the test score at the {ck} checkpoint"
        + units_note(zip(s["metric"], s["scale"])) + ".",
        f"p: {ttest_name(welch)} of H1 \"method > `{baseline}`\"; * marks p < {alpha}. "
        "No correction for multiple comparisons.",
        f"**Bold**: the best mean of each task and the methods not significantly below it (same test, p ≥ {alpha}), "
        "as the paper highlights.",
    ]
    nan_rows = s[s["n_nan"] > 0]
    if len(nan_rows):
        listing = "; ".join(f"{r.method}/{display_task(r.task)}: {r.n_nan} of {r.n}" for r in nan_rows.itertuples())
        notes.append(f"NaN scores (degenerate: constant predictions) count as 0 in mean, std and the t-test: "
                     f"{listing}. See the degenerate-runs table.")
    single = s[s["n"] < 2]
    if len(single):
        notes.append("Single-run cells have no std and no test: "
                     + ", ".join(f"{r.method}/{display_task(r.task)}" for r in single.itertuples()) + ".")
    doc.table(header, rows, table_id=f"summary-{ck}", notes=notes, main=main)


def degenerate_block(doc: Document, d: pd.DataFrame, *, ck: str) -> None:
    tasks = list(dict.fromkeys(d["task"]))
    methods = list(dict.fromkeys(d["method"]))
    header = ["Method"] + [display_task(t) for t in tasks]
    rows = []
    for meth in methods:
        row: list[Any] = [meth]
        for t in tasks:
            r = d[(d["task"] == t) & (d["method"] == meth)]
            if r.empty:
                row.append("")
                continue
            r = r.iloc[0]
            text = f"{r['n_degenerate']}/{r['n']} ({100 * r['share']:.0f} %)"
            if r["n_constant"]:
                text += f", {r['n_constant']} constant"
            row.append(text)
        rows.append(row)
    thr = []
    for t in tasks:
        r = d[d["task"] == t].iloc[0]
        low, high = d.loc[d["task"] == t, "threshold"].min(), d.loc[d["task"] == t, "threshold_max"].max()
        value = fmt(low, 4) if not low < high else f"{fmt(low, 4)}–{fmt(high, 4)}"
        thr.append(f"{display_task(t)} {r['metric']} ≤ {value} ({r['threshold_source']})")
    notes = ["Thresholds: " + "; ".join(thr) + ". \"constant\": NaN score (constant predictions), included in the count."]
    doc.para(f"{ck.capitalize()} checkpoint:")
    doc.table(header, rows, table_id=f"degenerate-{ck}", notes=notes)


def agreement_block(doc: Document, a: pd.DataFrame, *, checkpoints: list[str]) -> None:
    doc.heading(2, "Agreement between seeds (per-example test predictions)")
    doc.para("Two seeds can score alike and still predict different examples (Du & Nguyen, ACL 2023). "
             "Disagreement: over every pair of runs of a method, the fraction of test examples the two predict "
             "differently (regression: the mean absolute difference of their predicted scores, in label units). "
             "Fleiss' kappa: the runs as raters of the test examples (1 = all seeds alike; 0 = chance agreement "
             "given the class frequencies; classification only). Runs are compared within one split seed.")
    for ck in checkpoints:
        rows = [[r.method, display_task(r.task), r.split_seed, r.n_runs, r.n_examples,
                 (fmt(100 * r.disagreement) + " %") if r.kind == "class" else fmt(r.disagreement, 3),
                 fmt(r.fleiss_kappa, 3)]
                for r in a[a["checkpoint"] == ck].itertuples()]
        if rows:
            doc.table(["Method", "Task", "Split seed", "Runs", "Examples", "Disagreement", "Fleiss' κ"], rows,
                      table_id=f"agreement-{ck}", notes=[f"{ck} checkpoint."])


def expected_block(doc: Document, m: pd.DataFrame, checkpoints: list[str], *, metric_by_task: dict[str, str] | None,
                    n_boot: int, seed: int, colors: dict[str, str], add_figure: Any) -> pd.DataFrame | None:
    doc.para("For k = 1…n trials drawn with replacement from the n runs, when validation scores exist the run "
             "with the best validation score is selected and its test score recorded (validation and test from the "
             "same checkpoint of the same run). Lines: the exact expectation (closed form of Dodge et al., 2019); "
             f"bands: ± std of the selected score over {n_boot:,} simulated selections (NumPy generator, seed "
             f"{seed}). NaN scores count as 0. Methods with fewer than 2 runs are left out.")
    frames_out = []
    for ck in checkpoints:
        rows, notes = [], []
        selections: set[str] = set()
        for task in task_order(m["task"]):
            metric = resolve_metric(m[m["split"] == "test"], task, metric_by_task)
            for meth in method_order(m[m["task"] == task]):
                test = main_values(m, task=task, method=meth, metric=metric, checkpoint=ck, split="test")
                if len(test) < 2:
                    continue
                val = main_values(m, task=task, method=meth, metric=metric, checkpoint=ck, split="val")
                has_val = len(val) > 0
                if has_val:
                    n_test = len(test)
                    test, val = test.align(val, join="inner")
                    if len(test) < n_test:
                        notes.append(f"{meth}/{display_task(task)}: {n_test - len(test)} run(s) without a validation "
                                     "score left out.")
                selections.add("validation" if has_val else "max test")
                n_nan = int(test.isna().sum() + (val.isna().sum() if has_val else 0))
                if n_nan:
                    notes.append(f"{meth}/{display_task(task)}: {n_nan} NaN {metric} (constant predictions) "
                                 "counted as 0.")
                curve = expected_max_performance(val.to_numpy() if has_val else None, test.to_numpy(),
                                                 n_boot=n_boot, seed=seed)
                curve.insert(0, "selection", "validation" if has_val else "max test (no validation scores)")
                curve.insert(0, "metric", metric)
                curve.insert(0, "method", meth)
                curve.insert(0, "task", task)
                curve.insert(0, "checkpoint", ck)
                rows.append(curve)
        if not rows:
            continue
        curves = pd.concat(rows, ignore_index=True)
        frames_out.append(curves)
        doc.heading(3, f"{ck.capitalize()} checkpoint")
        if selections == {"validation"}:
            doc.para("Model selection on the validation split.")
            add_figure(f"expected_test_{ck}",
                       plots.plot_expected_performance(curves, which="test", colors=colors,
                                                       title=f"Expected test performance vs random trials ({ck})"),
                       f"Expected test score of the best-on-validation run among k trials ({ck} checkpoint).")
            add_figure(f"expected_val_{ck}",
                       plots.plot_expected_performance(curves, which="val", colors=colors,
                                                       title=f"Expected validation performance vs random trials ({ck})"),
                       f"Expected validation score of the selected run among k trials ({ck} checkpoint).")
        elif selections == {"max test"}:
            doc.para("**No validation scores in these results**: runs cannot be selected on validation, so the curves "
                     "show the expected MAXIMUM test score over k trials (selection by test score). This is an "
                     "optimistic oracle: it rises monotonically and cannot show the over-fitting of model "
                     "selection that the paper's Figure 4 shows.")
            add_figure(f"expected_max_test_{ck}",
                       plots.plot_expected_performance(
                           curves, which="test", colors=colors,
                           title=f"Expected MAX test score over k trials — no validation scores, selection by test ({ck})"),
                       f"Expected maximum test score among k trials, {ck} checkpoint (no validation scores: "
                       "selection by test score).")
        else:
            doc.para("**Validation scores exist for some methods only**: those are selected on validation, the "
                     "others by test score (an optimistic expected MAXIMUM); the `selection` column of "
                     "tables/expected_performance.csv says which.")
            max_methods = sorted(set(curves.loc[curves["selection"].str.startswith("max"), "method"]))
            add_figure(f"expected_test_{ck}",
                       plots.plot_expected_performance(
                           curves, which="test", colors=colors,
                           title=f"Expected test score vs random trials ({ck}); by test (MAX) for: "
                                 + ", ".join(max_methods)),
                       f"Expected test score among k trials ({ck} checkpoint); selection by test score for "
                       + ", ".join(max_methods) + ".")
        k_max = int(curves["k"].max())
        ks = sorted(k for k in {1, 5, 10, k_max} if k <= k_max)
        table_rows, units = [], []
        for (task, meth), g in curves.groupby(["task", "method"], sort=False):
            scale = percent_scale(g["mean"])
            units.append((g["metric"].iloc[0], scale))
            g = g.set_index("k")
            table_rows.append([display_task(task), meth] + [
                f"{fmt(g.loc[k, 'mean'] * scale)} ± {fmt(g.loc[k, 'std'] * scale)}" if k in g.index else ""
                for k in ks])
        doc.table(["Task", "Method", *[f"k={k}" for k in ks]], table_rows, table_id=f"expected-{ck}",
                  notes=[("Expected maximum test score" if selections == {"max test"} else "Expected test score")
                         + " (mean ± std over simulations" + units_note(units) + ")."] + notes)
    return pd.concat(frames_out, ignore_index=True) if frames_out else None


def seed_grid_block(doc: Document, m: pd.DataFrame, *, metric_by_task: dict[str, str] | None, add_figure: Any,
                     add_csv: Any) -> None:
    if not {"init_seed", "data_seed"} <= set(m.columns):
        return
    split = "val" if (m["split"] == "val").any() else "test"
    sel = m[m["split"] == split]
    ck = "best" if (sel["checkpoint"] == "best").any() else "last"
    sel = sel[sel["checkpoint"] == ck]
    made = False
    for task in task_order(sel["task"]):
        try:
            metric = resolve_metric(sel, task, metric_by_task)
        except UserError:
            continue
        tsel = sel[(sel["task"] == task) & (sel["metric"] == metric)]
        grids = {}
        for meth in method_order(tsel):
            g = tsel[tsel["method"] == meth]
            if g["init_seed"].nunique() < 2 or g["data_seed"].nunique() < 2:
                continue
            sg = seed_grid_stats(g)
            filled = sg.grid.notna()
            if filled.sum(axis=1).min() >= 2 and filled.sum(axis=0).min() >= 2:  # a crossed design, not a diagonal
                grids[meth] = sg
        if not grids:
            continue
        if not made:
            doc.heading(2, "Controlled random seeds (Figures 9, 10)")
            made = True
        scale = percent_scale(tsel["value"])
        add_figure(f"seed_grid_{task}",
                   plots.plot_seed_grid(grids, title=f"{display_task(task)}: {split} {metric} by init seed x data seed",
                                        scale=scale, metric=metric),
                   f"{display_task(task)}: {split} {metric} ({ck} checkpoint) for each initialisation seed (rows) and "
                   "data-order/dropout seed (columns), with min/mean/max/std margins.")
        rows = [[meth, fmt(g.std_fixed_init * scale), fmt(g.std_fixed_data * scale), fmt(g.std_all * scale)]
                for meth, g in grids.items()]
        doc.table(["Method", "std, init fixed (data varies)", "std, data fixed (init varies)", "std, all"], rows,
                  table_id=f"seed-grid-{task}", notes=["Figure 10: mean over the fixed seed of the std across the other."])
        add_csv(f"seed_grid_{task}", pd.concat({k: g.grid for k, g in grids.items()}, names=["method"]).reset_index())


# ------------------------------------------------------------------------------------------------
def summary_sentences(s: pd.DataFrame, degenerate: pd.DataFrame, *, baseline: str, checkpoint: str,
                      welch: bool = False, alpha: float = 0.05) -> list[tuple[str, str]]:
    """One sentence per task, the one a reader would write in a paper, generated from the numbers.

    Args:
        s: :func:`~stabletune.analysis.stats.summary_table` of one checkpoint (its ``tie_with_best`` says which
            method is best: the highest mean among methods with at least 2 scores, NaN counted as 0).
        degenerate: :func:`~stabletune.analysis.stats.degenerate_runs` of the same checkpoint.
        baseline: the method the others are tested against.
        checkpoint: ``best`` or ``last`` (named in the sentence).

    Returns:
        ``(task, sentence)`` pairs in task order; sentences use Markdown ``**bold**`` and ``code``.
    """
    out = []
    for task in dict.fromkeys(s["task"]):
        t = s[s["task"] == task].set_index("method")
        metric = t["metric"].iloc[0]
        label = score_unit_label(metric, t["scale"].iloc[0])
        nb = "\u00a0"  # no line break inside "72.13 ± 1.57 %"
        unit = f"{nb}%" if label == "%" else ""  # MCC x 100 has no unit sign: its table says "× 100"
        pts = " points" if label else ""
        ns = sorted(set(int(n) for n in t["n"]))
        runs = f"{ns[0]} runs per method" if len(ns) == 1 else f"{ns[0]}–{ns[-1]} runs per method"
        head = f"**{display_task(task)}** (test {metric}, {checkpoint} checkpoint, {runs}): "

        def score(method: str) -> str:
            r = t.loc[method]
            text = fmt(r["mean"]) + (f"{nb}±{nb}{fmt(r['std'])}" if not math.isnan(r["std"]) else "") + unit
            return text + (f", {plural(int(r['n_nan']), 'NaN run')} counted as 0" if r["n_nan"] else "")

        best = t.index[t["tie_with_best"] == "best"]
        if len(best) == 0:
            top = t["mean"].idxmax() if t["mean"].notna().any() else t.index[0]
            body = (f"too few runs to compare methods (a test needs at least 2 scores per method); highest mean: "
                    f"**{top}** {score(top)}.")
        elif best[0] == baseline:
            rivals = t.drop(index=baseline)["mean"].dropna()
            body = f"the baseline **{baseline}** scores best, {score(baseline)}; no method beats it"
            if len(rivals):
                nxt = rivals.idxmax()
                body += f" (next: `{nxt}`, {score(nxt)}, {t.loc[nxt, 'mean'] - t.loc[baseline, 'mean']:+.2f}{pts})"
            body += "."
        else:
            b = best[0]
            body = f"**{b}** scores best, {score(b)}"
            if baseline in t.index and not math.isnan(t.loc[baseline, "mean"]):
                diff = t.loc[b, "mean"] - t.loc[baseline, "mean"]
                p = t.loc[b, "p"]
                body += f", {diff:+.2f}{pts} over the baseline `{baseline}` ({score(baseline)}"
                if math.isnan(p):
                    body += "; no test: too few baseline scores)."
                else:
                    verdict = "significant" if p < alpha else "not significant"
                    body += f"; {ttest_name(welch).split(' (')[0]} {p_phrase(p)}, {verdict} at α{nb}={nb}{alpha})."
            else:
                body += f"; the baseline `{baseline}` has no scores on this task."
        d = degenerate[degenerate["task"] == task]
        bad = d[d["n_degenerate"] > 0]
        if d.empty:
            tail = ""
        elif bad.empty:
            tail = " No degenerate runs."
        else:
            listing = ", ".join(f"`{r.method}` {int(r.n_degenerate)} of {int(r.n)}" for r in bad.itertuples())
            rest = "; none for the other methods" if len(bad) < len(d) else ""
            tail = f" Degenerate runs: {listing}{rest}."
        out.append((task, head + body + tail))
    return out

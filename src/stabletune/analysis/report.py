"""The study report: the paper's tables and figures as ``report.md`` + a self-contained ``report.html``.

:func:`write_report` reads a :class:`~stabletune.analysis.frames.ResultsFrames` and writes::

    OUT/report.md            tables + figure links
    OUT/report.html          the same, figures embedded as base64 PNG, inline CSS, no external resource
    OUT/figures/*.png
    OUT/tables/*.csv         full-precision numbers behind every table

The report leads with the finding: one sentence per task generated from the numbers (best method, mean ± std,
difference to the baseline and its p-value, degenerate runs; :func:`summary_sentences`), then the main table,
then how the numbers were made (study, configuration) and the rest. Fractional scores are shown in percent in
tables, sentences and figure axes alike; no absolute path of the machine that made the report appears in it.

No torch here: the report runs anywhere pandas and matplotlib do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from stabletune.analysis import plots
from stabletune.analysis.agreement import agreement_table
from stabletune.analysis.frames import (
    ResultsFrames,
    display_task,
    method_order,
    task_order,
)
from stabletune.analysis.stats import (
    PAPER_ITERATIONS,
    resolve_metric,
    default_baseline,
    degenerate_runs,
    iteration_sweep,
    summary_table,
)
from stabletune.analysis.document import Document
from stabletune.analysis.sections import (agreement_block, degenerate_block, expected_block, n_runs, plural,
                                          seed_grid_block, status_frame, summary_block, summary_sentences, versions)
from stabletune.outputs import WriteError
from stabletune.errors import DataError, UserError


STATUSES = ("finished", "failed", "diverged", "killed")
_OURS = {"report.md": "by `stabletune report`", "report.html": "by <code>stabletune report</code>"}
"""The generator line every report carries: a report.md/report.html without it is someone else's file."""


def check_out_dir(out_dir: str | Path, *, overwrite: bool = False) -> None:
    """Refuse to write a report where it would replace a file that is not an earlier report.

    An earlier report in ``out_dir`` is replaced (rerunning a report refreshes it); a ``report.md`` or
    ``report.html`` that ``stabletune report`` did not write is only replaced with ``overwrite``.

    Raises:
        UserError: ``out_dir`` is a file, or holds such a file (without ``overwrite``).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    for name, mark in _OURS.items():
        f = out / name
        if not overwrite and f.is_file() and mark not in f.read_text(encoding="utf-8", errors="replace"):
            raise UserError(f"{f} was not written by stabletune report: not replacing it "
                            "(use --overwrite to replace it)")
    earlier = (out / "report.md").is_file()  # figures/ and tables/ are replaced whole: only an earlier report's
    for name in ("figures", "tables"):
        d = out / name
        if not overwrite and not earlier and d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise UserError(f"{d} was not written by stabletune report: not replacing it "
                            "(use --overwrite to replace it)")


# ------------------------------------------------------------------------------------------------
def write_report(
    frames: ResultsFrames,
    out_dir: str | Path,
    *,
    baseline: str | None = None,
    welch: bool = False,
    title: str | None = None,
    metric_by_task: dict[str, str] | None = None,
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the study report (paper Tables 1-4, 7 and Figures 1-18 where the frames hold the data).

    Args:
        frames: the results (only ``frames.metrics`` is required).
        out_dir: output folder (created; files of an earlier report in it are replaced).
        baseline: method every other is tested against (default: ``meta["baseline"]`` of the study, else
            ``standard_debiased`` if present, else the study's first method).
        welch: Welch's instead of Student's t-test.
        title: report title.
        metric_by_task: task -> metric (``"*"``: every task); default: the metric the task's runs were scored on
            (``runs.main_metric``), else the paper's main metric.
        alpha: significance level of the one-tailed tests.
        n_boot: bootstrap simulations per k of the expected-performance curves.
        seed: seed of the bootstrap generator.
        overwrite: replace a report.md/report.html in ``out_dir`` that is not an earlier report (see
            :func:`check_out_dir`).

    Returns:
        Paths by name: ``markdown``, ``html``, ``figure:<name>`` and ``table:<name>``.

    Raises:
        UserError: unknown baseline, unknown metric, no test results, an ``out_dir`` that is a file or holds
            someone else's report.md (see :func:`check_out_dir`).
    """
    check_out_dir(out_dir, overwrite=overwrite)
    metric_by_task = frames.metric_by_task(metric_by_task)
    m = frames.metrics
    methods = method_order(m)
    baseline = baseline or frames.meta.get("baseline") or default_baseline(methods)
    if baseline not in methods:
        raise UserError(f"unknown baseline method {baseline!r}; methods are: {', '.join(methods)}")
    colors = plots.method_colors(methods)
    checkpoints = [c for c in ("best", "last") if ((m["checkpoint"] == c) & (m["split"] == "test")).any()]
    if not checkpoints:
        raise UserError("the results hold no test-split values: nothing to report")
    for task in task_order(m["task"]):  # an unknown metric is refused before the output folder is touched
        resolve_metric(m, task, metric_by_task)
    out = Path(out_dir)
    made = [p for p in (out, *out.parents) if not p.exists()]  # removed again if the report cannot be written
    out.mkdir(parents=True, exist_ok=True)
    # Everything is written to a private folder first and moved into place at the end: a failing report leaves the
    # previous one intact, and a re-run leaves no figure of an earlier run behind (figures/ and tables/ are
    # replaced as a whole).
    stage = out / f".partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        paths = _write(frames, stage, baseline=baseline, welch=welch, title=title, metric_by_task=metric_by_task,
                       alpha=alpha, n_boot=n_boot, seed=seed, methods=methods, colors=colors,
                       checkpoints=checkpoints)
        for name in ("figures", "tables"):
            if (out / name).exists():
                shutil.rmtree(out / name)
            os.replace(stage / name, out / name)
        for name in ("report.md", "report.html"):
            os.replace(stage / name, out / name)
    except (OSError, WriteError) as exc:  # a full disk, a read-only folder: one line naming the report folder;
        shutil.rmtree(stage, ignore_errors=True)  # a previous report stays as it was, a new folder is removed
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir()
        raise WriteError(out, exc) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {k: out / v.relative_to(stage) for k, v in paths.items()}


def summary_checkpoint(checkpoints: Sequence[str]) -> str:
    """The checkpoint a report leads with: ``best`` (the paper evaluates 10 times on validation and stops early,
    Section 3), else ``last``."""
    return "best" if "best" in checkpoints else checkpoints[0]


def _results_date(frames: ResultsFrames) -> str:
    """The words " from runs finished by <the last run's finish time, to the minute>" when the runs say when they
    finished, else nothing.

    The report is a function of its results, never of the clock: the same results give the same report.md byte
    for byte, whether read from the study database or from its export (`stabletune study export --format
    tables`), which is how a committed report is checked against its committed export.
    """
    runs = frames.runs
    if runs is None or "finished_at" not in runs.columns:
        return ""
    times = pd.to_datetime(runs["finished_at"], utc=True, errors="coerce", format="ISO8601").dropna()
    return f" from runs finished by {times.max().strftime('%Y-%m-%d %H:%M UTC')}" if len(times) else ""


def _display_path(value: Any) -> Any:
    """A path as the report shows it: never an absolute path of the machine that made the report (its name only);
    relative paths (e.g. the study's database beside the study file) as they are."""
    if isinstance(value, str) and value and Path(value).is_absolute():
        return Path(value).name
    return value


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing a name that is not one plain file name (the frames already refuse task names
    that could be: this is the second lock on the door)."""
    if Path(name).name != name or name in (".", "..") or "\\" in name:
        raise DataError(f"refusing to write {name!r}: not a plain file name inside {folder}")
    return folder / name


def _write(frames: ResultsFrames, root: Path, *, baseline: str, welch: bool, title: str | None,
           metric_by_task: dict[str, str] | None, alpha: float, n_boot: int, seed: int, methods: list[str],
           colors: dict[str, str], checkpoints: list[str]) -> dict[str, Path]:
    m = frames.metrics
    fig_dir, tab_dir = root / "figures", root / "tables"
    for d in (fig_dir, tab_dir):
        d.mkdir(parents=True, exist_ok=True)
    study = frames.meta.get("study")
    title = title or str(frames.meta.get("title") or (f"Study {study}" if study else "stabletune study report"))
    paths: dict[str, Path] = {}
    doc = Document()

    def add_figure(name: str, fig: Any, caption: str) -> None:
        path = plots.save_figure(fig, _inside(fig_dir, f"{name}.png"))
        paths[f"figure:{name}"] = path
        doc.figure(path, caption)

    def add_csv(name: str, frame: pd.DataFrame) -> None:
        path = _inside(tab_dir, f"{name}.csv")
        frame.to_csv(path, index=False)
        paths[f"table:{name}"] = path

    summaries = {ck: summary_table(m, metric_by_task=metric_by_task, baseline=baseline, welch=welch, checkpoint=ck,
                                   alpha=alpha) for ck in checkpoints}
    degenerate = {ck: degenerate_runs(m, metric_by_task=metric_by_task, checkpoint=ck) for ck in checkpoints}
    main_ck = summary_checkpoint(checkpoints)

    # -- the finding first: one sentence per task, then the main table -------------------------------
    doc.heading(1, title)
    doc.summary([(f"summary-{task}", text) for task, text in
                 summary_sentences(summaries[main_ck], degenerate[main_ck], baseline=baseline, checkpoint=main_ck,
                                   welch=welch, alpha=alpha)])
    doc.heading(2, f"Test performance, {main_ck} checkpoint (paper Tables 1, 2, 4, 7)")
    summary_block(doc, summaries[main_ck], ck=main_ck, baseline=baseline, welch=welch, alpha=alpha, main=True)

    # -- how the numbers were made ----------------------------------------------------------------------
    source = _display_path(frames.meta.get("source"))
    study_file = _display_path(frames.meta.get("study_file"))
    where = (f" Results: `{source}`" + (f", beside the study file `{study_file}`" if study_file else "") + "."
             if source else "")
    doc.para(f"Generated by `stabletune report`{_results_date(frames)}.{where}")
    doc.heading(2, "Study")
    tasks = task_order(m["task"])
    n_nan = int(m["value"].isna().sum())
    items = [
        f"**{n_runs(frames)} runs**: {plural(len(methods), 'method')} ({', '.join(f'`{x}`' for x in methods)}) "
        f"on {plural(len(tasks), 'task')} ({', '.join(display_task(t) for t in tasks)}).",
        f"Checkpoints with test results: {', '.join(checkpoints)}. Splits present: "
        f"{', '.join(sorted(m['split'].unique()))}.",
        f"NaN metric values: {n_nan} (kept; see the notes under each table).",
    ]
    for key, value in frames.meta.items():
        if (key not in ("config", "versions", "title", "source", "study_file", "n_runs", "n_nan_values")
                and not isinstance(value, (dict, list))):
            items.append(f"{key}: `{_display_path(value)}`")
    doc.bullets(items)
    status = status_frame(frames)
    if status is not None:
        counts = status.groupby(["method", "task"])["status"].value_counts().unstack(fill_value=0)
        cols = [s for s in STATUSES if s in counts.columns] + sorted(set(counts.columns) - set(STATUSES))
        bad = int(counts.drop(columns=["finished"], errors="ignore").to_numpy().sum())
        doc.para(f"Run status: {bad} run(s) failed, diverged or were killed.")
        rows = [[meth, display_task(task), *[int(counts.loc[(meth, task), c]) for c in cols]]
                for meth, task in counts.index]
        doc.table(["Method", "Task", *cols], rows, table_id="run-status")
        add_csv("run_status", counts.reset_index())
    else:
        doc.para("No run status recorded in these results (e.g. read from a CSV): failed, diverged or killed "
                 "runs, if any, are not visible here.")
    if frames.meta.get("config"):
        doc.para("Study configuration:")
        doc.code(str(frames.meta["config"]))

    # -- Tables 1/2/4/7 ----------------------------------------------------------------------------
    for ck in checkpoints:
        add_csv(f"summary_{ck}", summaries[ck])
    others = [ck for ck in checkpoints if ck != main_ck]
    if others:
        doc.heading(2, "Test performance, other checkpoints")
        for ck in others:
            doc.heading(3, f"{ck.capitalize()} checkpoint")
            summary_block(doc, summaries[ck], ck=ck, baseline=baseline, welch=welch, alpha=alpha)

    # -- degenerate runs ---------------------------------------------------------------------------
    doc.heading(2, "Degenerate runs (paper Section 4, Table 3)")
    doc.para("A run is degenerate when its test score does not beat the majority-class baseline of the test "
             "labels it was scored on, or when its score is NaN (a constant predictor). Each run stores that "
             "baseline (column `majority_baseline`); it depends on the split: on stabletune's `paper-small` RTE "
             "test half the majority predictor scores 73/138 = 52.9 %, on the official code's half 73/139 = 52.5 % "
             "(Table 3). Only results without it (imported without labels) fall back to Table 3's test row, "
             "rounded to 0.1 %, so scores within 0.05 points above it count as not beating it.")
    for ck in checkpoints:
        add_csv(f"degenerate_{ck}", degenerate[ck])
        degenerate_block(doc, degenerate[ck], ck=ck)

    # -- agreement between seeds (per-example predictions; absent from results stored without them) ---------
    if frames.predictions is not None:
        agreement = pd.concat([agreement_table(frames.predictions, checkpoint=ck) for ck in checkpoints],
                              ignore_index=True)
        add_csv("agreement", agreement)
        agreement_block(doc, agreement, checkpoints=checkpoints)

    # -- box plots ---------------------------------------------------------------------------------
    doc.heading(2, "Distribution over random seeds (Figures 2, 5, 13)")
    for ck in checkpoints:
        add_figure(f"boxplot_{ck}", plots.plot_boxplots(m, metric_by_task=metric_by_task, checkpoint=ck,
                                                         colors=colors),
                   f"Test score over random seeds, {ck} checkpoint (NaN runs listed under the method).")

    # -- expected performance ----------------------------------------------------------------------
    doc.heading(2, "Expected performance vs number of random trials (Figures 4, 12)")
    expected = expected_block(doc, m, checkpoints, metric_by_task=metric_by_task, n_boot=n_boot, seed=seed,
                               colors=colors, add_figure=add_figure)
    if expected is not None:
        add_csv("expected_performance", expected)

    # -- curves ----------------------------------------------------------------------------------
    if frames.train_loss is not None:
        doc.heading(2, "Training loss (Figures 3, 6, 11)")
        add_figure("train_loss", plots.plot_curves(frames.train_loss, y="loss", ylabel="Training loss",
                                                   title="Training loss: mean (line) and min-max range over seeds",
                                                   colors=colors),
                   "Training loss over steps: mean across seeds (line) and range (band).")
    if frames.evals is not None:
        ev = frames.evals
        parts = []
        for t in task_order(ev["task"]):
            try:
                parts.append(ev[(ev["task"] == t) & (ev["metric"] == resolve_metric(ev, t, metric_by_task))])
            except UserError as exc:  # an optional figure: say why it is missing, do not fail the report
                doc.para(f"Validation curve of {display_task(t)} skipped: {exc}")
        ev = pd.concat(parts) if parts else pd.DataFrame()
        if not ev.empty:
            doc.heading(2, "Validation score during training")
            add_figure("val_curves", plots.plot_curves(ev, y="value", ylabel="Validation score",
                                                       title="Validation score: mean and min-max range over seeds",
                                                       colors=colors, score=True),
                       "Validation main metric at each evaluation: mean across seeds and range.")
    try:
        sweep = iteration_sweep(m, metric_by_task=metric_by_task)
    except UserError as exc:
        sweep = None
        doc.para(f"Iteration-sweep figure skipped: {exc}")
    if sweep is not None:
        sw, split, sweep_ck = sweep
        doc.heading(2, "Score vs training iterations (Figures 8, 14)")
        add_csv("iteration_sweep", sw)
        add_figure("iteration_sweep", plots.plot_iteration_sweep(sw, split=split),
                   f"{'Validation' if split == 'val' else 'Test (no validation scores)'} score, {sweep_ck} checkpoint, "
                   "against the number of training iterations: mean and min-max range over seeds.")
    if frames.param_distance is not None:
        doc.heading(2, "L2 distance to the initial parameters (Figures 7, 15-18)")
        for task in task_order(frames.param_distance["task"]):
            add_figure(f"param_distance_{task}", plots.plot_param_distance(frames.param_distance, task=task,
                                                                           colors=colors),
                       f"{display_task(task)}: L2 distance of each block to its value at the start of fine-tuning.")
    seed_grid_block(doc, m, metric_by_task=metric_by_task, add_figure=add_figure, add_csv=add_csv)

    # -- Figure 1 ----------------------------------------------------------------------------------
    doc.heading(2, "Adam bias correction (Figure 1)")
    doc.para("Ratio of the update without to the update with bias correction, (1-β1^t)/sqrt(1-β2^t), for "
             "β1=0.9, β2=0.999. Vertical lines: iterations of 3 epochs at batch 32 ("
             + ", ".join(f"{k} {v}" for k, v in PAPER_ITERATIONS.items()) + ").")
    add_figure("bias_ratio", plots.plot_bias_ratio(), "Adam bias-correction ratio over training iterations.")

    # -- software ----------------------------------------------------------------------------------
    doc.heading(2, "Software")
    doc.bullets([f"{k}: {v}" for k, v in versions(frames.meta.get("versions")).items()])

    md_path, html_path = root / "report.md", root / "report.html"
    md_path.write_text(doc.markdown(root), encoding="utf-8")
    html_path.write_text(doc.html(title), encoding="utf-8")
    paths["markdown"], paths["html"] = md_path, html_path
    return paths

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

import base64
import html
import importlib.metadata
import math
import contextlib
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from stabletune.analysis import plots
from stabletune.analysis.agreement import agreement_table
from stabletune.analysis.frames import (
    ResultsFrames,
    display_task,
    main_values,
    method_order,
    run_key_columns,
    task_order,
)
from stabletune.analysis.stats import (
    PAPER_ITERATIONS,
    resolve_metric,
    default_baseline,
    degenerate_runs,
    expected_max_performance,
    iteration_sweep,
    percent_scale,
    score_unit_label,
    seed_grid_stats,
    summary_table,
    ttest_name,
)
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
# a tiny document model rendered to Markdown and HTML from the same blocks
# ------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class _Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], *, table_id: str, notes: Sequence[str] = (),
              main: bool = False) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows], table_id, list(notes), main)))

    def summary(self, items: Sequence[tuple[str, str]]) -> None:
        """The findings: (html id, sentence) pairs, shown first."""
        self.blocks.append(("summary", list(items)))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("fig", (path, caption)))

    # -- Markdown ----------------------------------------------------------------------------------
    def markdown(self, root: Path) -> str:
        out: list[str] = []
        for kind, payload in self.blocks:
            if kind == "h":
                out.append("#" * payload[0] + " " + payload[1])
            elif kind == "p":
                out.append(payload)
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in payload))
            elif kind == "summary":
                out.append("\n".join(f"- {text}" for _, text in payload))
            elif kind == "code":
                out.append("```\n" + payload.rstrip("\n") + "\n```")
            elif kind == "table":
                header, rows, _, notes, _ = payload

                def md(c: Any) -> str:
                    text = (c.text if isinstance(c, Cell) else str(c)).replace("|", "\\|")
                    return f"**{text}**" if isinstance(c, Cell) and c.bold and text else text

                lines = ["| " + " | ".join(md(h) for h in header) + " |",
                         "|" + "|".join("---" for _ in header) + "|"]
                lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
                lines += [""] + [f"{n}  " for n in notes] if notes else []
                out.append("\n".join(lines).rstrip())
            elif kind == "fig":
                path, caption = payload
                out.append(f"![{caption}]({path.relative_to(root).as_posix()})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    # -- HTML --------------------------------------------------------------------------------------
    def html(self, title: str) -> str:
        esc = html.escape
        body: list[str] = []
        for kind, payload in self.blocks:
            if kind == "h":
                body.append(f"<h{payload[0]}>{esc(payload[1])}</h{payload[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline_md(payload)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline_md(i)}</li>" for i in payload) + "</ul>")
            elif kind == "summary":
                body.append('<ul class="summary">' + "".join(f'<li id="{esc(i)}">{_inline_md(t)}</li>'
                                                           for i, t in payload) + "</ul>")
            elif kind == "code":
                body.append(f"<pre>{esc(payload)}</pre>")
            elif kind == "table":
                header, rows, table_id, notes, main = payload

                def td(c: Any, tag: str = "td") -> str:
                    text = esc(c.text if isinstance(c, Cell) else str(c))
                    return f"<{tag}>{'<strong>' + text + '</strong>' if isinstance(c, Cell) and c.bold else text}</{tag}>"

                rows_html = "".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in rows)
                # wide tables scroll inside their box (phones), the page itself never scrolls sideways
                body.append(f'<div class="scroll"><table id="{esc(table_id)}" class="results{" main" if main else ""}">'
                            "<thead><tr>" + "".join(td(h, "th") for h in header)
                            + f"</tr></thead><tbody>{rows_html}</tbody></table></div>")
                if notes:
                    body.append('<div class="notes">' + "".join(f"<p>{_inline_md(n)}</p>" for n in notes) + "</div>")
            elif kind == "fig":
                path, caption = payload
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{esc(caption)}</figcaption></figure>")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n"
        )


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;margin:1em auto;padding:0 1em;
color:#222;line-height:1.4}
h1{border-bottom:2px solid #444;font-size:1.6em;margin:0.3em 0 0.5em}h2{border-bottom:1px solid #bbb;margin-top:2em}
h2{font-size:1.25em}
ul.summary{padding-left:1.2em;margin:0.5em 0 0.8em}ul.summary li{margin:0.25em 0}
ul.summary+h2{margin-top:0.8em}
.scroll{overflow-x:auto;max-width:100%}
table.results{border-collapse:collapse;margin:0.6em 0;font-size:0.9em}
table.results th,table.results td{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}
table.results th{background:#f0f0f0}table.results td:first-child,table.results th:first-child{text-align:left}
table.results tr:nth-child(even){background:#fafafa}
.notes p{font-size:0.85em;color:#555;margin:0.2em 0}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.9em;color:#444}
pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:0.85em}code{background:#f3f3f3}
"""


def _inline_md(text: str) -> str:
    """Escape, then render the only inline Markdown this report uses: **bold** and `code`."""
    out, bold, code = [], False, False
    i = 0
    text = html.escape(text)
    while i < len(text):
        if text.startswith("**", i) and not code:
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
            i += 2
        elif text[i] == "`":
            out.append("</code>" if code else "<code>")
            code = not code
            i += 1
        else:
            out.append(text[i])
            i += 1
    if bold:
        out.append("</strong>")
    if code:
        out.append("</code>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------
def _units_note(pairs: Any) -> str:
    """", in %" / ", × 100" (MCC, correlations) / both, for the ``(metric, scale)`` pairs a table shows."""
    labels = {score_unit_label(m, sc) for m, sc in pairs} - {""}
    if len(labels) == 2:
        return ", × 100 (accuracy and F1: in %)"
    return f", in {labels.pop()}" if labels == {"%"} else f", {labels.pop()}" if labels else ""


def _fmt(x: float, nd: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _p_phrase(p: float) -> str:
    """``p < 0.0001`` or ``p = 0.0123`` for a sentence."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


def _versions(meta_versions: Any) -> dict[str, str]:
    versions: dict[str, str] = {"python": platform.python_version()}
    for pkg in ("stabletune", "numpy", "pandas", "scipy", "matplotlib"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    if isinstance(meta_versions, dict):
        versions.update({str(k): str(v) for k, v in meta_versions.items()})
    return versions


def _status_frame(frames: ResultsFrames) -> pd.DataFrame | None:
    if frames.runs is not None:
        return frames.runs
    if "status" in frames.metrics.columns:
        keys = ["method", "task", *run_key_columns(frames.metrics)]
        return frames.metrics.drop_duplicates(keys)[keys + ["status"]]
    return None


def _n_runs(frames: ResultsFrames) -> int:
    if frames.runs is not None:
        return len(frames.runs)
    keys = ["method", "task", *run_key_columns(frames.metrics)]
    return len(frames.metrics.drop_duplicates(keys))


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
    doc = _Doc()

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
    _summary_block(doc, summaries[main_ck], ck=main_ck, baseline=baseline, welch=welch, alpha=alpha, main=True)

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
        f"**{_n_runs(frames)} runs**: {_plural(len(methods), 'method')} ({', '.join(f'`{x}`' for x in methods)}) "
        f"on {_plural(len(tasks), 'task')} ({', '.join(display_task(t) for t in tasks)}).",
        f"Checkpoints with test results: {', '.join(checkpoints)}. Splits present: "
        f"{', '.join(sorted(m['split'].unique()))}.",
        f"NaN metric values: {n_nan} (kept; see the notes under each table).",
    ]
    for key, value in frames.meta.items():
        if (key not in ("config", "versions", "title", "source", "study_file", "n_runs", "n_nan_values")
                and not isinstance(value, (dict, list))):
            items.append(f"{key}: `{_display_path(value)}`")
    doc.bullets(items)
    status = _status_frame(frames)
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
            _summary_block(doc, summaries[ck], ck=ck, baseline=baseline, welch=welch, alpha=alpha)

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
        _degenerate_block(doc, degenerate[ck], ck=ck)

    # -- agreement between seeds (per-example predictions; absent from results stored without them) ---------
    if frames.predictions is not None:
        agreement = pd.concat([agreement_table(frames.predictions, checkpoint=ck) for ck in checkpoints],
                              ignore_index=True)
        add_csv("agreement", agreement)
        _agreement_block(doc, agreement, checkpoints=checkpoints)

    # -- box plots ---------------------------------------------------------------------------------
    doc.heading(2, "Distribution over random seeds (Figures 2, 5, 13)")
    for ck in checkpoints:
        add_figure(f"boxplot_{ck}", plots.plot_boxplots(m, metric_by_task=metric_by_task, checkpoint=ck,
                                                         colors=colors),
                   f"Test score over random seeds, {ck} checkpoint (NaN runs listed under the method).")

    # -- expected performance ----------------------------------------------------------------------
    doc.heading(2, "Expected performance vs number of random trials (Figures 4, 12)")
    expected = _expected_block(doc, m, checkpoints, metric_by_task=metric_by_task, n_boot=n_boot, seed=seed,
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
    _seed_grid_block(doc, m, metric_by_task=metric_by_task, add_figure=add_figure, add_csv=add_csv)

    # -- Figure 1 ----------------------------------------------------------------------------------
    doc.heading(2, "Adam bias correction (Figure 1)")
    doc.para("Ratio of the update without to the update with bias correction, (1-β1^t)/sqrt(1-β2^t), for "
             "β1=0.9, β2=0.999. Vertical lines: iterations of 3 epochs at batch 32 ("
             + ", ".join(f"{k} {v}" for k, v in PAPER_ITERATIONS.items()) + ").")
    add_figure("bias_ratio", plots.plot_bias_ratio(), "Adam bias-correction ratio over training iterations.")

    # -- software ----------------------------------------------------------------------------------
    doc.heading(2, "Software")
    doc.bullets([f"{k}: {v}" for k, v in _versions(frames.meta.get("versions")).items()])

    md_path, html_path = root / "report.md", root / "report.html"
    md_path.write_text(doc.markdown(root), encoding="utf-8")
    html_path.write_text(doc.html(title), encoding="utf-8")
    paths["markdown"], paths["html"] = md_path, html_path
    return paths


# ------------------------------------------------------------------------------------------------
def _summary_block(doc: _Doc, s: pd.DataFrame, *, ck: str, baseline: str, welch: bool, alpha: float,
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
            val = _fmt(r["mean"]) + (f" ± {_fmt(r['std'])}" if not math.isnan(r["std"]) else "")
            row.append(Cell(f"{val} ({n_text})", bold=r["tie_with_best"] in ("best", "tie")))
            p_text = "baseline" if meth == baseline else _fmt_p(r["p"]) + (" *" if r["significant"] else "")
            row.append(p_text)
        rows.append(row)
    notes = [
        f"Mean ± standard deviation (ddof=1) over seeds of the test score at the {ck} checkpoint"
        + _units_note(zip(s["metric"], s["scale"])) + ".",
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


def _degenerate_block(doc: _Doc, d: pd.DataFrame, *, ck: str) -> None:
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
        value = _fmt(low, 4) if not low < high else f"{_fmt(low, 4)}–{_fmt(high, 4)}"
        thr.append(f"{display_task(t)} {r['metric']} ≤ {value} ({r['threshold_source']})")
    notes = ["Thresholds: " + "; ".join(thr) + ". \"constant\": NaN score (constant predictions), included in the count."]
    doc.para(f"{ck.capitalize()} checkpoint:")
    doc.table(header, rows, table_id=f"degenerate-{ck}", notes=notes)


def _agreement_block(doc: _Doc, a: pd.DataFrame, *, checkpoints: list[str]) -> None:
    doc.heading(2, "Agreement between seeds (per-example test predictions)")
    doc.para("Two seeds can score alike and still predict different examples (Du & Nguyen, ACL 2023). "
             "Disagreement: over every pair of runs of a method, the fraction of test examples the two predict "
             "differently (regression: the mean absolute difference of their predicted scores, in label units). "
             "Fleiss' kappa: the runs as raters of the test examples (1 = all seeds alike; 0 = chance agreement "
             "given the class frequencies; classification only). Runs are compared within one split seed.")
    for ck in checkpoints:
        rows = [[r.method, display_task(r.task), r.split_seed, r.n_runs, r.n_examples,
                 (_fmt(100 * r.disagreement) + " %") if r.kind == "class" else _fmt(r.disagreement, 3),
                 _fmt(r.fleiss_kappa, 3)]
                for r in a[a["checkpoint"] == ck].itertuples()]
        if rows:
            doc.table(["Method", "Task", "Split seed", "Runs", "Examples", "Disagreement", "Fleiss' κ"], rows,
                      table_id=f"agreement-{ck}", notes=[f"{ck} checkpoint."])


def _expected_block(doc: _Doc, m: pd.DataFrame, checkpoints: list[str], *, metric_by_task: dict[str, str] | None,
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
                f"{_fmt(g.loc[k, 'mean'] * scale)} ± {_fmt(g.loc[k, 'std'] * scale)}" if k in g.index else ""
                for k in ks])
        doc.table(["Task", "Method", *[f"k={k}" for k in ks]], table_rows, table_id=f"expected-{ck}",
                  notes=[("Expected maximum test score" if selections == {"max test"} else "Expected test score")
                         + " (mean ± std over simulations" + _units_note(units) + ")."] + notes)
    return pd.concat(frames_out, ignore_index=True) if frames_out else None


def _seed_grid_block(doc: _Doc, m: pd.DataFrame, *, metric_by_task: dict[str, str] | None, add_figure: Any,
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
        rows = [[meth, _fmt(g.std_fixed_init * scale), _fmt(g.std_fixed_data * scale), _fmt(g.std_all * scale)]
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
            text = _fmt(r["mean"]) + (f"{nb}±{nb}{_fmt(r['std'])}" if not math.isnan(r["std"]) else "") + unit
            return text + (f", {_plural(int(r['n_nan']), 'NaN run')} counted as 0" if r["n_nan"] else "")

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
                    body += f"; {ttest_name(welch).split(' (')[0]} {_p_phrase(p)}, {verdict} at α{nb}={nb}{alpha})."
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

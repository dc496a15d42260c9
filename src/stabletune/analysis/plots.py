"""Figures of the paper from the results frames (matplotlib, Agg canvas; no pyplot, no global state).

Each function returns a :class:`matplotlib.figure.Figure`; :func:`save_figure` writes it as PNG.
Figures: 1 (bias ratio), 2/5/13 (box plots), 3/6/11 (training loss mean and range), 4/12 (expected
performance vs random trials), 7/15-18 (L2 distance to init per block), 8/14 (score vs iterations),
9/10 (controlled seeds).

Units: a fractional score (accuracy, F1, MCC, correlation in [-1, 1]) is drawn x 100, as every table of the
report shows it (:func:`~stabletune.analysis.stats.percent_scale`, decided per task panel like the tables); the axis
label says "(%)" for accuracy and F1 and "(× 100)" for MCC and correlations (not percentages). Counts (trials, steps, iterations) get integer ticks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from stabletune.outputs import staged_file
from stabletune.analysis.frames import display_task, main_values, method_order, task_order
from stabletune.analysis.stats import (PAPER_ITERATIONS, SeedGrid, bias_correction_ratio, percent_scale,
                                      resolve_metric, score_unit_label)

_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf"]


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A stable colour per method (study order), shared by every figure of a report."""
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(methods)}


def _figure(n_panels: int, *, ncols: int = 4, panel: tuple[float, float] = (3.6, 3.0)) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(max(panel[0] * ncols, 6.4), panel[1] * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def score_unit(values: object, metric: str | None) -> tuple[float, str]:
    """(scale, axis-label suffix) of scores of ``metric``: fractions are drawn x 100, labelled " (%)" for accuracy
    and F1 and " (× 100)" for MCC and correlations; values already x 100 are drawn as they are, with no suffix."""
    scale = percent_scale(values)
    label = score_unit_label(metric, scale)
    return scale, f" ({label})" if label else ""


def _metric_of(df: pd.DataFrame) -> str | None:
    return str(df["metric"].iloc[0]) if "metric" in df.columns and len(df) else None


def _integer_x(ax) -> None:
    """Integer ticks on an x axis that counts (trials, steps, iterations): never 2.5 trials."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG (parent folders created), staged: a failed write leaves no half-written file
    (:mod:`stabletune.outputs`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


# ------------------------------------------------------------------------------------------------
def plot_bias_ratio(
    *,
    beta1: float = 0.9,
    beta2: float = 0.999,
    iterations: Mapping[str, int] = PAPER_ITERATIONS,
    t_max: int | None = None,
) -> Figure:
    """Figure 1: biased / bias-corrected Adam update ratio over training iterations (log x axis).

    Vertical lines mark ``iterations`` (default: RTE, MRPC, STS-B, CoLA, MNLI at batch 32 x 3 epochs).
    """
    top = max([t_max or 0, *(2 * v for v in iterations.values()), 10_000])
    t = np.unique(np.round(np.logspace(0, math.log10(top), 600)))
    fig, (ax,) = _figure(1, panel=(6.0, 3.6))
    ax.plot(t, bias_correction_ratio(t, beta1, beta2), color="black", lw=1.8,
            label=r"$(1-\beta_1^t)/\sqrt{1-\beta_2^t}$")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    for i, (name, it) in enumerate(sorted(iterations.items(), key=lambda kv: kv[1])):
        color = _PALETTE[(i + 1) % len(_PALETTE)]
        ax.axvline(it, color=color, ls="--", lw=1.2, label=f"{name} ({it:,} it.)")
    ax.set_xscale("log")
    ax.set_xlabel("Training iterations t (log scale)")
    ax.set_ylabel("Bias ratio (biased / unbiased update)")
    ax.set_title(rf"Adam bias correction ratio, $\beta_1$={beta1}, $\beta_2$={beta2}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


# ------------------------------------------------------------------------------------------------
def plot_boxplots(
    metrics: pd.DataFrame,
    *,
    metric_by_task: dict[str, str] | None = None,
    checkpoint: str = "last",
    split: str = "test",
    colors: Mapping[str, str] | None = None,
) -> Figure:
    """Figures 2, 5, 13: distribution over seeds of each method's score, one panel per task.

    NaN scores (constant predictors) cannot be drawn; their number is printed under the method's name.
    """
    sel = metrics[(metrics["checkpoint"] == checkpoint) & (metrics["split"] == split)]
    tasks = task_order(sel["task"])
    colors = colors or method_colors(method_order(metrics))
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks):
        metric = resolve_metric(sel, task, metric_by_task)
        scale, unit = score_unit(sel.loc[(sel["task"] == task) & (sel["metric"] == metric), "value"], metric)
        data, labels, cols = [], [], []
        for method in method_order(sel[sel["task"] == task]):
            x = main_values(sel, task=task, method=method, metric=metric, checkpoint=checkpoint,
                            split=split).to_numpy(dtype=float)
            n_nan = int(np.isnan(x).sum())
            data.append(x[~np.isnan(x)] * scale)
            labels.append(f"{method}\nn={len(x)}" + (f", {n_nan} NaN" if n_nan else ""))
            cols.append(colors.get(method, "grey"))
        bp = ax.boxplot(data, patch_artist=True, widths=0.6, medianprops={"color": "black"})
        for patch, c in zip(bp["boxes"], cols):
            patch.set_facecolor(c)
            patch.set_alpha(0.55)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{display_task(task)} ({split} {metric}, {checkpoint})")
        ax.set_ylabel(f"{split.capitalize()} {metric}{unit}")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Distribution over random seeds, {checkpoint} checkpoint")
    return fig


# ------------------------------------------------------------------------------------------------
def plot_curves(
    df: pd.DataFrame,
    *,
    y: str,
    ylabel: str,
    title: str,
    x: str = "step",
    colors: Mapping[str, str] | None = None,
    score: bool = False,
) -> Figure:
    """Figures 3, 6, 11 (training loss) and validation curves: mean over seeds (line) and min-max range (band).

    Args:
        df: ``method, task, seed, <x>, <y>``; one panel per task, one line per method.
        score: ``y`` is a score: drawn in % when fractional (not for a loss).
    """
    tasks = task_order(df["task"])
    colors = colors or method_colors(method_order(df))
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks):
        tdf = df[df["task"] == task]
        scale, unit = score_unit(tdf[y], _metric_of(tdf)) if score else (1.0, "")
        for method in method_order(tdf):
            g = tdf[tdf["method"] == method].groupby(x)[y].agg(["mean", "min", "max", "count"])
            g[["mean", "min", "max"]] *= scale
            c = colors.get(method, "grey")
            n_seeds = tdf.loc[tdf["method"] == method, "seed"].nunique()
            ax.plot(g.index, g["mean"], color=c, lw=1.5, label=f"{method} ({n_seeds} seeds)")
            ax.fill_between(g.index, g["min"], g["max"], color=c, alpha=0.2, lw=0)
        ax.set_title(display_task(task))
        ax.set_xlabel(x.replace("_", " ").capitalize())
        ax.set_ylabel(ylabel + unit)
        _integer_x(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------
def plot_expected_performance(
    curves: pd.DataFrame,
    *,
    which: str = "test",
    title: str,
    ylabel: str | None = None,
    colors: Mapping[str, str] | None = None,
) -> Figure:
    """Figures 4 (``which="test"``) and 12 (``which="val"``): expected score over the number of random trials.

    Args:
        curves: ``task, method, metric, k, mean, std, val_mean, val_std`` (from
            :func:`~stabletune.analysis.stats.expected_max_performance`); solid line mean, band +- std.
    """
    mean_col, std_col = ("mean", "std") if which == "test" else ("val_mean", "val_std")
    tasks = task_order(curves["task"])
    colors = colors or method_colors(method_order(curves))
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks):
        tdf = curves[curves["task"] == task]
        scale, unit = score_unit(tdf[mean_col], _metric_of(tdf))
        tdf = tdf.assign(**{mean_col: tdf[mean_col] * scale, std_col: tdf[std_col] * scale})
        for method in method_order(tdf):
            g = tdf[tdf["method"] == method].sort_values("k")
            c = colors.get(method, "grey")
            ax.plot(g["k"], g[mean_col], color=c, lw=1.5, label=method)
            ax.fill_between(g["k"], g[mean_col] - g[std_col], g[mean_col] + g[std_col], color=c, alpha=0.2, lw=0)
        if len(tdf):  # keep every mean curve readable when a +-std band is very wide (degenerate runs)
            lo = tdf[mean_col].min()
            hi = max(tdf[mean_col].max(), np.nanquantile(tdf[mean_col] + tdf[std_col], 0.9))
            pad = 0.1 * (hi - lo) if hi > lo else 0.01 * scale
            ax.set_ylim(lo - pad, hi + pad)
        metric = tdf["metric"].iloc[0] if "metric" in tdf.columns and len(tdf) else ""
        ax.set_title(display_task(task))
        ax.set_xlabel("Number of random trials k")
        _integer_x(ax)
        by_test = "selection" in tdf.columns and len(tdf) and str(tdf["selection"].iloc[0]).startswith("max")
        ax.set_ylabel((ylabel or f"Expected {'max ' if by_test else ''}{'test' if which == 'test' else 'validation'} "
                       f"{metric}") + unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------
def _block_sort_key(block: object) -> tuple:
    s = str(block)
    digits = "".join(ch for ch in s if ch.isdigit())
    return (0 if s.startswith("emb") else 2 if not digits else 1, int(digits) if digits else 0, s)


def plot_param_distance(
    df: pd.DataFrame, *, task: str, colors: Mapping[str, str] | None = None
) -> Figure:
    """Figures 7, 15-18: L2 distance to the initial parameters over steps, one panel per block.

    Args:
        df: ``method, task, seed, step, block, distance``; lines are means over seeds, bands min-max.
    """
    tdf = df[df["task"] == task]
    blocks = sorted(tdf["block"].unique(), key=_block_sort_key)
    colors = colors or method_colors(method_order(df))
    fig, axes = _figure(len(blocks), ncols=min(6, len(blocks)), panel=(2.8, 2.4))
    for ax, block in zip(axes, blocks):
        bdf = tdf[tdf["block"] == block]
        for method in method_order(bdf):
            g = bdf[bdf["method"] == method].groupby("step")["distance"].agg(["mean", "min", "max"])
            c = colors.get(method, "grey")
            ax.plot(g.index, g["mean"], color=c, lw=1.3, label=method)
            ax.fill_between(g.index, g["min"], g["max"], color=c, alpha=0.2, lw=0)
        ax.set_title(str(block), fontsize=9)
        ax.set_xlabel("Step", fontsize=8)
        _integer_x(ax)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if axes:
        axes[0].set_ylabel("L2 distance to init")
        axes[0].legend(fontsize=6)
    fig.suptitle(f"{display_task(task)}: L2 distance to the parameters at the start of fine-tuning")
    return fig


# ------------------------------------------------------------------------------------------------
def plot_iteration_sweep(
    sweep: pd.DataFrame, *, split: str, ylabel: str = "score", colors: Mapping[str, str] | None = None
) -> Figure:
    """Figures 8, 14: score (mean, min-max band over seeds) against the number of training iterations."""
    tasks = task_order(sweep["task"])
    groups = list(dict.fromkeys(sweep["group"]))
    colors = colors or method_colors(groups)
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks):
        tdf = sweep[sweep["task"] == task]
        scale, unit = score_unit(tdf["value"], _metric_of(tdf))
        for group in groups:
            g = tdf[tdf["group"] == group].groupby("iterations")["value"].agg(["mean", "min", "max"]) * scale
            if g.empty:
                continue
            c = colors.get(group, "grey")
            ax.plot(g.index, g["mean"], "o-", color=c, lw=1.5, ms=3, label=group)
            ax.fill_between(g.index, g["min"], g["max"], color=c, alpha=0.2, lw=0)
        ax.set_title(display_task(task))
        ax.set_xlabel("Training iterations")
        _integer_x(ax)
        ax.set_ylabel(f"{'Validation' if split == 'val' else 'Test'} {ylabel}{unit}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{'Validation' if split == 'val' else 'Test'} score vs number of training iterations")
    return fig


# ------------------------------------------------------------------------------------------------
def plot_seed_grid(grids: Mapping[str, SeedGrid], *, title: str, scale: float = 1.0,
                   metric: str | None = None) -> Figure:
    """Figures 9 and 10: heat map of scores over init seed x data seed with min/mean/max/std margins.

    Args:
        grids: method -> :class:`~stabletune.analysis.stats.SeedGrid`, one heat map each.
        scale: multiply the numbers and the colour scale (100 for fractions).
        metric: names the colour bar's unit (:func:`~stabletune.analysis.stats.score_unit_label`).
    """
    fig, axes = _figure(len(grids), ncols=2, panel=(6.4, 5.4))
    values = np.concatenate([g.grid.to_numpy().ravel() for g in grids.values()]) * scale
    vmin, vmax = np.nanmin(values), np.nanmax(values)
    for ax, (method, sg) in zip(axes, grids.items()):
        g = sg.grid.to_numpy(dtype=float) * scale
        r, c = g.shape
        full = np.full((r + 4, c + 4), np.nan)
        full[:r, :c] = g
        full[:r, c:c + 3] = sg.by_init[["min", "mean", "max"]].to_numpy() * scale
        full[r:r + 3, :c] = sg.by_data[["min", "mean", "max"]].to_numpy().T * scale
        im = ax.imshow(np.ma.masked_invalid(full), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        text = full.copy()
        text[:r, c + 3] = sg.by_init["std"].to_numpy() * scale
        text[r + 3, :c] = sg.by_data["std"].to_numpy() * scale
        for i in range(r + 4):
            for j in range(c + 4):
                if not np.isnan(text[i, j]):
                    dark = bool(np.isfinite(full[i, j]) and full[i, j] < (vmin + vmax) / 2)
                    ax.text(j, i, f"{text[i, j]:.1f}", ha="center", va="center", fontsize=6,
                            color="white" if dark else "black")
        ax.set_xticks(range(c + 4), [str(s) for s in sg.grid.columns] + ["min", "mean", "max", "std"],
                      fontsize=7, rotation=90)
        ax.set_yticks(range(r + 4), [str(s) for s in sg.grid.index] + ["min", "mean", "max", "std"], fontsize=7)
        ax.axvline(c - 0.5, color="white", lw=2)
        ax.axhline(r - 0.5, color="white", lw=2)
        ax.set_xlabel("Random seed for data order and dropout")
        ax.set_ylabel("Random seed for initialisation")
        ax.set_title(f"{method}: std fixing init {sg.std_fixed_init * scale:.2f}, "
                     f"fixing data {sg.std_fixed_data * scale:.2f}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8, label=score_unit_label(metric, scale) or None)
    fig.suptitle(title)
    return fig

"""Figures of stabletune.analysis.plots and the `stabletune plot` subcommand."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from stabletune.analysis import plots
from stabletune.analysis.frames import ResultsFrames
from stabletune.analysis.stats import PAPER_ITERATIONS, bias_correction_ratio, expected_max_performance, seed_grid_stats
from stabletune.cli import plot as plot_cli
from stabletune.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_ok(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stabletune")
    plot_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_bias_ratio_figure(tmp_path):
    fig = plots.plot_bias_ratio()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    (curve,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
    np.testing.assert_allclose(curve.get_ydata(), bias_correction_ratio(curve.get_xdata()))
    vlines = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1)
    assert vlines == sorted(PAPER_ITERATIONS.values())
    _png_ok(plots.save_figure(fig, tmp_path / "sub" / "fig1.png"))


def test_plot_cli_bias_ratio(tmp_path, capsys):
    out = tmp_path / "fig1.png"
    args = _cli(["plot", "bias-ratio", "--out", str(out), "--iterations", "RTE=234", "--iterations", "MNLI=36816"])
    assert args.func(args) == 0
    _png_ok(out)
    assert str(out) in capsys.readouterr().out
    for bad in (["--iterations", "RTE"], ["--iterations", "RTE=-3"], ["--beta2", "1.5"]):
        args = _cli(["plot", "bias-ratio", "--out", str(out), *bad])
        with pytest.raises(ConfigError, match="invalid option"):
            args.func(args)
    args = _cli(["plot", "bias-ratio", "--out", str(tmp_path / "fig1.pdf")])
    with pytest.raises(ConfigError, match="PNG"):
        args.func(args)


def _metrics() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for method, mu in (("standard_debiased", 0.69), ("not_debiased", 0.55)):
        for task in ("RTE", "STS-B"):
            for seed in range(10):
                v = float(rng.normal(mu, 0.03))
                if task == "STS-B" and method == "not_debiased" and seed < 3:
                    v = float("nan")
                rows.append(dict(method=method, task=task, seed=seed, checkpoint="last", split="test",
                                 metric="acc" if task == "RTE" else "spearman", value=v))
    return ResultsFrames(metrics=pd.DataFrame(rows)).metrics


def test_boxplots_drop_nan_and_say_so(tmp_path):
    m = _metrics()
    fig = plots.plot_boxplots(m)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    assert any("3 NaN" in lab for lab in labels)
    assert fig.axes[0].get_title().startswith("RTE")
    assert fig.axes[0].get_ylabel() == "Test acc (%)"  # fractions drawn in %, like the tables
    drawn = np.concatenate([ln.get_ydata() for ln in fig.axes[0].lines])  # whiskers, caps, medians, fliers
    x = m[m.task == "rte"]["value"]
    assert drawn.size and 100 * x.min() - 1e-9 <= drawn.min() and drawn.max() <= 100 * x.max() + 1e-9
    _png_ok(plots.save_figure(fig, tmp_path / "box.png"))


def test_curves_mean_and_range(tmp_path):
    steps = np.arange(0, 100, 10)
    df = pd.DataFrame([dict(method=m, task="rte", seed=s, step=int(st), loss=float(1 / (1 + st) + s * 0.1 + (m == "b")))
                       for m in ("a", "b") for s in range(3) for st in steps])
    fig = plots.plot_curves(df, y="loss", ylabel="Training loss", title="loss")
    ax = fig.axes[0]
    line_a = ax.get_lines()[0]
    np.testing.assert_allclose(line_a.get_ydata(), 1 / (1 + steps) + 0.1)  # mean of seeds 0, 0.1, 0.2
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx((1 / (1 + steps) + 0.2).max())
    _png_ok(plots.save_figure(fig, tmp_path / "loss.png"))
    assert ax.get_ylabel() == "Training loss"  # a loss is not a score: never in %

    scores = df.assign(loss=df["loss"] / 10, metric="acc")
    fig = plots.plot_curves(scores, y="loss", ylabel="Validation acc", title="val", score=True)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), 10 * (1 / (1 + steps) + 0.1))
    assert fig.axes[0].get_ylabel() == "Validation acc (%)"
    # MCC (and a correlation) x 100 is not a percentage; nor is a score whose metric is not named
    fig = plots.plot_curves(scores.assign(metric="mcc"), y="loss", ylabel="Validation mcc", title="val", score=True)
    assert fig.axes[0].get_ylabel() == "Validation mcc (× 100)"
    fig = plots.plot_curves(scores.drop(columns="metric"), y="loss", ylabel="Validation", title="val", score=True)
    assert fig.axes[0].get_ylabel() == "Validation (× 100)"


def test_expected_performance_param_distance_sweep_and_seed_grid(tmp_path):
    rng = np.random.default_rng(1)
    curves = []
    for method in ("a", "b"):
        c = expected_max_performance(rng.uniform(0.6, 0.7, 8), rng.uniform(0.6, 0.7, 8), n_boot=50)
        curves.append(c.assign(task="rte", method=method, metric="acc"))
    curves = pd.concat(curves)
    for which in ("test", "val"):
        fig = plots.plot_expected_performance(curves, which=which, title="t")
        ax = fig.axes[0]
        np.testing.assert_allclose(ax.get_lines()[0].get_ydata(),  # fractions drawn in %, like the tables
                                   100 * curves[curves.method == "a"]["mean" if which == "test" else "val_mean"])
        assert ax.get_ylabel().endswith("acc (%)")
        _png_ok(plots.save_figure(fig, tmp_path / f"exp_{which}.png"))
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks  # a number of trials is an integer

    pdist = pd.DataFrame([dict(method=m, task="rte", seed=s, step=st, block=b, distance=st * (i + 1) * (0.5 if m == "r" else 1))
                          for m in ("s", "r") for s in range(2) for st in (0, 10, 20)
                          for i, b in enumerate(["embeddings", "layer.10", "layer.2", "pooler"])])
    fig = plots.plot_param_distance(pdist, task="rte")
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["embeddings", "layer.2", "layer.10", "pooler"]
    _png_ok(plots.save_figure(fig, tmp_path / "pd.png"))

    sweep = pd.DataFrame([dict(task="rte", group=g, iterations=n, seed=s, value=0.6 + n / 1e4)
                          for g in ("std", "reinit") for n in (200, 400) for s in range(2)])
    _png_ok(plots.save_figure(plots.plot_iteration_sweep(sweep, split="val"), tmp_path / "sweep.png"))

    grid = pd.DataFrame([dict(init_seed=i, data_seed=j, value=0.7 + 0.01 * i - 0.005 * j)
                         for i in range(3) for j in range(4)])
    fig = plots.plot_seed_grid({"standard": seed_grid_stats(grid)}, title="grid", scale=100)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "70.0" in texts and "72.0" in texts  # cell (0, 0) and row max of init 2 (data 0)
    _png_ok(plots.save_figure(fig, tmp_path / "grid.png"))


def test_method_colors_are_stable():
    c = plots.method_colors(["a", "b", "c"])
    assert c == plots.method_colors(["a", "b", "c"]) and len(set(c.values())) == 3

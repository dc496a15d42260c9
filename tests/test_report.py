"""Results frames, the report (write_report) and the `stabletune report` subcommand."""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stabletune.analysis.frames import ResultsFrames, canonical_task, checkpoint_from_name, from_long_csv, main_values
from stabletune.analysis.report import write_report
from stabletune.cli import report as report_cli
from stabletune.errors import ConfigError, DataError, UserError

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_CSV = (ROOT / ".." / "shared" / "reference" / "replication-bert-large-600-runs.csv").resolve()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stabletune")
    report_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ no torch
def test_analysis_does_not_import_torch():
    code = ("import sys\n"
            "import stabletune.analysis, stabletune.analysis.frames, stabletune.analysis.stats\n"
            "import stabletune.analysis.plots, stabletune.analysis.report\n"
            "from stabletune.analysis import write_report\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------------------------------------ frames
REF_LIKE = """method,task,seed,file,metric_name,value
not_debiased,STS-B,0,x/not_debiased/STS-B/SEED0/test_best_log.txt,test_spearmanr,0.88
not_debiased,STS-B,0,x/not_debiased/STS-B/SEED0/test_last_log.txt,test_spearmanr,nan
not_debiased,STS-B,0,x/not_debiased/STS-B/SEED0/test_last_log.txt,test_loss,0.7
standard_debiased,RTE,1,x/standard_debiased/RTE/SEED1/test_last_log.txt,test_acc,0.7
standard_debiased,RTE,1,x/standard_debiased/RTE/SEED1/test_last_log.txt,eval_acc,0.72
"""


def test_from_long_csv_reference_layout(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(REF_LIKE)
    f = from_long_csv(path, metric_col="metric_name", file_col="file")
    m = f.metrics
    assert list(m["task"]) == ["sts-b", "sts-b", "sts-b", "rte", "rte"]
    assert list(m["checkpoint"]) == ["best", "last", "last", "last", "last"]
    assert list(m["split"]) == ["test", "test", "test", "test", "val"]
    assert list(m["metric"]) == ["spearman", "spearman", "loss", "acc", "acc"]
    assert np.isnan(m["value"].iloc[1])  # NaN kept, never dropped
    assert f.meta["n_runs"] == 2 and f.meta["n_nan_values"] == 1
    v = main_values(m, task="rte", method="standard_debiased", metric="acc", checkpoint="last", split="val")
    assert v.tolist() == [0.72]


def test_from_long_csv_errors(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(REF_LIKE)
    with pytest.raises(DataError, match=r"no column 'metric' \(--metric-col\); columns are: .*; did you mean "
                                        r"--metric-col metric_name\?"):
        from_long_csv(path)
    with pytest.raises(DataError, match="not found"):
        from_long_csv(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(REF_LIKE.replace("test_best_log.txt", "test_log.txt"))
    with pytest.raises(DataError, match=r"row 2: cannot tell best/last checkpoint from file="):
        from_long_csv(bad, metric_col="metric_name", file_col="file")
    bad.write_text(REF_LIKE.replace("0.88", "abc"))
    with pytest.raises(DataError, match="'abc' is not a number"):
        from_long_csv(bad, metric_col="metric_name", file_col="file")
    # without the checkpoint mapping, best and last collide: reported, not silently averaged
    with pytest.raises(DataError, match=r"row 3 repeats test_spearman of method=not_debiased, task=sts-b, seed=0 "
                                        r"at checkpoint last: .*--checkpoint-from-file"):
        from_long_csv(path, metric_col="metric_name")
    f = from_long_csv(path, metric_col="metric_name", file_col="file")
    twice = pd.concat([f.metrics, f.metrics])
    with pytest.raises(DataError, match="has 2 values of test_spearman"):
        main_values(twice, task="sts-b", method="not_debiased", metric="spearman", checkpoint="last", split="test")
    with pytest.raises(DataError, match="metrics frame: missing column"):
        ResultsFrames(metrics=pd.DataFrame({"method": ["a"]}))


def test_name_normalisation():
    assert [canonical_task(t) for t in ("RTE", "STS-B", "CoLA", "sst2", "MyTask")] == ["rte", "sts-b", "cola", "sst-2", "mytask"]
    assert checkpoint_from_name("a/b/test_best_log.txt") == "best"
    assert checkpoint_from_name("a/best_run/eval_last.json") == "last"  # basename only
    assert checkpoint_from_name("a/b/test_log.txt") is None
    assert checkpoint_from_name("lastbest.txt") is None


# ------------------------------------------------------------------------------------------------ full synthetic study
def _synthetic_frames() -> ResultsFrames:
    """Two methods on RTE, 3 init seeds x 3 data seeds, val+test at the best checkpoint, every optional frame.

    (One task and one checkpoint keep the test fast; several tasks and both checkpoints are covered by the
    reference-CSV test.)
    """
    rng = np.random.default_rng(0)
    metrics, loss, evals, dist, runs = [], [], [], [], []
    for method, mu in (("standard_debiased", 0.66), ("reinit_debiased", 0.70)):
        for task, metric in (("RTE", "acc"),):
            for i in range(3):
                for d in range(3):
                    seed = 3 * i + d
                    for ck in ("best",):
                        v = rng.normal(mu, 0.02)
                        for split in ("val", "test"):
                            metrics.append(dict(method=method, task=task, seed=seed, init_seed=i, data_seed=d,
                                                checkpoint=ck, split=split, metric=metric,
                                                value=v + rng.normal(0, 0.01)))
                    for step in range(0, 60, 10):
                        loss.append(dict(method=method, task=task, seed=seed, step=step,
                                         loss=0.7 / (1 + step / 20) + rng.uniform(0, 0.05)))
                        evals.append(dict(method=method, task=task, seed=seed, step=step, metric=metric,
                                          value=mu * (1 - np.exp(-step / 20))))
                        for b in ("embeddings", "layer.0", "layer.1"):
                            dist.append(dict(method=method, task=task, seed=seed, step=step, block=b,
                                             distance=step * 0.01))
                    runs.append(dict(method=method, task=task, seed=seed,
                                     status="failed" if (method, task, seed) == ("reinit_debiased", "RTE", 8) else "finished"))
    for n in (100, 200, 400):  # an iteration sweep
        for seed in range(3):
            for split in ("val", "test"):
                metrics.append(dict(method=f"standard-iters-{n}", task="RTE", seed=seed, init_seed=seed, data_seed=seed,
                                    checkpoint="best", split=split, metric="acc", value=0.6 + n / 4000 + seed / 100))
    return ResultsFrames(
        metrics=pd.DataFrame(metrics), train_loss=pd.DataFrame(loss), evals=pd.DataFrame(evals),
        param_distance=pd.DataFrame(dist), runs=pd.DataFrame(runs),
        meta={"config": "name: synthetic\nmethods: [standard_debiased, reinit_debiased]", "versions": {"torch": "2.13.0"},
              "title": "Synthetic study"},
    )


def test_write_report_full_study(tmp_path):
    frames = _synthetic_frames()
    paths = write_report(frames, tmp_path, n_boot=100)
    for name in ("boxplot_best", "expected_test_best", "expected_val_best", "train_loss", "val_curves",
                 "iteration_sweep", "param_distance_rte", "seed_grid_rte", "bias_ratio"):
        assert paths[f"figure:{name}"].read_bytes()[:8] == PNG_MAGIC, name
    md = paths["markdown"].read_text()
    m = frames.metrics
    x = m[(m.method == "reinit_debiased") & (m.task == "rte") & (m.split == "test") & (m.checkpoint == "best")]["value"]
    assert f"{100 * x.mean():.2f} ± {100 * x.std(ddof=1):.2f} (n=9)" in md
    assert "Synthetic study" in md and "1 run(s) failed" in md and "name: synthetic" in md
    assert "torch: 2.13.0" in md and "Model selection on the validation split" in md
    assert "Student's t-test" in md and "`standard_debiased`" in md
    assert "table:summary_last" not in paths  # no last-checkpoint results: no empty table
    s = pd.read_csv(paths["table:summary_best"])
    assert set(s["method"]) >= {"standard_debiased", "reinit_debiased"}

    html = paths["html"].read_text()
    assert not re.search(r"(src|href)=\"(?!data:)", html), "external resource in report.html"
    assert "http://" not in html and "https://" not in html and "<link" not in html
    imgs = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == sum(k.startswith("figure:") for k in paths)
    assert all(base64.b64decode(b)[:8] == PNG_MAGIC for b in imgs)
    assert '<table id="summary-best" class="results main"' in html and '<table id="degenerate-best"' in html


def test_report_leads_with_a_sentence_generated_from_the_numbers(tmp_path):
    frames = _synthetic_frames()
    frames.meta["source"] = str(tmp_path / "db" / "synthetic.db")  # as a study store reports it: absolute
    paths = write_report(frames, tmp_path / "out", n_boot=20)
    md = paths["markdown"].read_text()
    s = pd.read_csv(paths["table:summary_best"]).set_index("method")
    name = s.index[s["tie_with_best"] == "best"].item()
    best, base = s.loc[name], s.loc["standard_debiased"]
    assert name == "standard-iters-400" and best["p"] < 0.05  # the synthetic data: 400 iterations clearly best
    sentence = md.split("\n")[2]  # right under the title
    assert sentence.startswith(f"- **RTE** (test acc, best checkpoint, 3–9 runs per method): **{name}** "
                               "scores best, ")
    assert f"{best['mean']:.2f}\u00a0±\u00a0{best['std']:.2f}\u00a0%" in sentence
    assert f"{best['mean'] - base['mean']:+.2f} points over the baseline `standard_debiased`" in sentence
    assert f"{base['mean']:.2f}\u00a0±\u00a0{base['std']:.2f}\u00a0%" in sentence
    p_text = "p < 0.0001" if best["p"] < 1e-4 else f"p = {best['p']:.4f}"
    assert f"one-tailed Student's t-test {p_text}, significant at α\u00a0=\u00a00.05" in sentence
    assert sentence.endswith("No degenerate runs.")
    # the finding and the main table come before the metadata and the study's YAML
    assert md.index("- **RTE**") < md.index("| Method | RTE acc") < md.index("## Study") < md.index("name: synthetic")
    # no absolute path of this machine anywhere
    html = paths["html"].read_text()
    assert str(tmp_path) not in md and str(tmp_path) not in html
    assert "Results: `synthetic.db`." in md and "Results: <code>synthetic.db</code>." in html


def test_summary_sentence_variants():
    from stabletune.analysis.report import summary_sentences
    from stabletune.analysis.stats import degenerate_runs, summary_table

    rng = np.random.default_rng(3)
    rows = [dict(method=meth, task="cola", seed=s, checkpoint="best", split="test", metric="mcc",
                 value=0.0 if (meth == "bertadam" and s < 2) else rng.normal(mu, 0.01))
            for meth, mu in (("adam", 0.30), ("bertadam", 0.20), ("reinit", 0.29)) for s in range(5)]
    m = pd.DataFrame(rows)
    s = summary_table(m, baseline="adam", checkpoint="best")
    d = degenerate_runs(m, checkpoint="best")
    ((task, text),) = summary_sentences(s, d, baseline="adam", checkpoint="best")
    assert task == "cola" and "the baseline **adam** scores best" in text and "no method beats it" in text
    assert "(next: `reinit`" in text and "Degenerate runs: `bertadam` 2 of 5; none for the other methods." in text
    ((_, text),) = summary_sentences(summary_table(m[m.seed == 0], baseline="adam", checkpoint="best"),
                                     degenerate_runs(m[m.seed == 0], checkpoint="best"), baseline="adam",
                                     checkpoint="best")
    assert "too few runs to compare methods" in text and "1 runs per method" in text
    assert "%" not in text  # MCC x 100 is not a percentage


def test_units_percent_for_accuracy_times_100_for_mcc(tmp_path):
    """Accuracy x 100 is a percentage, MCC x 100 is not: the sentences and the table notes say which."""
    rows = [dict(method=meth, task=task, seed=s, checkpoint="best", split="test", metric=metric,
                 value=mu + 0.01 * s)
            for task, metric in (("cola", "mcc"), ("sst-2", "acc")) for meth, mu in (("a", 0.3), ("b", 0.5))
            for s in range(3)]
    paths = write_report(ResultsFrames(metrics=pd.DataFrame(rows), meta={"baseline": "a"}), tmp_path / "r", n_boot=10)
    md = paths["markdown"].read_text(encoding="utf-8").replace("\u00a0", " ")
    cola = next(line for line in md.splitlines() if line.startswith("- **CoLA**"))
    sst = next(line for line in md.splitlines() if line.startswith("- **SST-2**"))
    assert "%" not in cola and "51.00 ± 1.00, +20.00 points" in cola
    assert "51.00 ± 1.00 %, +20.00 points" in sst
    assert "best checkpoint, × 100 (accuracy and F1: in %)." in md


def test_rerun_into_the_same_folder_leaves_no_stale_files_and_a_failure_keeps_the_old_report(tmp_path, monkeypatch):
    frames = _synthetic_frames()
    first = write_report(frames, tmp_path, n_boot=20)
    assert first["figure:train_loss"].is_file()
    lean = ResultsFrames(metrics=frames.metrics, meta=frames.meta)  # no curves: fewer figures
    second = write_report(lean, tmp_path, n_boot=20)
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert figures == {p.name for k, p in second.items() if k.startswith("figure:")}
    assert "train_loss.png" not in figures and not list(tmp_path.glob(".partial-*"))

    before = (tmp_path / "report.md").read_bytes()
    from stabletune.analysis import plots

    calls = {"n": 0}
    real = plots.save_figure

    def flaky(fig, path, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(fig, path, **kw)

    monkeypatch.setattr(plots, "save_figure", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(frames, tmp_path, n_boot=20)
    assert (tmp_path / "report.md").read_bytes() == before  # the previous report, whole
    assert {p.name for p in (tmp_path / "figures").iterdir()} == figures and not list(tmp_path.glob(".partial-*"))



def test_write_report_errors(tmp_path):
    frames = _synthetic_frames()
    with pytest.raises(UserError, match="unknown baseline method 'nope'; methods are: standard_debiased"):
        write_report(frames, tmp_path, baseline="nope")
    only_val = ResultsFrames(metrics=frames.metrics[frames.metrics.split == "val"])
    with pytest.raises(UserError, match="no test-split values"):
        write_report(only_val, tmp_path)


# ------------------------------------------------------------------------------------------------ CLI
def test_report_cli_user_errors(tmp_path, monkeypatch):
    csv = tmp_path / "r.csv"
    csv.write_text(REF_LIKE)
    for argv, err, msg in (
        (["report", "--out", str(tmp_path)], ConfigError, "exactly one"),
        (["report", "s.yaml", "--from-csv", str(csv)], ConfigError, "exactly one"),
        (["report", str(tmp_path / "nope.yaml")], DataError, "study file not found"),
        (["report", "--from-csv", str(csv)], DataError, "--metric-col"),
        (["report", "--from-csv", str(csv), "--metric-col", "metric_name", "--checkpoint-from-file", "file",
          "--baseline", "nope", "--out", str(tmp_path / "o")], UserError, "unknown baseline method 'nope'"),
        (["report", "--from-csv", str(csv), "--metric-col", "metric_name", "--metric", "rte="], ConfigError, "--metric"),
    ):
        args = _cli(argv)
        with pytest.raises(err, match=msg):
            args.func(args)
    # a study whose store reader does not exist yet / does
    study = tmp_path / "s.yaml"
    study.write_text("name: s\n")
    monkeypatch.setitem(sys.modules, "stabletune.study", types.ModuleType("stabletune.study"))
    args = _cli(["report", str(study), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match="load_frames is not available"):
        args.func(args)
    fake = types.ModuleType("stabletune.study")
    small = pd.DataFrame([dict(method=meth, task="rte", seed=s, checkpoint="last", split=split, metric="acc",
                               value=0.6 + 0.01 * s + 0.05 * (meth == "reinit_debiased"))
                          for meth in ("standard_debiased", "reinit_debiased") for s in range(4)
                          for split in (("test", "val") if meth == "standard_debiased" else ("test",))])
    fake.load_frames = lambda path: ResultsFrames(metrics=small, meta={"baseline": "reinit_debiased",
                                                                       "source": str(tmp_path / "s.db")})
    monkeypatch.setitem(sys.modules, "stabletune.study", fake)
    args = _cli(["report", str(study), "--out", str(tmp_path / "o"), "--n-boot", "20", "--metric", "acc", "--welch",
                 "--title", "From a study"])  # the baseline comes from the study's meta
    assert args.func(args) == 0 and (tmp_path / "o" / "report.html").is_file()
    md = (tmp_path / "o" / "report.md").read_text()
    assert md.startswith("# From a study") and "Welch's t-test" in md and "method > `reinit_debiased`" in md
    assert "Results: `s.db`, beside the study file `s.yaml`." in md and str(tmp_path) not in md
    # validation scores for one method only: each curve says how it was selected
    assert "Validation scores exist for some methods only" in md
    exp = pd.read_csv(tmp_path / "o" / "tables" / "expected_performance.csv").drop_duplicates("method")
    assert dict(zip(exp["method"], exp["selection"])) == {"standard_debiased": "validation",
                                                          "reinit_debiased": "max test (no validation scores)"}


@pytest.mark.skipif(not REFERENCE_CSV.is_file(), reason=f"reference CSV not found at {REFERENCE_CSV}")
def test_report_on_reference_csv(tmp_path, capsys):
    """The reference replication CSV through the CLI: table, degenerate counts, expected-performance curves."""
    out = tmp_path / "ref"
    argv = ["report", "--from-csv", str(REFERENCE_CSV), "--metric-col", "metric_name", "--checkpoint-from-file",
            "file", "--out", str(out), "--n-boot", "300"]
    try:
        from stabletune.cli import main  # noqa: F401  (the lead's entry point)
    except ImportError:
        main = None
    if main is not None:
        res = subprocess.run([sys.executable, "-m", "stabletune", *argv], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        stdout = res.stdout
    else:
        args = _cli(argv)
        assert args.func(args) == 0
        stdout = capsys.readouterr().out

    # independent computation from the raw file
    raw = pd.read_csv(REFERENCE_CSV)
    raw = raw[raw.file.str.endswith("test_last_log.txt")]

    def vals(method, task, metric):
        return raw[(raw.method == method) & (raw.task == task) & (raw.metric_name == metric)]["value"]

    md = (out / "report.md").read_text()
    std_rte = vals("standard_debiased", "RTE", "test_acc")
    assert f"{100 * std_rte.mean():.2f} ± {100 * std_rte.std(ddof=1):.2f} (n=50)" in md
    # the command prints the checkpoint the report leads with: best (early stopping on validation, Section 3)
    best = pd.read_csv(REFERENCE_CSV)
    best = best[best.file.str.endswith("test_best_log.txt") & (best.method == "standard_debiased")
                & (best.task == "RTE") & (best.metric_name == "test_acc")]["value"]
    assert f"{100 * best.mean():6.2f} ± {100 * best.std(ddof=1):.2f} (n=50)" in stdout
    assert stdout.startswith("best checkpoint")
    sts = vals("not_debiased", "STS-B", "test_spearmanr")
    zero = sts.fillna(0.0)  # the one NaN rule: a constant predictor counts as 0, and the count is reported
    assert f"{100 * zero.mean():.2f} ± {100 * zero.std(ddof=1):.2f} (n=50, {sts.isna().sum()} NaN as 0)" in md
    raw_all = pd.read_csv(REFERENCE_CSV)
    sts_best = raw_all[raw_all.file.str.endswith("test_best_log.txt") & (raw_all.method == "not_debiased")
                       & (raw_all.task == "STS-B") & (raw_all.metric_name == "test_spearmanr")]["value"]
    assert f"{sts_best.isna().sum()} NaN as 0" in stdout
    s = pd.read_csv(out / "tables" / "summary_last.csv")
    assert (s["n"] == s["n"]).all() and s.loc[(s.method == "not_debiased") & (s.task == "sts-b"), "n"].item() == 50
    # degenerate not_debiased RTE runs (<= majority 52.5 % + rounding) and constant STS-B predictors
    n_rte = int((vals("not_debiased", "RTE", "test_acc") <= 0.5255).sum())
    assert f"| not_debiased | {n_rte}/50 ({100 * n_rte / 50:.0f} %)" in md
    assert f"{sts.isna().sum()} constant" in md
    # no validation scores in this file: the expected-performance curves say what they are
    assert "No validation scores in these results" in md and (out / "figures" / "expected_max_test_last.png").is_file()
    exp = pd.read_csv(out / "tables" / "expected_performance.csv")
    assert set(exp["selection"]) == {"max test (no validation scores)"}
    assert len(exp[(exp.task == "rte") & (exp.method == "reinit_debiased") & (exp.checkpoint == "last")]) == 50


def test_a_figures_folder_of_someone_else_is_not_replaced(tmp_path):
    mine = tmp_path / "figures" / "mine.png"
    mine.parent.mkdir()
    mine.write_bytes(b"x")
    with pytest.raises(UserError, match="figures was not written by stabletune report"):
        write_report(_synthetic_frames(), tmp_path, n_boot=20)
    assert mine.read_bytes() == b"x"


# ------------------------------------------------------------------------------------------------ export folder
def _tricky_floats(n: int, seed: int = 0) -> np.ndarray:
    """Random float64 bit patterns of every magnitude plus the values CSV writers get wrong."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64) * rng.choice([1, -1], size=n)
    x = bits.view(np.float64)
    x = np.where(np.isfinite(x), x, 0.5)  # random bits may be NaN payloads: the special values are added below
    special = [np.nan, -0.0, 0.0, 1e-300, -1e-300, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, np.inf,
               -np.inf, 0.1, 1 / 3, 2 / 3, 0.30000000000000004, 1e16, 123456789012345678.0]
    return np.concatenate([special, x, rng.random(n), rng.normal(0, 1e-5, n)])


def _assert_same_floats(a: pd.Series, b: pd.Series) -> None:
    """Equal bits (NaN == NaN, -0.0 != 0.0), not merely close."""
    x, y = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
    same = (x.view(np.int64) == y.view(np.int64)) | (np.isnan(x) & np.isnan(y))
    assert same.all(), f"{int((~same).sum())} floats changed, e.g. {x[~same][:3]!r} -> {y[~same][:3]!r}"


def test_export_folder_round_trips_frames_exactly(tmp_path):
    from stabletune.analysis.frames import EXPORT_META, read_frames

    frames = _synthetic_frames()
    m = frames.metrics
    values = _tricky_floats(len(m))[: len(m)]
    m["value"] = values
    m["run_id"] = [f"{i:04d}e1" if i % 2 else f"{i}" for i in range(len(m))]  # would parse as numbers
    m["step"] = np.where(np.arange(len(m)) % 3 == 0, np.nan, np.arange(len(m)) * 10.0)  # ints with NaN: float
    m.loc[0, "method"] = "NA"  # a name pandas would read as missing by default
    frames.runs["finished_at"] = [f"2026-12-01T10:{i:02d}:00.000000+00:00" for i in range(len(frames.runs))]
    frames.runs["error"] = [None if i % 2 else 'said "no",\nover two lines' for i in range(len(frames.runs))]
    frames.runs["peak_memory_mb"] = None  # a column with nothing in it
    frames.meta.update({"source": "x.db", "study_file": "x.yaml", "n_runs": np.int64(18), "baseline": None,
                        "rate": 1 / 3, "note": "ünïcode — ok"})
    out = frames.to_dir(tmp_path / "export")
    assert out == tmp_path / "export"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([EXPORT_META, "metrics.csv", "train_loss.csv", "evals.csv", "param_distance.csv",
                            "runs.csv"])
    back = ResultsFrames.from_dir(out)
    assert back.meta == {**frames.meta, "n_runs": 18} and list(back.meta) == list(frames.meta)  # order kept
    for name in ("metrics", "train_loss", "evals", "param_distance", "runs"):
        a, b = getattr(frames, name), getattr(back, name)
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
        for col in a.columns:
            if a[col].dtype.kind == "f":
                _assert_same_floats(a[col], b[col])
    assert back.metrics["seed"].dtype == np.int64 and back.metrics["init_seed"].dtype == np.int64
    assert back.metrics.loc[0, "method"] == "NA" and back.metrics["step"].isna().sum() == m["step"].isna().sum()
    assert back.runs.loc[0, "error"] == 'said "no",\nover two lines'
    # floats are written as numpy's shortest repr: the exports diff as text
    assert ",0.1," in (out / "metrics.csv").read_text()
    assert read_frames(out).meta == back.meta

    # the float column alone, many more values: pandas' default CSV writer + round_trip reader are exact
    many = pd.DataFrame({"method": "a", "task": "rte", "seed": 0, "checkpoint": "best", "split": "test",
                         "metric": "acc", "value": _tricky_floats(20000, seed=1)})
    again = ResultsFrames(metrics=many).to_dir(tmp_path / "many")
    _assert_same_floats(many["value"], ResultsFrames.from_dir(again).metrics["value"])


def test_export_folder_is_written_whole_or_not_at_all(tmp_path):
    from stabletune.analysis.frames import write_frames

    frames = _synthetic_frames()
    out = tmp_path / "export"
    write_frames(frames, out, subfolders={"search": ResultsFrames(metrics=frames.metrics)})
    assert (out / "train_loss.csv").is_file() and (out / "search" / "meta.json").is_file()
    assert ResultsFrames.from_dir(out / "search").train_loss is None
    # an earlier export is replaced whole: no stale file of it stays
    lean = ResultsFrames(metrics=frames.metrics, meta=frames.meta)
    write_frames(lean, out)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "metrics.csv"]
    # a failure leaves the earlier export as it was, and no staging folder
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = ResultsFrames(metrics=frames.metrics, meta={"x": object()})
    with pytest.raises(ValueError, match="meta cannot be exported as JSON"):
        write_frames(bad, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    # what is not an export is never replaced
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(UserError, match="holds something other than a results export"):
        write_frames(frames, tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        write_frames(frames, tmp_path / "file")
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing to lose
    write_frames(lean, tmp_path / "empty")
    with pytest.raises(ValueError, match="column 'obj' holds dict objects"):
        write_frames(ResultsFrames(metrics=frames.metrics.assign(obj=[{}] * len(frames.metrics))), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_read_export_errors_name_the_file(tmp_path):
    import json

    from stabletune.analysis.frames import read_frames

    out = _synthetic_frames().to_dir(tmp_path / "e")
    meta = out / "meta.json"
    doc = json.loads(meta.read_text())
    with pytest.raises(DataError, match="export folder not found: .*nope"):
        read_frames(tmp_path / "nope")
    with pytest.raises(DataError, match=r"meta.json: not found: .* is not a results export"):
        read_frames(tmp_path)
    cases = [
        ("{", "meta.json: not valid JSON"),
        (json.dumps({**doc, "format": "other"}), "not a results export's meta.json"),
        (json.dumps({**doc, "format_version": 99}), "export format version 99; this stabletune reads versions 1 to 2"),
        (json.dumps({**doc, "tables": {**doc["tables"], "extra": {}}}), r"unknown table\(s\) \['extra'\]"),
    ]
    for text, msg in cases:
        meta.write_text(text)
        with pytest.raises(DataError, match=msg):
            read_frames(out)
    meta.write_text(json.dumps(doc))
    (out / "evals.csv").unlink()
    with pytest.raises(DataError, match=r"evals.csv: not found \(listed in .*meta.json\)"):
        read_frames(out)
    out = _synthetic_frames().to_dir(tmp_path / "e")
    lines = (out / "runs.csv").read_text().splitlines()
    (out / "runs.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"runs.csv: 17 rows, .*meta.json says 18 \(truncated or edited\?\)"):
        read_frames(out)
    text = (out / "metrics.csv").read_text().splitlines()
    assert text[1].startswith("standard_debiased,rte,0,0,0,")
    text[1] = text[1].replace(",0,0,", ",x,0,", 1)  # a seed that is not an integer
    (out / "metrics.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match="metrics.csv: cannot read as the export's metrics table"):
        read_frames(out)


def test_report_says_when_its_runs_finished_never_when_it_was_made(tmp_path):
    """report.md is a function of the results: the same results give the same bytes at any time."""
    frames = _synthetic_frames()
    frames.runs["finished_at"] = ["2026-12-01T09:59:59.999999+00:00"] * (len(frames.runs) - 1) + [None]
    md = write_report(frames, tmp_path / "a", n_boot=20)["markdown"].read_text()
    assert "Generated by `stabletune report` from runs finished by 2026-12-01 09:59 UTC." in md
    lean = ResultsFrames(metrics=frames.metrics)  # no run times (a CSV): no date at all
    md = write_report(lean, tmp_path / "b", n_boot=20)["markdown"].read_text()
    assert "Generated by `stabletune report`." in md
    assert not re.search(r"20\d\d-\d\d-\d\d \d\d:\d\d", md)


def test_report_from_export_cli_errors(tmp_path, capsys):
    from stabletune.cli import main

    export = _synthetic_frames().to_dir(tmp_path / "docs" / "results" / "syn" / "export")
    for argv, err, msg in (
        (["report", "s.yaml", "--from-export", str(export)], ConfigError, "exactly one source"),
        (["report", "--from-csv", "r.csv", "--from-export", str(export)], ConfigError, "exactly one source"),
        (["report", "--from-export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], DataError,
         "export folder not found"),
        (["report", "--from-export", str(tmp_path), "--out", str(tmp_path / "o")], DataError,
         "meta.json: not found"),
    ):
        args = _cli(argv)
        with pytest.raises(err, match=msg):
            args.func(args)
    assert not (tmp_path / "o" / "report.md").exists()
    assert main(["report", "--from-export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "export folder not found" in err
    # the default folder is named after the study folder of docs/results/<study>/export
    assert report_cli._source_name(_cli(["report", "--from-export", str(export)])) == "syn"
    assert report_cli._source_name(_cli(["report", "--from-export", str(tmp_path / "docs")])) == "docs"
    # an unknown metric is refused before anything is written (issue 23: the folder used to be made first)
    task = _synthetic_frames().metrics["task"].iloc[0]
    assert main(["report", "--from-export", str(export), "--out", str(tmp_path / "m"), "--metric", f"{task}=f9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'f9' not in the results" in err
    assert not (tmp_path / "m").exists()


def test_a_renamed_task_reports_the_metric_its_runs_were_scored_on(tmp_path):
    """A study task named ``cola-1k`` (CoLA at paper-1k) is reported in MCC, the metric its runs stored as their
    main metric, not in the accuracy that an unknown task name falls back to; ``--metric`` still wins."""
    rows, runs = [], []
    for method, shift in (("bertadam", 0.0), ("adam", 0.1)):
        for seed in range(3):
            runs.append({"method": method, "task": "cola-1k", "seed": seed, "status": "finished", "main_metric": "mcc"})
            for split in ("val", "test"):
                for ck in ("best", "last"):
                    rows.append({"method": method, "task": "cola-1k", "seed": seed, "checkpoint": ck, "split": split,
                                 "metric": "mcc", "value": 0.1 + shift + 0.01 * seed})
                    rows.append({"method": method, "task": "cola-1k", "seed": seed, "checkpoint": ck, "split": split,
                                 "metric": "acc", "value": 0.6 + 0.01 * seed})
    frames = ResultsFrames(metrics=pd.DataFrame(rows), runs=pd.DataFrame(runs), meta={"baseline": "bertadam"})
    assert frames.metric_by_task() == {"cola-1k": "mcc"}
    assert frames.metric_by_task({"*": "acc"}) == {"*": "acc"}
    assert frames.metric_by_task({"cola-1k": "acc"}) == {"cola-1k": "acc"}
    paths = write_report(frames, tmp_path / "r", n_boot=10)
    summary = pd.read_csv(paths["table:summary_best"])
    assert set(summary["metric"]) == {"mcc"}
    paths = write_report(frames, tmp_path / "r2", n_boot=10, metric_by_task={"*": "acc"})
    assert set(pd.read_csv(paths["table:summary_best"])["metric"]) == {"acc"}

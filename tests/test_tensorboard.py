"""--report-to tensorboard: scalars read back with TensorBoard's own reader; logging leaves runs and run ids alone."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from stabletune.config import make_config  # noqa: E402
from stabletune.errors import ConfigError  # noqa: E402
from stabletune.study import run_study  # noqa: E402
from stabletune.study.spec import parse_study, run_id_for  # noqa: E402
from stabletune.training import train  # noqa: E402
from tinymodel import glue_dir  # noqa: E402


def cfg_for(model_dir, **kw):
    base = dict(task="rte", data_dir=str(glue_dir()), model=str(model_dir), train_size=24, batch_size=8,
                max_steps=6, num_evals=3, max_seq_length=64, eval_batch_size=64, progress=False, lr=1e-3, threads=1)
    base.update(kw)
    return make_config(base)


def scalars(log_dir) -> dict[str, list]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def test_run_writes_per_update_and_per_eval_scalars(tiny_model, tmp_path):
    res = train(cfg_for(tiny_model, report_to="tensorboard", track_param_distance=True), str(tmp_path / "run"))
    s = scalars(tmp_path / "run" / "tensorboard")
    for tag in ("train/loss", "train/lr", "train/grad_norm"):
        assert [e.step for e in s[tag]] == [1, 2, 3, 4, 5, 6], tag
    for tag in ("eval/acc", "eval/loss", "param_distance/block_00", "param_distance/block_01"):
        assert [e.step for e in s[tag]] == [2, 4, 6], tag
    assert [e.value for e in s["train/loss"]] == pytest.approx([r["loss"] for r in res.train_log], rel=1e-6)
    assert [e.value for e in s["train/lr"]] == pytest.approx([r["lr"] for r in res.train_log], rel=1e-6)
    assert [e.value for e in s["eval/acc"]] == pytest.approx([e["val"]["acc"] for e in res.evals], rel=1e-6)
    assert [e.value for e in s["param_distance/block_01"]] == pytest.approx(
        [e["param_distance"][1] for e in res.evals], rel=1e-6)

    plain = train(cfg_for(tiny_model, track_param_distance=True), str(tmp_path / "plain"))
    assert plain.train_log == res.train_log and plain.best == res.best  # logging changes nothing in the run
    assert not (tmp_path / "plain" / "tensorboard").exists()


def test_explicit_logging_dir_replaces_old_events_and_needs_a_place(tiny_model, tmp_path):
    log_dir = tmp_path / "tb"
    for _ in range(2):  # a re-run into the same folder replaces its curves instead of doubling them
        train(cfg_for(tiny_model, max_steps=2, num_evals=1, report_to="tensorboard", logging_dir=str(log_dir)))
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
    assert [e.step for e in scalars(log_dir)["train/loss"]] == [1, 2]
    with pytest.raises(ConfigError, match="--report-to"):
        train(cfg_for(tiny_model, max_steps=2, num_evals=1, report_to="tensorboard"))  # no --out, no dir


def test_logging_options_are_not_part_of_the_run_id(tiny_model):
    cfg = cfg_for(tiny_model)
    logged = dataclasses.replace(cfg, report_to="tensorboard", logging_dir="/somewhere/tb")
    assert run_id_for("m", "rte", "final", cfg) == run_id_for("m", "rte", "final", logged)


STUDY = """
name: tb
data_dir: {glue}
base: {{model: {model}, train_size: 16, batch_size: 8, max_steps: 4, num_evals: 2, max_seq_length: 48,
        eval_batch_size: 64, lr: 1.0e-3{extra}}}
methods:
  standard: {{}}
  bertadam: {{optimizer: bertadam}}
tasks: [rte]
seeds: 2
"""


def test_study_writes_one_tensorboard_run_per_run(tiny_model, tmp_path):
    path = tmp_path / "tb.yaml"
    path.write_text(STUDY.format(glue=glue_dir(), model=tiny_model, extra=", report_to: tensorboard"))
    plain = parse_study(STUDY.format(glue=glue_dir(), model=tiny_model, extra=""), path)
    logged = parse_study(path.read_text(), path)
    assert ({r.run_id for r in plain.final_runs("standard", "rte")}
            == {r.run_id for r in logged.final_runs("standard", "rte")})  # the study keeps its run ids

    out = run_study(path, backend="inline", progress=False)
    assert out.ok and out.counts["finished"] == 4
    root = tmp_path / "tb-tensorboard"
    runs = sorted(p.parent.relative_to(root).as_posix() for p in root.rglob("events.out.tfevents.*"))
    assert runs == ["bertadam/rte/s0", "bertadam/rte/s1", "standard/rte/s0", "standard/rte/s1"]
    for run in runs:
        s = scalars(root / run)
        assert [e.step for e in s["train/loss"]] == [1, 2, 3, 4]
        assert [e.step for e in s["eval/acc"]] == [2, 4]


def test_a_final_run_copied_from_a_search_run_gets_its_tensorboard_run(tiny_model, tmp_path):
    """A final run equal to a search run (same candidate and seed) is copied, not recomputed: its TensorBoard
    run is the search run's, under the final run's own name."""
    text = STUDY.format(glue=glue_dir(), model=tiny_model, extra=", report_to: tensorboard")
    text = text.replace("  standard: {}\n  bertadam: {optimizer: bertadam}\n",
                        "  standard:\n    search: {lr: [1.0e-3, 3.0e-3]}\n    search_seeds: 1\n")
    path = tmp_path / "tb.yaml"
    path.write_text(text)
    out = run_study(path, backend="inline", progress=False)
    assert out.ok and out.copied == 1, out
    root = tmp_path / "tb-tensorboard"
    runs = sorted(p.parent.relative_to(root).as_posix() for p in root.rglob("events.out.tfevents.*"))
    assert runs == ["standard/rte/s0", "standard/rte/s1", "standard/rte/search-lr=0.001/s0",
                    "standard/rte/search-lr=0.003/s0"], runs
    loss = lambda run: [(e.step, e.value) for e in scalars(root / run)["train/loss"]]  # noqa: E731
    searched = [loss("standard/rte/search-lr=0.001/s0"), loss("standard/rte/search-lr=0.003/s0")]
    assert loss("standard/rte/s0") in searched and searched[0] != searched[1]
    # a resumed study does not copy it again
    assert run_study(path, backend="inline", progress=False).ok


def test_cli_refuses_a_bad_logging_dir_and_ensembles_before_any_work(tmp_path, capsys):
    from stabletune.cli import main

    a_file = tmp_path / "file"
    a_file.write_text("x")
    base = ["train", "--task", "rte", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"),
            "--report-to", "tensorboard"]
    assert main([*base, "--logging-dir", str(a_file)]) == 2
    assert main([*base, "--ensemble", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--logging-dir" in err[0] and "--report-to" in err[1] and "Traceback" not in err[0]
    assert not (tmp_path / "run").exists()

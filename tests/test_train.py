"""The run: schedule, evaluation points, clipping, best-checkpoint restore, determinism, run folder, divergence."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from stabletune.config import make_config
from stabletune.engine import loop as loop_mod
from stabletune.engine.setup import linear_schedule
from stabletune.training import train
from tinymodel import glue_dir


def cfg_for(model_dir, **kw):
    base = dict(task="rte", data_dir=str(glue_dir()), model=str(model_dir), train_size=48, batch_size=8,
                max_steps=12, num_evals=4, max_seq_length=64, eval_batch_size=64, progress=False, lr=1e-3,
                threads=1)
    base.update(kw)
    return make_config(base)


def test_run_folder_and_recorded_schedule(tiny_model, tmp_path):
    out = tmp_path / "run"
    res = train(cfg_for(tiny_model, warmup_steps=3), str(out))
    assert res.status == "finished" and res.out_dir == str(out)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "split.json", "train_log.jsonl", "evals.jsonl", "results.json"} <= names
    assert not list(tmp_path.glob("run.partial*"))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))
    f = linear_schedule(3, 12)
    for r in log:  # the LR used at update k is lr * schedule(k-1)
        assert r["lr"] == pytest.approx(1e-3 * f(r["step"] - 1), rel=1e-12, abs=1e-18)
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [3, 6, 9, 12]
    results = json.loads((out / "results.json").read_text())
    assert results["best"]["test"]["acc"] is not None and results["last"]["test"]["acc"] is not None
    assert results["data"]["sizes"] == {"train": 48, "validation": 139, "test": 138}
    assert results["timings"]["examples_per_s"] > 0 and results["timings"]["peak_memory_mb"] > 0
    assert results["environment"]["versions"]["torch"] == torch.__version__
    env = results["environment"]  # what decides whether another machine can reproduce the numbers bit for bit
    assert env["threads"] == 1 and env["cpu"]["torch_threads"] == 1
    assert env["cpu"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and env["cpu"]["cpu_model"]
    assert {"cpu_id", "cpu_vector_flags", "logical_cores", "mkl", "onednn", "env"} <= set(env["cpu"])
    # RTE paper-small halves: the run stores the majority baseline of its own labels (Section 4)
    assert results["data"]["split"] == {"name": "paper-small", "version": 1}
    assert results["data"]["majority_baseline"] == {"validation": pytest.approx(73 / 139),
                                                    "test": pytest.approx(73 / 138)}
    split = json.loads((out / "split.json").read_text())
    assert len(split["train"]["indices"]) == 48
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seeds"] == {"seed": 0, "init_seed": 0, "data_seed": 0, "split_seed": 0}


def test_same_seeds_bitwise_identical_and_seed_axes_matter(tiny_model):
    a = train(cfg_for(tiny_model, max_steps=6, num_evals=2))
    b = train(cfg_for(tiny_model, max_steps=6, num_evals=2))
    assert [r["loss"] for r in a.train_log] == [r["loss"] for r in b.train_log]
    assert a.best == b.best and a.last == b.last
    c = train(cfg_for(tiny_model, max_steps=6, num_evals=2, data_seed=1))
    assert [r["loss"] for r in c.train_log] != [r["loss"] for r in a.train_log]
    d = train(cfg_for(tiny_model, max_steps=6, num_evals=2, init_seed=1))
    assert d.train_log[0]["loss"] != a.train_log[0]["loss"]  # another head from the init seed
    # The global RNG of the caller is untouched by a run (dropout draws inside fork_rng).
    torch.manual_seed(123)
    x = torch.rand(3)
    torch.manual_seed(123)
    train(cfg_for(tiny_model, max_steps=2, num_evals=1))
    assert torch.equal(torch.rand(3), x)


def test_same_seeds_and_threads_bitwise_equal_in_two_processes(tiny_model, tmp_path):
    """Two separate processes, same seeds, same thread count: bitwise-equal losses, metrics and checkpoints
    (within one process this holds too, see above; across processes nothing may depend on process state)."""
    import os
    import subprocess
    import sys

    args = ["--task", "rte", "--data-dir", str(glue_dir()), "--model", str(tiny_model), "--train-size", "48",
            "--batch-size", "8", "--max-steps", "12", "--num-evals", "4", "--max-seq-length", "64",
            "--lr", "1e-3", "--threads", "1", "--seed", "3", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    outs = [tmp_path / "run0", tmp_path / "run1"]
    procs = [subprocess.Popen([sys.executable, "-m", "stabletune", "train", *args, "--out", str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for out in outs]
    for p in procs:  # side by side: the same thread count, whatever else the machine does
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    a, b = (json.loads((o / "results.json").read_text()) for o in outs)
    assert a["best"] == b["best"] and a["last"] == b["last"]  # JSON floats round-trip exactly
    assert (outs[0] / "train_log.jsonl").read_text() == (outs[1] / "train_log.jsonl").read_text()
    assert (outs[0] / "evals.jsonl").read_text() == (outs[1] / "evals.jsonl").read_text()
    assert a["environment"]["cpu"] == b["environment"]["cpu"]


def test_gradient_clipping_bounds_the_step_gradient(tiny_model, monkeypatch):
    seen = []
    import stabletune.techniques as tech

    orig = tech.prepare

    def spy_prepare(*a, **kw):
        prepared = orig(*a, **kw)

        def record_grad_norm(optimizer, args, kwargs):
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

        prepared.optimizer.register_step_pre_hook(record_grad_norm)
        return prepared

    monkeypatch.setattr(tech, "prepare", spy_prepare)
    res = train(cfg_for(tiny_model, max_steps=4, num_evals=1, max_grad_norm=0.01))
    assert len(seen) == 4
    assert all(r["grad_norm"] > 0.01 for r in res.train_log)  # recorded: the norm before clipping
    assert all(n <= 0.01 * (1 + 1e-4) for n in seen)  # applied: the optimizer saw clipped gradients


def test_best_checkpoint_really_restored(tiny_model, tmp_path):
    """The official fp16 path reported the last checkpoint as the best; here the restored weights are re-checked."""
    from stabletune.data.batching import encode
    from stabletune.data import load_task_data, make_splits
    from stabletune.metrics import main_metric
    from stabletune.model import load_model

    cfg = cfg_for(tiny_model, max_steps=16, num_evals=8, lr=3e-3, save_model=True, seed=3)
    res = train(cfg, str(tmp_path / "run"))
    assert res.best["step"] != res.last["step"], "choose settings where the best checkpoint is not the last"
    # Reload the saved best model and evaluate: it must reproduce the best step's validation and test numbers.
    spec, tr, dev = load_task_data(task="rte", data_dir=str(glue_dir()))
    splits = make_splits(spec, tr, dev, split="paper-small", seed=0, train_size=48)
    loaded = load_model(str(tmp_path / "run"), num_labels=2, dropout=0.1, attn_implementation="sdpa",
                        init_generator=torch.Generator().manual_seed(0))
    assert loaded.new_param_names == []
    ev = dict(batch_size=64, device=torch.device("cpu"), pad_id=0, autocast=contextlib.nullcontext)
    for name, rows, expect in (("validation", splits.validation, res.best["val"]),
                               ("test", splits.test, res.best["test"])):
        enc = encode(loaded.tokenizer, rows, max_length=64, is_regression=False)
        metrics, _, _ = loop_mod.evaluate(loaded.model, enc, spec, **ev)
        assert metrics == pytest.approx(expect, abs=1e-12)
    best_eval = next(e for e in res.evals if e["step"] == res.best["step"])
    assert main_metric(spec, best_eval["val"]) == max(main_metric(spec, e["val"]) for e in res.evals)


def test_failure_leaves_no_folder(tiny_model, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = loop_mod.evaluate

    def boom(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(*a, **kw)

    monkeypatch.setattr(loop_mod, "evaluate", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg_for(tiny_model, max_steps=4, num_evals=2), str(tmp_path / "run"))
    assert list(tmp_path.iterdir()) == []


def test_divergence_is_recorded(tiny_model, monkeypatch, tmp_path):
    real = loop_mod.compute_loss
    state = {"n": 0}

    def nan_at_3(logits, labels, is_regression):
        loss = real(logits, labels, is_regression)
        if torch.is_inference_mode_enabled():  # evaluation: leave it alone
            return loss
        state["n"] += 1
        return loss * float("nan") if state["n"] == 3 else loss

    monkeypatch.setattr(loop_mod, "compute_loss", nan_at_3)
    res = train(cfg_for(tiny_model, max_steps=6, num_evals=3), str(tmp_path / "run"))
    assert res.status == "diverged" and "step 3" in res.error
    assert len(res.train_log) == 2
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["status"] == "diverged"


def test_callback_can_stop_a_run(tiny_model):
    events = []
    res = train(cfg_for(tiny_model, max_steps=8, num_evals=4),
                callback=lambda e: events.append(e) or (e.kind == "eval" and e.step >= 4))
    assert res.status == "killed" and res.last["step"] == 4
    assert [e.step for e in events if e.kind == "eval"] == [2, 4]


def test_init_from_earlier_run_keeps_encoder_replaces_head(tiny_model, tmp_path):
    """Intermediate-task transfer (Section 7): start from an RTE run's saved model, fine-tune STS-B (1 output)."""
    from safetensors.torch import load_file

    first = train(cfg_for(tiny_model, max_steps=3, num_evals=1, save_model=True), str(tmp_path / "rte"))
    saved = load_file(str(tmp_path / "rte" / "model" / "model.safetensors"))
    second = train(cfg_for(tiny_model, task="sts-b", max_steps=1, num_evals=1, lr=1e-12, save_model=True,
                           init_from=str(tmp_path / "rte")), str(tmp_path / "stsb"))
    assert first.status == second.status == "finished"
    assert sorted(second.techniques["new_param_names"]) == ["classifier.bias", "classifier.weight"]
    after = load_file(str(tmp_path / "stsb" / "model" / "model.safetensors"))
    assert after["classifier.weight"].shape[0] == 1 and saved["classifier.weight"].shape[0] == 2
    # lr 1e-12 with one (warm-up-free) update: the encoder is the saved one up to ~1e-12
    key = "bert.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(after[key], saved[key], atol=1e-9, rtol=0)
    # same label space: the head is kept too
    third = train(cfg_for(tiny_model, max_steps=1, num_evals=1, init_from=str(tmp_path / "rte")))
    assert third.techniques["new_param_names"] == []


def test_padding_to_max_length_changes_nothing_but_rounding(tiny_model):
    """--padding max_length (the official code's data path) trains the same run: padding is masked out."""
    from torch.testing import assert_close

    widths = {"dynamic": [], "max_length": []}

    def record(kind):
        return lambda e: widths[kind].append(e.width) if e.kind == "step" else None

    # grouped batches: with random ones nearly every RTE batch holds an example truncated at 64 tokens, so
    # dynamic padding would be 64 wide too and the test could not tell the two apart
    dyn = train(cfg_for(tiny_model, dropout=0.0, group_by_length=True), callback=record("dynamic"))
    fixed = train(cfg_for(tiny_model, dropout=0.0, group_by_length=True, padding="max_length"),
                  callback=record("max_length"))
    assert set(widths["max_length"]) == {64} and max(widths["dynamic"]) <= 64 and min(widths["dynamic"]) < 64
    assert_close(torch.tensor([r["loss"] for r in fixed.train_log]), torch.tensor([r["loss"] for r in dyn.train_log]),
                 rtol=1e-5, atol=1e-5)
    assert fixed.best["step"] == dyn.best["step"]
    assert_close(fixed.best["test"], dyn.best["test"], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# --metric, --split files / --test-file, label names in saved models, the majority-baseline note
# ------------------------------------------------------------------------------------------------
def _user_cfg(tiny_model, data, **kw):
    values = {"train_file": str(data["train"]), "dev_file": str(data["val"]), "split": "files",
              "text_columns": ["review"], "label_column": "verdict", "model": str(tiny_model), "max_steps": 6,
              "num_evals": 2, "batch_size": 16, "progress": False, "threads": 1}
    values.update(kw)
    return make_config(values)


def test_metric_selects_checkpoints_and_files_split_without_test(tiny_model, tmp_path):
    from tinymodel import write_user_data

    data = write_user_data(tmp_path / "data")
    res = train(_user_cfg(tiny_model, data, metric="f1:no"))
    assert res.task["metric"] == "f1" and res.task["positive_label"] == "no"
    assert res.best["test"] is None and res.data["sizes"]["test"] == 0  # no test file: nothing scored
    # 12 "no" / 12 "yes": the majority predictor says "no" (ties: first class), F1 of "no" = 24 / 36
    assert res.data["majority_baseline"]["validation"] == pytest.approx(2 / 3)
    assert {"acc", "f1", "f1_macro", "mcc"} <= set(res.best["val"])
    with_test = train(_user_cfg(tiny_model, data, test_file=str(data["test"])))
    assert with_test.data["sizes"]["test"] == 24 and set(with_test.best["test"]) >= {"acc", "f1"}


def test_saved_model_names_the_users_labels(tiny_model, tmp_path):
    from transformers import AutoConfig
    from tinymodel import write_user_data

    data = write_user_data(tmp_path / "data")
    train(_user_cfg(tiny_model, data, save_model=True), str(tmp_path / "run"))
    config = AutoConfig.from_pretrained(tmp_path / "run" / "model")
    assert config.id2label == {0: "no", 1: "yes"} and config.label2id == {"no": 0, "yes": 1}
    assert config.stabletune["text_columns"] == ["review"] and config.stabletune["max_seq_length"] == 128


def test_config_rules_for_files_and_test_file():
    from stabletune.errors import ConfigError

    with pytest.raises(ConfigError, match="--split files"):
        make_config({"train_file": "a.csv", "dev_file": "b.csv", "test_file": "c.csv", "text_columns": "t"})
    with pytest.raises(ConfigError, match="--train-file"):
        make_config({"task": "rte", "split": "files"})
    with pytest.raises(ConfigError, match="--metric"):
        make_config({"task": "rte", "metric": "auc"})
    assert make_config({"train_file": "a.csv", "split": "files", "text_columns": "t"}).dev_file is None


def test_summary_notes_a_run_at_or_below_the_majority_baseline(tiny_model, tmp_path, capsys):
    from stabletune.cli import main
    from stabletune.cli.train import baseline_note
    from tinymodel import write_user_data

    data = write_user_data(tmp_path / "data")
    args = ["train", "--train-file", str(data["train"]), "--dev-file", str(data["val"]), "--test-file",
            str(data["test"]), "--split", "files", "--text-columns", "review", "--label-column", "verdict",
            "--model", str(tiny_model), "--max-steps", "2", "--num-evals", "1", "--lr", "1e-9", "--no-progress",
            "--out", str(tmp_path / "run")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["at_or_below_majority_baseline"] is True
    assert "majority baseline" in err and "stabletune fit" in err
    res = train(_user_cfg(tiny_model, data, test_file=str(data["test"]), max_steps=18, lr=1e-2, num_evals=3))
    assert res.best["test"]["acc"] > res.data["majority_baseline"]["test"]  # learned: no note
    assert baseline_note(res) is None

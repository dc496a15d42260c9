"""The run engine: schedule and evaluation plan, one Event from every path, per-member state, atomic folders."""

from __future__ import annotations

import math
import os

import pytest
import torch

from stabletune.engine.events import Event
from stabletune.engine.setup import eval_steps, linear_schedule
from stabletune.training import train, train_ensemble
from tinymodel import tiny_run_config


def cfg_for(model_dir, **kw):
    return tiny_run_config(model_dir, **{"max_steps": 4, "num_evals": 2, "dropout": 0.0, **kw})


def test_linear_schedule_matches_transformers():
    from transformers import get_linear_schedule_with_warmup

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2e-5)
    ref = get_linear_schedule_with_warmup(opt, num_warmup_steps=9, num_training_steps=96)
    f = linear_schedule(9, 96)
    for step in range(97):
        assert math.isclose(f(step) * 2e-5, opt.param_groups[0]["lr"], rel_tol=1e-12, abs_tol=1e-15), step
        opt.step()
        ref.step()
    assert f(0) == 0.0 and f(9) == 1.0 and f(96) == 0.0 and f(5) == pytest.approx(5 / 9)


def test_eval_steps_spread_and_final():
    assert eval_steps(96, 10) == [10, 20, 29, 39, 48, 58, 68, 77, 87, 96]
    assert eval_steps(50, 10) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert eval_steps(3, 10) == [1, 2, 3]
    for total in (1, 7, 96, 1001):
        steps = eval_steps(total, 10)
        assert steps[-1] == total and len(steps) == min(10, total)


def check_events(events: list, results: list) -> None:
    """Every event is an Event; each member's step events repeat its train log, its eval events its evals."""
    from stabletune.metrics import main_metric
    from stabletune.tasks import get_task

    assert events and all(isinstance(e, Event) for e in events)
    for k, res in enumerate(results):
        steps = [e for e in events if e.member == k and e.kind == "step"]
        evals = [e for e in events if e.member == k and e.kind == "eval"]
        assert [(e.step, e.total, e.loss, e.lr, e.grad_norm) for e in steps] == [
            (r["step"], res.num_steps, r["loss"], r["lr"], r["grad_norm"]) for r in res.train_log]
        assert all(len(e.lengths) == 8 and 0 < max(e.lengths) <= e.width for e in steps)
        assert [(e.step, e.val, e.val_loss, e.param_distance) for e in evals] == [
            (r["step"], r["val"], r["val_loss"], r.get("param_distance")) for r in res.evals]
        assert [e.score for e in evals] == [main_metric(get_task("rte"), r["val"]) for r in res.evals]


@pytest.mark.parametrize("mode", ["single", "vectorised", "sequential"])
def test_one_event_type_from_every_path(tiny_model, mode):
    events: list = []
    if mode == "single":
        results = [train(cfg_for(tiny_model, track_param_distance=True), callback=events.append)]
    else:
        extra = {"mixout": 0.3} if mode == "sequential" else {"encoder_impl": "hf"}  # vectorised: HF forward
        results = train_ensemble([cfg_for(tiny_model, seed=s, track_param_distance=True, **extra) for s in (0, 1)],
                                 [None, None],
                                 callback=events.append)
        assert {r.techniques["ensemble"]["mode"] for r in results} == {mode}
    check_events(events, results)  # the sequential fall-back tags each run's events with its member index


def test_callback_stop_kills_every_member_of_a_vectorised_ensemble(tiny_model):
    def stop(e):
        return e.kind == "eval" and e.member == 1  # member 1's first evaluation stops the run

    results = train_ensemble([cfg_for(tiny_model, seed=s, encoder_impl="hf") for s in (0, 1, 2)], [None] * 3,
                             callback=stop)
    assert {r.techniques["ensemble"]["mode"] for r in results} == {"vectorised"}
    assert [r.status for r in results] == ["killed"] * 3
    assert [r.last["step"] for r in results] == [2, 2, 2]
    assert [len(r.evals) for r in results] == [1, 1, 1]  # member 2 was still evaluated at that step


def test_sequential_fallback_writes_each_folder_once(tiny_model, tmp_path, monkeypatch):
    """The fall-back records its ensemble note before the folder is committed, never into a committed folder."""
    moves: list[tuple[str, str]] = []
    real = os.replace

    def replace(src, dst):
        moves.append((os.fspath(src), os.fspath(dst)))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    outs = [str(tmp_path / "a"), str(tmp_path / "b")]
    results = train_ensemble([cfg_for(tiny_model, seed=s, mixout=0.3) for s in (0, 1)], outs)
    monkeypatch.undo()
    for out, res in zip(outs, results):
        committed = [i for i, (src, dst) in enumerate(moves) if dst == out]
        assert len(committed) == 1, "the folder is committed once"
        later = [dst for src, dst in moves[committed[0] + 1:] if dst.startswith(out + os.sep)]
        assert later == [], f"written into the committed folder: {later}"
        import json

        saved = json.loads((tmp_path / os.path.basename(out) / "results.json").read_text())
        assert saved["techniques"]["ensemble"] == res.techniques["ensemble"] and \
            res.techniques["ensemble"]["mode"] == "sequential"


def test_event_is_torch_free_and_frozen():
    import subprocess
    import sys

    code = "import sys, stabletune.engine.events as e; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    e = Event("step", 1, 4, loss=0.5)
    with pytest.raises(AttributeError):
        e.step = 2  # type: ignore[misc]

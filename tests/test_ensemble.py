"""Vectorised ensembles: every member is the run train() would have made (dropout 0), with its own seeds."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from stabletune.engine import loop as loop_mod
from stabletune.errors import ConfigError
from stabletune.training import train, train_ensemble
from tinymodel import tiny_run_config


def cfg_for(model_dir, **kw):
    # vectorised ensembles run the Hugging Face forward
    return tiny_run_config(model_dir, **{"dropout": 0.0, "encoder_impl": "hf", **kw})


def assert_same_run(seq, ens, *, tol=1e-5):
    """A member's record equals the separate run's, up to float rounding."""
    assert ens.status == seq.status and ens.error == seq.error
    assert ens.seeds == seq.seeds and ens.num_steps == seq.num_steps and ens.warmup_steps == seq.warmup_steps
    assert [r["step"] for r in ens.train_log] == [r["step"] for r in seq.train_log]
    assert [r["lr"] for r in ens.train_log] == [r["lr"] for r in seq.train_log]
    for key in ("loss", "grad_norm"):
        a = torch.tensor([r[key] for r in seq.train_log], dtype=torch.float64)
        b = torch.tensor([r[key] for r in ens.train_log], dtype=torch.float64)
        assert_close(b, a, rtol=tol, atol=tol)
    assert [e["step"] for e in ens.evals] == [e["step"] for e in seq.evals]
    for ea, eb in zip(seq.evals, ens.evals):
        assert_close(eb["val"], ea["val"], rtol=tol, atol=tol)
        assert_close(eb["val_loss"], ea["val_loss"], rtol=tol, atol=tol)
    for which in ("best", "last"):
        assert ens.to_dict()[which]["step"] == seq.to_dict()[which]["step"]
        assert_close(ens.to_dict()[which]["test"], seq.to_dict()[which]["test"], rtol=tol, atol=tol)
    assert ens.data == seq.data


@pytest.mark.parametrize("recipe", [
    {},
    {"reinit_layers": 1, "reinit_pooler": True, "llrd": 0.8, "pretrained_wd": 0.05, "optimizer": "bertadam",
     "weight_decay": 0.01, "warmup_steps": 2, "save_model": True},
], ids=["paper-recipe", "techniques"])
def test_members_match_separate_runs(tiny_model, tmp_path, recipe):
    # members 0 and 1: same data order, different initialisation; member 2: its own data order as well
    cfgs = [cfg_for(tiny_model, seed=0, **recipe), cfg_for(tiny_model, seed=1, data_seed=0, **recipe),
            cfg_for(tiny_model, seed=2, **recipe)]
    outs = [str(tmp_path / f"m{k}") for k in range(3)]
    members = train_ensemble(cfgs, outs)
    separate = [train(c) for c in cfgs]
    for seq, ens in zip(separate, members):
        assert_same_run(seq, ens)
    # members really are different runs
    assert members[0].train_log[0]["loss"] != members[1].train_log[0]["loss"]
    for k, (m, out) in enumerate(zip(members, outs)):
        assert m.out_dir == out and m.techniques["ensemble"] == {
            **m.techniques["ensemble"], "size": 3, "member": k, "mode": "vectorised"}
        results = json.loads((tmp_path / f"m{k}" / "results.json").read_text())
        assert results["techniques"]["ensemble"]["mode"] == "vectorised"
        assert len((tmp_path / f"m{k}" / "train_log.jsonl").read_text().splitlines()) == 8
        assert results["techniques"]["reinit"] == separate[k].techniques["reinit"]
        if cfgs[k].save_model:  # the saved (best) model is the member's own, not a view of the stacked weights
            from transformers import AutoModelForSequenceClassification

            saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / f"m{k}" / "model")
            assert saved.classifier.weight.shape[0] == 2


def test_diverged_member_stops_alone(tiny_model, monkeypatch):
    """Member 1's loss turns NaN at step 3 (all labels ignored): it stops as its separate run does, others go on."""
    K, bad_member, bad_step = 3, 1, 3

    def poisoning(real, bad_call):
        calls = {"n": 0}

        def collate(enc, idx, *, pad_id, pad_to=None):
            batch = real(enc, idx, pad_id=pad_id, pad_to=pad_to)
            if len(idx) == 8:  # a training batch (evaluation batches hold up to 64 examples)
                if calls["n"] == bad_call:
                    batch["labels"] = torch.full_like(batch["labels"], -100)  # cross-entropy over nothing: NaN
                calls["n"] += 1
            return batch
        return collate

    cfgs = [cfg_for(tiny_model, seed=s) for s in range(K)]
    monkeypatch.setattr(loop_mod, "collate", poisoning(loop_mod.collate, (bad_step - 1) * K + bad_member))
    members = train_ensemble(cfgs, [None] * K)
    monkeypatch.undo()
    separate = []
    for k, c in enumerate(cfgs):
        if k == bad_member:
            monkeypatch.setattr(loop_mod, "collate", poisoning(loop_mod.collate, bad_step - 1))
        separate.append(train(c))
        monkeypatch.undo()
    assert [m.status for m in members] == ["finished", "diverged", "finished"]
    assert members[bad_member].last["step"] == bad_step - 1 and "step 3" in members[bad_member].error
    for seq, ens in zip(separate, members):
        assert_same_run(seq, ens)


def test_dropout_streams_differ_between_members_and_repeat(tiny_model):
    cfgs = [cfg_for(tiny_model, seed=0, dropout=0.2, max_steps=2, num_evals=1),
            cfg_for(tiny_model, seed=0, dropout=0.2, max_steps=2, num_evals=1, out=None)]
    rng = torch.get_rng_state()
    a = train_ensemble(cfgs, [None, None])
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's global RNG is untouched, as with train()
    b = train_ensemble(cfgs, [None, None])
    # same init and data order, so only the dropout masks can make the two members' losses differ
    assert a[0].train_log[0]["loss"] != a[1].train_log[0]["loss"]
    assert [r["loss"] for m in a for r in m.train_log] == [r["loss"] for m in b for r in m.train_log]
    assert "randomness='different'" in a[0].techniques["ensemble"]["dropout"]


def test_mixout_and_single_member_fall_back_to_train(tiny_model, tmp_path):
    cfgs = [cfg_for(tiny_model, seed=s, mixout=0.3, dropout=0.1, max_steps=2, num_evals=1) for s in (0, 1)]
    members = train_ensemble(cfgs, [str(tmp_path / "a"), None])
    for c, m in zip(cfgs, members):
        assert m.techniques["ensemble"]["mode"] == "sequential" and "mixout" in m.techniques["ensemble"]["reason"]
        assert [r["loss"] for r in m.train_log] == [r["loss"] for r in train(c).train_log]
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["techniques"]["ensemble"]["mode"] == "sequential"
    one = train_ensemble([cfg_for(tiny_model, max_steps=2, num_evals=1)], [None])
    assert one[0].techniques["ensemble"]["mode"] == "sequential" and one[0].status == "finished"


def test_members_must_share_everything_but_seeds(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="member 1 differs from member 0 in lr"):
        train_ensemble([cfg_for(tiny_model), cfg_for(tiny_model, lr=2e-3, seed=1)], [None, None])
    with pytest.raises(ConfigError, match="same output folder"):
        train_ensemble([cfg_for(tiny_model), cfg_for(tiny_model, seed=1)], [str(tmp_path / "x")] * 2)
    with pytest.raises(ConfigError, match="at least one"):
        train_ensemble([])

"""prepare(): the fixed order, exact no-ops for every off value, and a visible effect for every on value."""

from __future__ import annotations

import json

import pytest
import torch

from stabletune.errors import ConfigError, InvalidValue
from stabletune.techniques.mixout import MixoutLinear
from stabletune.techniques import prepare

torch.set_num_threads(1)
LR = 1e-3


def _trajectory(make_tiny, make_batch, steps=5, *, use_prepare=True, **kw):
    """A 5-step training loop on a fixed batch with fixed seeds (dropout on); returns the final parameters."""
    model = make_tiny("bert", seed=0)
    batch = make_batch("bert")
    if use_prepare:
        prep = prepare(model, init_generator=torch.Generator().manual_seed(1), lr=LR,
                       new_param_names=("classifier.weight", "classifier.bias"), **kw)
        opt, after_step = prep.optimizer, prep.after_step
    else:  # the plain baseline, without any of our code: torch's fused AdamW
        opt, after_step = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=True), None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    torch.manual_seed(1234)  # the data seed: dropout and mixout masks
    model.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if after_step is not None:
            after_step()
        sched.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def baseline():
    from conftest import build_tiny, tiny_batch

    return _trajectory(build_tiny, tiny_batch, use_prepare=False)


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


OFF = [dict(), dict(reinit_layers=0), dict(reinit_pooler=False), dict(mixout=0.0),
       dict(mixout=0.0, mixout_targets="encoder"),
       dict(llrd=1.0), dict(pretrained_wd=0.0), dict(pretrained_wd=0.0, pretrained_wd_new_params="zero"),
       dict(reinit_layers=0, reinit_pooler=False, mixout=0.0, llrd=1.0, pretrained_wd=0.0, weight_decay=0.0)]


@pytest.mark.parametrize("kw", OFF, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
def test_off_values_are_bitwise_noops(make_tiny, make_batch, baseline, kw):
    assert _same(_trajectory(make_tiny, make_batch, **kw), baseline)


ON = [dict(reinit_layers=1), dict(reinit_pooler=True), dict(mixout=0.1), dict(llrd=0.9), dict(pretrained_wd=1.0),
      dict(optimizer="bertadam"), dict(weight_decay=0.1)]


@pytest.mark.parametrize("kw", ON, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_on_values_change_the_trajectory(make_tiny, make_batch, baseline, kw):
    assert not _same(_trajectory(make_tiny, make_batch, **kw), baseline)


def test_order_theta0_and_mixout_targets_are_taken_after_reinit(make_tiny):
    model = make_tiny("bert")
    original = model.bert.encoder.layer[-1].output.dense.weight.detach().clone()
    lam = 1.0 / LR  # lr * lambda = 1: one hook call moves a parameter all the way to its reference
    prep = prepare(model, init_generator=torch.Generator().manual_seed(1), lr=LR, reinit_layers=1, mixout=0.2,
                   pretrained_wd=lam, pretrained_wd_new_params="init")
    top = model.bert.encoder.layer[-1].output.dense
    redrawn = top.weight.detach().clone()
    assert not torch.equal(redrawn, original)
    assert isinstance(top, MixoutLinear) and torch.equal(top.target, redrawn)  # mixout mixes with the re-init
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    prep.after_step()
    assert torch.allclose(top.weight, redrawn, atol=1e-6)  # theta0 of a re-initialised layer is its fresh draw
    assert prep.record["order"] == ["load", "reinit", "snapshot_theta0", "mixout", "param_groups", "optimizer"]


def test_new_params_zero_mode_decays_head_and_reinit_to_zero(make_tiny):
    model = make_tiny("bert")
    prep = prepare(model, init_generator=torch.Generator().manual_seed(1), lr=LR, reinit_layers=1,
                   pretrained_wd=0.5 / LR, pretrained_wd_new_params="zero",
                   new_param_names=("classifier.weight", "classifier.bias"))
    head = model.classifier.weight.detach().clone()
    top = model.bert.encoder.layer[-1].output.dense.weight.detach().clone()
    low = model.bert.encoder.layer[0].output.dense.weight.detach().clone()
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.weight.add_(1.0)
    prep.after_step()
    torch.testing.assert_close(model.classifier.weight, 0.5 * head)
    torch.testing.assert_close(model.bert.encoder.layer[-1].output.dense.weight, 0.5 * top)
    torch.testing.assert_close(model.bert.encoder.layer[0].output.dense.weight, low + 0.5)  # toward theta0


def test_record_and_blocks(make_tiny):
    model = make_tiny("bert")
    prep = prepare(model, init_generator=torch.Generator().manual_seed(1), lr=2e-5, reinit_layers=2,
                   reinit_pooler=True, mixout=0.3, llrd=0.9, pretrained_wd=0.01, weight_decay=0.01,
                   optimizer="bertadam")
    rec = json.loads(json.dumps(prep.record))  # JSON-able
    assert [n for n, _ in prep.blocks] == [f"bert.encoder.layer.{i}" for i in range(3)]
    assert rec["family"] == "bert" and rec["num_blocks"] == 3 and rec["optimizer"]["correct_bias"] is False
    assert rec["reinit"]["blocks"] == ["bert.encoder.layer.1", "bert.encoder.layer.2"]
    assert "bert.pooler.dense.weight" in rec["reinit"]["params"]
    assert "classifier" in rec["mixout"]["layers"] and rec["mixout"]["dropout_zeroed"]
    lrs = {g["name"]: g["lr"] for g in rec["param_groups"]}
    assert lrs["head.decay"] == 2e-5 and lrs["block.2.decay"] == pytest.approx(2e-5 * 0.9)
    assert sum(g["n_params"] for g in rec["param_groups"]) == rec["n_trainable_params"]
    assert prep.optimizer.param_groups[0]["lr"] == 2e-5


@pytest.mark.parametrize("kw, arg", [
    (dict(reinit_layers=4), "reinit_layers"), (dict(reinit_layers=-1), "reinit_layers"),
    (dict(mixout=1.0), "mixout"), (dict(mixout=0.1, mixout_targets="nope"), "mixout_targets"),
    (dict(optimizer="sgd"), "optimizer"), (dict(llrd=0.0), "llrd"), (dict(pretrained_wd=-1.0), "pretrained_wd"),
    (dict(pretrained_wd_new_params="x"), "pretrained_wd_new_params"), (dict(eps=0.0), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"), (dict(lr=0.0), "lr"), (dict(betas=(0.9, 1.0)), "betas"),
    (dict(mixout=0.1, mixout_granularity="row"), "mixout_granularity"), (dict(reinit_layers=True), "reinit_layers"),
    (dict(reinit_pooler="yes"), "reinit_pooler"),
])
def test_bad_values_raise_plain_errors_naming_the_argument_and_leave_the_model_alone(make_tiny, kw, arg):
    """prepare() names its own argument (a plain ValueError); only the config edge speaks of options."""
    model = make_tiny("bert")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = dict(init_generator=torch.Generator().manual_seed(1), lr=1e-3)
    args.update(kw)
    with pytest.raises(InvalidValue) as err:
        prepare(model, **args)
    assert err.value.arg == arg and str(err.value).startswith(f"invalid {arg}: ")
    assert isinstance(err.value, ValueError) and "--" not in str(err.value) and "\n" not in str(err.value)
    assert _same({n: p.detach() for n, p in model.named_parameters()}, before)
    assert not any(isinstance(m, MixoutLinear) for m in model.modules())


def test_unsupported_architecture(make_tiny):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    prep = prepare(model, init_generator=torch.Generator(), lr=1e-3, mixout=0.1)  # model-agnostic techniques work
    assert prep.blocks == [] and prep.record["family"] is None
    for kw in (dict(llrd=0.9), dict(reinit_layers=1), dict(reinit_pooler=True)):
        with pytest.raises(ConfigError, match="unsupported architecture"):
            prepare(torch.nn.Sequential(torch.nn.Linear(3, 3)), init_generator=torch.Generator(), lr=1e-3, **kw)

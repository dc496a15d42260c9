"""Section 7.1: weight decay toward the pre-trained weights."""

from __future__ import annotations

import pytest
import torch

from stabletune.errors import InvalidValue
from stabletune.techniques.llrd import build_param_groups
from stabletune.techniques.optim import build_optimizer
from stabletune.techniques.prior_wd import build_prior_wd, snapshot

torch.set_num_threads(1)


def _tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))


def _perturb(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("mode", ["init", "zero", "none"])
def test_matches_formula(mode):
    model = _tiny()
    named = dict(model.named_parameters())
    theta0 = snapshot(named)
    groups = build_param_groups(model, lr=0.1)
    groups[0]["lr"] = 0.03  # as if scheduled: the hook must read the current lr
    lam = 2.0
    new = {"2.weight", "2.bias"}  # the "head"
    hook = build_prior_wd(groups, named, theta0, strength=lam, new_param_names=new, new_params=mode)
    _perturb(model)
    before = {n: p.detach().clone() for n, p in named.items()}
    hook()
    a = 0.03 * lam
    for n, p in named.items():
        exempt = n.endswith("bias") or n.startswith("1.")  # no-decay group: biases and the LayerNorm
        if exempt:
            expected = before[n]
        elif n in new and mode == "zero":
            expected = before[n] - a * before[n]
        elif n in new and mode == "none":
            expected = before[n]
        else:
            expected = before[n] - a * (before[n] - theta0[n])
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7, msg=lambda m: f"{n}: {m}")


def test_each_group_uses_its_own_lr(make_tiny):
    model = make_tiny("bert")
    named = dict(model.named_parameters())
    theta0 = snapshot(named)
    groups = build_param_groups(model, lr=0.1, layer_decay=0.5)
    hook = build_prior_wd(groups, named, theta0, strength=1.0)
    _perturb(model)
    before = {n: p.detach().clone() for n, p in named.items()}
    hook()
    ids = {id(p): n for n, p in named.items()}
    for g in groups:
        for p in g["params"]:
            n = ids[id(p)]
            a = g["lr"] if g["decay"] else 0.0
            expected = before[n] - a * (before[n] - theta0[n])
            torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)


def test_plain_weight_decay_still_works_alongside():
    """Both decays act (the official code silently zeroed the plain one): compare with Algorithm 1 + both terms."""
    lr, wd, lam, b1, b2, eps = 0.01, 0.5, 3.0, 0.9, 0.999, 1e-8
    model = _tiny()
    named = dict(model.named_parameters())
    theta0 = snapshot(named)
    opt = build_optimizer(build_param_groups(model, lr=lr, weight_decay=wd), name="adamw", lr=lr, weight_decay=wd)
    assert [g["weight_decay"] for g in opt.param_groups] == [wd, 0.0]
    hook = build_prior_wd(opt.param_groups, named, theta0, strength=lam)
    ref = {n: t.double().clone() for n, t in theta0.items()}
    m = {n: torch.zeros_like(t) for n, t in ref.items()}
    v = {n: torch.zeros_like(t) for n, t in ref.items()}
    for t in range(1, 4):
        for n, p in named.items():
            p.grad = torch.full_like(p, 0.1 * t) + 0.01 * torch.arange(p.numel()).reshape(p.shape)
        opt.step()
        hook()
        for n, p in named.items():
            decay = not (n.endswith("bias") or n.startswith("1."))
            g = p.grad.double()
            ref[n] = ref[n] * (1 - lr * (wd if decay else 0.0))
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            ref[n] = ref[n] - lr * (m[n] / (1 - b1**t)) / ((v[n] / (1 - b2**t)).sqrt() + eps)
            if decay:
                ref[n] = ref[n] - lr * lam * (ref[n] - theta0[n].double())
    for n, p in named.items():
        torch.testing.assert_close(p.detach().double(), ref[n], rtol=1e-5, atol=1e-6)


def test_off_and_bad_values():
    model = _tiny()
    named = dict(model.named_parameters())
    groups = build_param_groups(model, lr=0.1)
    hook = build_prior_wd(groups, named, {}, strength=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    hook()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(InvalidValue, match="^invalid new_params: 'fresh'"):
        build_prior_wd(groups, named, snapshot(named), strength=1.0, new_params="fresh")
    with pytest.raises(InvalidValue, match="^invalid strength: must be >= 0"):
        build_prior_wd(groups, named, snapshot(named), strength=-1.0)


def test_reference_follows_the_model_to_another_device_or_dtype():
    """The training loop moves the model after prepare(): theta0 must follow (here: a dtype change)."""
    model = _tiny()
    named = dict(model.named_parameters())
    theta0 = snapshot(named)
    groups = build_param_groups(model, lr=0.5)
    hook = build_prior_wd(groups, named, theta0, strength=1.0)
    model.to(torch.float64)  # parameters keep their identity, their data changes dtype (like .to("cuda"))
    _perturb(model)
    before = model[0].weight.detach().clone()
    hook()
    assert model[0].weight.dtype == torch.float64
    torch.testing.assert_close(model[0].weight.detach(), before - 0.5 * (before - theta0["0.weight"].double()))


def test_hook_follows_the_schedule_after_load_state_dict():
    """Optimizer.load_state_dict (accelerate calls it when Trainer prepares the optimizer) replaces the group
    dicts; a hook built on the optimizer must still read the scheduled lr, not the starting one."""
    model = _tiny()
    named = dict(model.named_parameters())
    theta0 = snapshot(named)
    opt = build_optimizer(build_param_groups(model, lr=0.1), name="adamw", lr=0.1)
    hook = build_prior_wd(opt, named, theta0, strength=1.0)
    opt.load_state_dict(opt.state_dict())
    for g in opt.param_groups:
        g["lr"] = 0.0  # what a schedule at its end sets
    with torch.no_grad():
        for p in named.values():
            p.add_(1.0)
    moved = {n: p.detach().clone() for n, p in named.items()}
    hook()
    for n, p in named.items():
        torch.testing.assert_close(p.detach(), moved[n], rtol=0, atol=0)  # lr 0: no decay at all

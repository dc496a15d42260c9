"""Section 4: debiased Adam vs BERTAdam, fused and plain paths, against torch and a hand-written reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from stabletune.errors import InvalidValue
from stabletune.techniques.llrd import build_param_groups
from stabletune.techniques.optim import AdamW, build_optimizer

torch.set_num_threads(1)


def _train(model, opt, batch, steps=20):
    """Run ``steps`` updates on a fixed batch (dropout off) and return the parameter snapshots per step."""
    model.eval()  # no dropout: the gradients are a function of the parameters alone
    traj = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        opt.step()
        traj.append([p.detach().clone() for p in model.parameters()])
    return traj


def _reference_adam(params, grads_per_step, *, lr, betas, eps, wd, correct_bias):
    """Algorithm 1 written out in float64 (decoupled weight decay before the update)."""
    b1, b2 = betas
    theta = [p.detach().double().clone() for p in params]
    m = [torch.zeros_like(t) for t in theta]
    v = [torch.zeros_like(t) for t in theta]
    out = []
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            g = g.double()
            theta[i] = theta[i] * (1 - lr * wd)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            if correct_bias:
                mh, vh = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            else:
                mh, vh = m[i], v[i]  # BERTAdam: lines 9-10 skipped
            theta[i] = theta[i] - lr * mh / (vh.sqrt() + eps)
        out.append([t_.clone() for t_ in theta])
    return out


@pytest.mark.parametrize("fused", [True, False])
def test_debiased_equals_torch_adamw(make_tiny, make_batch, fused):
    model = make_tiny("bert")
    batch = make_batch("bert")
    ref_model = copy.deepcopy(model)
    hp = dict(lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
    ours = _train(model, AdamW(model.parameters(), correct_bias=True, fused=fused, **hp), batch)
    ref = _train(ref_model, torch.optim.AdamW(ref_model.parameters(), **hp), batch)
    for step, (a, b) in enumerate(zip(ours, ref)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=lambda m: f"step {step}: {m}")
    # and the fused path is torch's fused AdamW exactly
    if fused:
        model2 = make_tiny("bert")
        ref2 = _train(model2, torch.optim.AdamW(model2.parameters(), fused=True, **hp), batch)
        assert all(torch.equal(x, y) for a, b in zip(ours, ref2) for x, y in zip(a, b))


@pytest.mark.parametrize("correct_bias", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_matches_handwritten_formula(correct_bias, fused):
    gen = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(7, 5, generator=gen)), torch.nn.Parameter(torch.randn(5, generator=gen))]
    grads = [[torch.randn(p.shape, generator=gen) * (0.1 + t % 3) for p in params] for t in range(20)]
    hp = dict(lr=3e-3, betas=(0.9, 0.999), eps=1e-8, wd=0.01)
    ref = _reference_adam(params, grads, correct_bias=correct_bias, **hp)
    opt = AdamW(params, lr=hp["lr"], betas=hp["betas"], eps=hp["eps"], weight_decay=hp["wd"],
                correct_bias=correct_bias, fused=fused)
    for t in range(20):
        for p, g in zip(params, grads[t]):
            p.grad = g.clone()
        opt.step()
        for p, r in zip(params, ref[t]):
            torch.testing.assert_close(p.detach().double(), r, rtol=1e-6, atol=1e-7)


def test_fused_and_plain_paths_agree_for_bertadam():
    gen = torch.Generator().manual_seed(2)
    a = [torch.nn.Parameter(torch.randn(64, 33, generator=gen))]
    b = [torch.nn.Parameter(a[0].detach().clone())]
    oa = AdamW(a, lr=1e-3, weight_decay=0.1, correct_bias=False, fused=True)
    ob = AdamW(b, lr=1e-3, weight_decay=0.1, correct_bias=False, fused=False)
    for _ in range(20):
        g = torch.randn(64, 33, generator=gen)
        a[0].grad, b[0].grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(oa.state[a[0]]["exp_avg_sq"], ob.state[b[0]]["exp_avg_sq"], rtol=0, atol=0)
    assert float(oa.state[a[0]]["step"]) == float(ob.state[b[0]]["step"]) == 20.0  # real step kept


@pytest.mark.parametrize("fused", [True, False])
def test_update_ratio_is_the_bias_correction(fused):
    """BERTAdam's update / debiased update = (1 - b1^t) / sqrt(1 - b2^t) when eps is negligible."""
    b1, b2, lr = 0.9, 0.999, 1e-3
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(50, generator=gen, dtype=torch.float64) for _ in range(10)]
    start = torch.randn(50, generator=gen, dtype=torch.float64)  # float64: updates are not lost in rounding
    pa, pb = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    oa = AdamW([pa], lr=lr, betas=(b1, b2), eps=1e-30, correct_bias=False, fused=fused)
    ob = AdamW([pb], lr=lr, betas=(b1, b2), eps=1e-30, correct_bias=True, fused=fused)
    for t, g in enumerate(grads, start=1):
        before_a, before_b = pa.detach().clone(), pb.detach().clone()
        pa.grad, pb.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        ratio = (pa.detach() - before_a) / (pb.detach() - before_b)
        expected = (1 - b1**t) / math.sqrt(1 - b2**t)
        torch.testing.assert_close(ratio, torch.full_like(ratio, expected), rtol=1e-9, atol=0)
    assert (1 - b1) / math.sqrt(1 - b2) > 3  # the first BERTAdam update is ~3.2x larger


def test_groups_keep_their_lr_and_skip_params_without_grad(make_tiny):
    model = make_tiny("bert")
    groups = build_param_groups(model, lr=1e-3, weight_decay=0.01, layer_decay=0.5)
    peak = [g["lr"] for g in groups]
    opt = build_optimizer(groups, name="bertadam", lr=1e-3, weight_decay=0.01)
    assert [g["lr"] for g in opt.param_groups] == peak
    assert all(g["correct_bias"] is False for g in opt.param_groups)
    p0 = next(model.parameters())
    before = p0.detach().clone()
    for p in model.parameters():
        p.grad = None if p is p0 else torch.ones_like(p)
    opt.step()
    assert torch.equal(p0, before) and p0 not in opt.state
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)  # what the training loop wraps it in
    assert [g["lr"] for g in opt.param_groups] == [0.5 * lr for lr in peak]
    del sched


def test_state_dict_round_trip():
    p = torch.nn.Parameter(torch.ones(3))
    opt = AdamW([p], lr=0.1, correct_bias=False)
    p.grad = torch.ones(3)
    opt.step()
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = AdamW([q], lr=0.1, correct_bias=False)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if read from disk
    p.grad, q.grad = torch.full((3,), 0.5), torch.full((3,), 0.5)
    opt.step()
    opt2.step()
    assert torch.equal(p, q)
    assert opt2.state[q]["step"].dtype == torch.float32


def test_build_optimizer_rejects_bad_values():
    p = [torch.nn.Parameter(torch.ones(1))]
    with pytest.raises(InvalidValue, match="^invalid optimizer: 'adam'"):
        build_optimizer(p, name="adam", lr=1e-3)
    with pytest.raises(InvalidValue, match="^invalid eps: must be > 0"):
        build_optimizer(p, name="adamw", lr=1e-3, eps=0.0)
    with pytest.raises(InvalidValue, match="^invalid lr: must be > 0"):
        build_optimizer(p, name="adamw", lr=0.0)
    with pytest.raises(InvalidValue, match="^invalid weight_decay: must be >= 0"):
        build_optimizer(p, name="adamw", lr=1e-3, weight_decay=-1.0)
    assert build_optimizer(p, name="adamw", lr=1e-3).defaults["correct_bias"] is True

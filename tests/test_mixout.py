"""Section 7.1: mixout (Lee et al., 2020)."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import FAMILY_TYPES
from stabletune.errors import InvalidValue
from stabletune.techniques.mixout import MixoutLinear, apply_mixout, zero_dropout

torch.set_num_threads(1)


def _layer(p, granularity, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(12, 6)
    mix = MixoutLinear(lin, p, granularity)  # target = current weight
    with torch.no_grad():
        lin.weight.add_(torch.randn(6, 12))  # move the weight away from its target
    return mix


@pytest.mark.parametrize("granularity", ["neuron", "element"])
def test_expectation_is_the_weight_and_entries_are_mixed(granularity):
    p = 0.3
    mix = _layer(p, granularity)
    w, u = mix.weight.detach(), mix.target
    torch.manual_seed(1)
    n = 4000
    total = torch.zeros_like(w)
    replaced = 0.0
    with torch.no_grad():
        for _ in range(n):
            m = mix.mixed_weight()
            # every entry is either the target (replaced) or u + (w - u) / (1 - p) (kept, rescaled)
            kept = torch.isclose(m, u + (w - u) / (1 - p), rtol=0, atol=1e-6)
            assert torch.all(kept | torch.isclose(m, u, rtol=0, atol=1e-6))
            if granularity == "neuron":  # a whole input column shares its draw
                assert torch.all(kept == kept[:1])
            replaced += 1 - kept.double().mean().item()
            total += m
    sd = ((p / (1 - p)) ** 0.5 * (w - u).abs() / n**0.5).max().item()
    torch.testing.assert_close(total / n, w, rtol=0, atol=6 * sd)
    assert abs(replaced / n - p) < 0.02


def test_gradient_is_mask_over_one_minus_p():
    p = 0.4
    mix = _layer(p, "element")
    x = torch.randn(5, 12)
    torch.manual_seed(3)
    mix(x).sum().backward()
    torch.manual_seed(3)
    with torch.no_grad():
        mask = torch.nn.functional.dropout(torch.ones(6, 12), p=p, training=True)  # same draw: mask / (1 - p)
    expected = mask * x.sum(0).expand(6, 12)
    torch.testing.assert_close(mix.weight.grad, expected)


def test_eval_is_the_plain_linear_and_deterministic(make_tiny, make_batch):
    model = make_tiny("bert")
    plain = copy.deepcopy(model).eval()
    apply_mixout(model, p=0.7)
    with torch.no_grad():  # "training" moved the weights away from the targets
        for m in model.modules():
            if isinstance(m, MixoutLinear):
                m.weight.add_(0.05 * torch.randn_like(m.weight))
    plain.load_state_dict(model.state_dict())  # same keys: the target buffer is not persistent
    model.eval()
    batch = make_batch("bert")
    with torch.no_grad():
        a, b, ref = model(**batch).logits, model(**batch).logits, plain(**batch).logits
    assert torch.equal(a, b) and torch.equal(a, ref)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(**batch).logits, ref)


def test_p_zero_is_a_bitwise_noop(make_tiny):
    model = make_tiny("bert")
    before = list(model.modules())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert apply_mixout(model, p=0.0) == []
    assert list(model.modules()) == before
    assert not any(isinstance(m, MixoutLinear) for m in model.modules())
    assert all(m.p == 0.1 for m in model.modules() if isinstance(m, torch.nn.Dropout))  # dropout untouched
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_wrapping_keeps_parameters_names_and_state_dict(make_tiny):
    model = make_tiny("bert")
    params = dict(model.named_parameters())
    keys = set(model.state_dict())
    layers = apply_mixout(model, p=0.1)
    assert "classifier" in layers and "bert.pooler.dense" in layers  # like the official code: every nn.Linear
    assert dict(model.named_parameters()).keys() == params.keys()
    assert all(p is params[n] for n, p in model.named_parameters())
    assert set(model.state_dict()) == keys  # the target buffer is not persistent
    mix = model.classifier
    assert isinstance(mix, MixoutLinear) and torch.equal(mix.target, mix.weight)
    assert mix.target.data_ptr() != mix.weight.data_ptr()


def test_target_buffer_moves_with_to():
    mix = _layer(0.5, "neuron")
    mix.to(torch.float64)
    assert mix.target.dtype == torch.float64 and mix.weight.dtype == torch.float64
    mix.to("meta")
    assert mix.target.device.type == "meta"


def test_targets_selection_and_errors(make_tiny):
    model = make_tiny("bert")
    enc = apply_mixout(copy.deepcopy(model), p=0.1, targets="encoder")
    assert enc and all(n.startswith("bert.encoder.") for n in enc)
    sub = apply_mixout(copy.deepcopy(model), p=0.1, targets="attention.self.query, classifier")
    assert sorted(sub) == sorted([f"bert.encoder.layer.{i}.attention.self.query" for i in range(3)] + ["classifier"])
    with pytest.raises(InvalidValue, match="^invalid targets: 'nothing_like_this' matches no nn.Linear"):
        apply_mixout(model, p=0.1, targets="nothing_like_this")
    with pytest.raises(InvalidValue, match="^invalid p: must be in"):
        apply_mixout(model, p=1.0)
    with pytest.raises(InvalidValue, match="^invalid granularity"):
        apply_mixout(model, p=0.1, granularity="row")


def test_dropout_zeroed_including_float_attributes(make_tiny):
    bart = make_tiny("bart", dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
    changed = zero_dropout(bart)
    assert "model.encoder.layers.0.activation_dropout" in changed
    assert "model.encoder.layers.0.self_attn.dropout" in changed
    for m in bart.modules():
        for k, v in vars(m).items():
            if "dropout" in k and isinstance(v, float):
                assert v == 0.0, k
        if isinstance(m, torch.nn.Dropout):
            assert m.p == 0.0


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_every_family_trains_with_mixout(make_tiny, make_batch, model_type):
    model = make_tiny(model_type)
    layers = apply_mixout(model, p=0.5)
    assert len(layers) == sum(isinstance(m, MixoutLinear) for m in model.modules()) > 0
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    model.train()
    loss = model(**make_batch(model_type)).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(m.weight.grad is not None for m in model.modules() if isinstance(m, MixoutLinear))

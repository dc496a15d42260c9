"""Section 5: re-initialising the pooler and the top L blocks of every family."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from conftest import FAMILY_TYPES
from stabletune.errors import ConfigError, InvalidValue
from stabletune.techniques.families import get_layout, is_norm
from stabletune.techniques.reinit import apply_reinit, init_module_

torch.set_num_threads(1)


def _pretend_pretrained(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Overwrite every parameter with U(0.5, 1.5) (far from any init) and return a copy."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_top_blocks_and_pooler_redrawn_rest_bitwise_unchanged(make_tiny, model_type):
    model = make_tiny(model_type)
    before = _pretend_pretrained(model)
    layout = get_layout(model)
    names = apply_reinit(model, num_layers=2, reinit_pooler=True, generator=torch.Generator().manual_seed(0))
    top = [n for n, _ in layout.blocks[-2:]] + [layout.pooler_reinit]
    expected = {n for n in before if any(n.startswith(t + ".") for t in top)}
    assert set(names) == expected and len(names) == len(expected)
    modules = dict(model.named_modules())
    for n, p in model.named_parameters():
        if n not in expected:
            assert torch.equal(p, before[n]), f"{n} changed"
            continue
        owner, _, leaf = n.rpartition(".")
        mod = modules[owner]
        if is_norm(mod):
            assert torch.equal(p, torch.ones_like(p) if leaf == "weight" else torch.zeros_like(p)), n
        elif leaf == "bias" or leaf in ("q_bias", "v_bias"):  # Linear biases; DeBERTa's q/v biases
            assert torch.equal(p, torch.zeros_like(p)), n
        else:  # a normal draw: changed, centred, about 0.02 wide
            assert not torch.equal(p, before[n])
            assert p.abs().max() < 0.02 * 7, n
    # generator consumed -> a second model with the same seed gets the same weights
    other = make_tiny(model_type)
    _pretend_pretrained(other)
    apply_reinit(other, num_layers=2, reinit_pooler=True, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_same_seed_same_weights_different_seed_different(make_tiny):
    def run(seed):
        m = make_tiny("bert")
        apply_reinit(m, num_layers=1, reinit_pooler=True, generator=torch.Generator().manual_seed(seed))
        return m.bert.encoder.layer[-1].intermediate.dense.weight.detach().clone(), m.bert.pooler.dense.weight

    a, pa = run(7)
    b, pb = run(7)
    c, pc = run(8)
    assert torch.equal(a, b) and torch.equal(pa, pb)
    assert not torch.equal(a, c) and not torch.equal(pa, pc)


def test_statistics_match_normal_0_002(make_tiny):
    model = make_tiny("bert", hidden_size=128, intermediate_size=512, num_attention_heads=4, num_hidden_layers=2)
    _pretend_pretrained(model)
    apply_reinit(model, num_layers=1, reinit_pooler=False, generator=torch.Generator().manual_seed(0))
    top = model.bert.encoder.layer[-1]
    w = torch.cat([m.weight.detach().flatten() for m in top.modules() if isinstance(m, torch.nn.Linear)]).double()
    n = w.numel()
    assert n > 190_000
    assert abs(w.mean().item()) < 5 * 0.02 / n**0.5
    assert abs(w.std().item() / 0.02 - 1) < 5 / (2 * n) ** 0.5
    assert stats.kstest(w.numpy()[:20000], stats.norm(loc=0, scale=0.02).cdf).pvalue > 1e-3
    # the lower block still has the "pre-trained" values
    assert model.bert.encoder.layer[0].intermediate.dense.weight.min() >= 0.5


def test_std_comes_from_the_family_config(make_tiny):
    model = make_tiny("bart", init_std=0.05, d_model=64, encoder_ffn_dim=256, decoder_ffn_dim=256)
    _pretend_pretrained(model)
    names = apply_reinit(model, num_layers=1, reinit_pooler=False, generator=torch.Generator().manual_seed(0))
    assert names and all(n.startswith("model.decoder.layers.1.") for n in names)  # decoder = top for BART
    w = model.model.decoder.layers[1].fc1.weight.detach().double()
    assert abs(w.std().item() - 0.05) < 0.05 * 5 / (2 * w.numel()) ** 0.5


def test_bart_top_blocks_cross_into_the_encoder(make_tiny):
    model = make_tiny("bart")
    names = apply_reinit(model, num_layers=3, reinit_pooler=False, generator=torch.Generator().manual_seed(0))
    touched = {n.split(".")[1] + "." + n.split(".")[3] for n in names}
    assert touched == {"decoder.0", "decoder.1", "encoder.1"}


def test_xlnet_relative_attention_tensors_redrawn(make_tiny):
    model = make_tiny("xlnet", d_model=64, n_head=4)
    _pretend_pretrained(model)
    apply_reinit(model, num_layers=1, reinit_pooler=False, generator=torch.Generator().manual_seed(0))
    att = model.transformer.layer[-1].rel_attn
    for name in ("q", "k", "v", "o", "r", "r_r_bias", "r_s_bias", "r_w_bias", "seg_embed"):
        t = getattr(att, name).detach()
        assert t.abs().max() < 0.2 and t.std() > 0.005, name


def test_noop_and_errors(make_tiny):
    model = make_tiny("bert")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert apply_reinit(model, num_layers=0, reinit_pooler=False, generator=g) == []
    assert torch.equal(g.get_state(), state)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(InvalidValue, match="^invalid num_layers: 4 exceeds the 3 Transformer blocks"):
        apply_reinit(model, num_layers=4, reinit_pooler=False, generator=g)
    with pytest.raises(InvalidValue, match="^invalid num_layers: must be an integer >= 0"):
        apply_reinit(model, num_layers=-1, reinit_pooler=False, generator=g)
    with pytest.raises(ConfigError, match="unsupported architecture"):
        apply_reinit(torch.nn.Sequential(torch.nn.Linear(2, 2)), num_layers=1, reinit_pooler=False, generator=g)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_init_module_rules():
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.Embedding(50, 8, padding_idx=3)
    ln = torch.nn.LayerNorm(8)
    lin = torch.nn.Linear(8, 4)
    with torch.no_grad():
        for p in [*emb.parameters(), *ln.parameters(), *lin.parameters()]:
            p.fill_(0.7)
    init_module_(torch.nn.ModuleList([emb, ln, lin]), std=0.02, generator=g)
    assert torch.equal(emb.weight[3], torch.zeros(8)) and emb.weight[4].abs().max() < 0.2
    assert torch.equal(ln.weight, torch.ones(8)) and torch.equal(ln.bias, torch.zeros(8))
    assert torch.equal(lin.bias, torch.zeros(4)) and not torch.equal(lin.weight, torch.full((4, 8), 0.7))

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(2))

    with pytest.raises(ConfigError, match="scale"):
        init_module_(Odd(), std=0.02, generator=g)

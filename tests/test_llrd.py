"""Section 7.1: layer-wise learning-rate decay groups and the weight-decay split."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from conftest import FAMILY_TYPES
from stabletune.errors import ConfigError, InvalidValue
from stabletune.techniques.families import get_layout, is_norm
from stabletune.techniques.llrd import build_param_groups, no_decay_names

torch.set_num_threads(1)


def _names(model, group):
    ids = {id(p): n for n, p in model.named_parameters()}
    return [ids[id(p)] for p in group["params"]]


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_group_lrs_and_exactly_once(make_tiny, model_type):
    model = make_tiny(model_type)
    lr, eta, wd = 1e-3, 0.8, 0.01
    groups = build_param_groups(model, lr=lr, weight_decay=wd, layer_decay=eta)
    layout = get_layout(model)
    n_blocks = len(layout.blocks)
    # every trainable parameter exactly once
    counts = Counter(id(p) for g in groups for p in g["params"])
    assert set(counts) == {id(p) for p in model.parameters()} and set(counts.values()) == {1}
    assert {g["depth"] for g in groups} == set(range(n_blocks + 2))
    modules = dict(model.named_modules())
    for g in groups:
        assert g["lr"] == pytest.approx(lr * eta ** g["depth"], rel=1e-12)
        assert g["n_params"] == sum(p.numel() for p in g["params"])
        for name in _names(model, g):
            where, idx = layout.locate(name)
            expected_depth = {"head": 0, "embeddings": n_blocks + 1}.get(where, n_blocks - (idx or 0))
            assert g["depth"] == expected_depth, name
            owner, _, leaf = name.rpartition(".")
            exempt = "bias" in leaf or is_norm(modules[owner])
            assert g["decay"] == (not exempt), name
            assert g["weight_decay"] == (0.0 if exempt else wd)
    names = [g["name"] for g in groups]
    assert names[0].startswith("head.") and names[-1].startswith("embeddings.")
    assert f"block.{n_blocks - 1}.decay" in names  # the top block, at depth 1


def test_top_block_gets_lr_times_eta_and_embeddings_the_lowest(make_tiny):
    model = make_tiny("bert")  # 3 blocks
    groups = {g["name"]: g["lr"] for g in build_param_groups(model, lr=1.0, layer_decay=0.5)}
    assert groups["head.decay"] == 1.0 and groups["head.no_decay"] == 1.0
    assert groups["block.2.decay"] == 0.5 and groups["block.1.decay"] == 0.25 and groups["block.0.decay"] == 0.125
    assert groups["embeddings.decay"] == 0.0625
    by_name = {g["name"]: _names(model, g) for g in build_param_groups(model, lr=1.0, layer_decay=0.5)}
    assert "bert.pooler.dense.weight" in by_name["head.decay"]
    assert "classifier.bias" in by_name["head.no_decay"]
    assert "bert.embeddings.LayerNorm.weight" in by_name["embeddings.no_decay"]


def test_family_specific_placements(make_tiny):
    electra = make_tiny("electra")
    g = {x["name"]: _names(electra, x) for x in build_param_groups(electra, lr=1.0, layer_decay=0.9)}
    assert "electra.embeddings_project.weight" in g["embeddings.decay"]
    bart = make_tiny("bart")
    g = {x["name"]: _names(bart, x) for x in build_param_groups(bart, lr=1.0, layer_decay=0.9)}
    assert "model.shared.weight" in g["embeddings.decay"]
    assert "model.decoder.layers.1.fc1.weight" in g["block.3.decay"]  # decoder top = depth 1
    xlnet = make_tiny("xlnet")
    g = {x["name"]: _names(xlnet, x) for x in build_param_groups(xlnet, lr=1.0, layer_decay=0.9)}
    assert "transformer.layer.0.ff.layer_norm.weight" in g["block.0.no_decay"]  # norm found by module type
    assert "transformer.layer.0.rel_attn.r_w_bias" in g["block.0.no_decay"]


def test_off_gives_two_groups_for_any_model(make_tiny):
    model = make_tiny("bert")
    groups = build_param_groups(model, lr=2e-5, weight_decay=0.1)
    assert [(g["name"], g["lr"], g["weight_decay"], g["depth"]) for g in groups] == [
        ("all.decay", 2e-5, 0.1, 0), ("all.no_decay", 2e-5, 0.0, 0)]
    plain = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    groups = build_param_groups(plain, lr=1.0)
    assert sum(len(g["params"]) for g in groups) == 4
    assert no_decay_names(plain) == {"0.bias", "1.weight", "1.bias"}
    with pytest.raises(ConfigError, match="unsupported architecture"):
        build_param_groups(plain, lr=1.0, layer_decay=0.9)


def test_frozen_params_left_out_and_bad_values(make_tiny):
    model = make_tiny("bert")
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    groups = build_param_groups(model, lr=1.0, layer_decay=0.9)
    assert all(p is not model.bert.embeddings.word_embeddings.weight for g in groups for p in g["params"])
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(InvalidValue, match="^invalid layer_decay: must be in"):
            build_param_groups(model, lr=1.0, layer_decay=bad)

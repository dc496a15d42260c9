"""Figure 7: per-block L2 distance to the start of fine-tuning."""

from __future__ import annotations

import math

import torch

from stabletune.techniques.families import get_layout
from stabletune.techniques.mixout import apply_mixout
from stabletune.techniques.param_distance import block_distances, snapshot_blocks

torch.set_num_threads(1)


def test_matches_manual_concatenation(make_tiny):
    model = make_tiny("bert")
    blocks = get_layout(model).blocks
    ref = snapshot_blocks(blocks)
    assert block_distances(blocks, ref) == [0.0] * len(blocks)
    start = [torch.cat([p.detach().flatten().double() for p in b.parameters()]) for _, b in blocks]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i, (_, block) in enumerate(blocks):
            for p in block.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.01 * (i + 1))
    got = block_distances(blocks, ref)
    for (_, block), s, d in zip(blocks, start, got):
        now = torch.cat([p.detach().flatten().double() for p in block.parameters()])
        assert math.isclose(d, torch.linalg.vector_norm(now - s).item(), rel_tol=1e-5)
    assert got[0] < got[1] < got[2]  # larger perturbations higher up
    assert set(ref) == {f"{name}.{n}" for name, b in blocks for n, _ in b.named_parameters()}


def test_snapshot_is_a_copy_and_ignores_mixout_targets(make_tiny):
    model = make_tiny("bert")
    apply_mixout(model, p=0.3)
    blocks = get_layout(model).blocks
    ref = snapshot_blocks(blocks)
    assert not any(k.endswith(".target") for k in ref)
    with torch.no_grad():
        blocks[-1][1].output.dense.weight.add_(1.0)
    d = block_distances(blocks, ref)
    n = blocks[-1][1].output.dense.weight.numel()
    assert d[:-1] == [0.0] * (len(blocks) - 1) and math.isclose(d[-1], math.sqrt(n), rel_tol=1e-6)

"""Per-block L2 distance to the start of fine-tuning (Section 5, Figure 7).

"For each block, we concatenate all parameters and record the L2 distance between these parameters and their
initialized values during fine-tuning": for block b with parameters theta_b and starting values theta_b^0,
``d_b = || concat(theta_b - theta_b^0) ||_2 = sqrt(sum_p ||p - p^0||_2^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn


def _block_params(blocks: Sequence[tuple[str, nn.Module]]):
    for block_name, block in blocks:
        yield block_name, [(f"{block_name}.{n}", p) for n, p in block.named_parameters()]


@torch.no_grad()
def snapshot_blocks(blocks: Sequence[tuple[str, nn.Module]]) -> dict[str, torch.Tensor]:
    """Copies of every block parameter, keyed ``"<block name>.<parameter name>"`` (kept on the parameter's
    device, as float32)."""
    return {key: p.detach().to(torch.float32, copy=True)
            for _, params in _block_params(blocks) for key, p in params}


@torch.no_grad()
def block_distances(blocks: Sequence[tuple[str, nn.Module]], reference: Mapping[str, torch.Tensor]) -> list[float]:
    """L2 norm of ``concat(param - ref)`` for each block, bottom to top (same order as ``blocks``).

    Args:
        blocks: ``(name, module)`` pairs, e.g. :attr:`stabletune.techniques.Prepared.blocks`.
        reference: from :func:`snapshot_blocks` taken at the start of fine-tuning.
    """
    out: list[float] = []
    for _, params in _block_params(blocks):
        if not params:
            out.append(0.0)
            continue
        norms = torch.stack([torch.linalg.vector_norm(p.detach().to(torch.float32) - reference[key].to(p.device))
                             for key, p in params])
        out.append(math.sqrt(float(norms.to(torch.float64).square().sum())))
    return out

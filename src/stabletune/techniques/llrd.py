"""Optimizer parameter groups: weight-decay split and layer-wise learning-rate decay (LLRD, Section 7.1).

LLRD "applies higher learning rates for top layers and lower learning rates for bottom layers ... by setting the
learning rate of the top layer and using a multiplicative decay rate to decrease the learning rate layer-by-layer
from top to bottom". With base rate ``lr``, decay ``eta`` and ``L`` Transformer blocks, a parameter at *depth* d
gets ``lr * eta**d``:

====================================== =========
part                                   depth d
====================================== =========
task head and pooler                   0
top block (block L-1)                  1
block i (0-based from the bottom)      L - i
embeddings (lowest)                    L + 1
====================================== =========

This is the official code's convention: it gives the head and pooler ``lr`` and multiplies by ``eta`` *before*
each layer from the top block down to the embeddings, so the top block already gets ``lr * eta``. (The official
code also puts the head/pooler group at weight decay 0, and silently leaves out of the optimizer every parameter
that is not in the classifier, pooler, embeddings or blocks; here the head follows the usual decay split, and every
trainable parameter is placed -- ELECTRA's ``embeddings_project`` with the embeddings, BART's embedding pieces with
the embeddings, DeBERTa's relative embeddings with the embeddings; see :mod:`stabletune.techniques.families`.)

Weight decay uses the usual no-decay set inside each depth: biases (any parameter whose name contains ``bias``)
and the parameters of normalisation layers (LayerNorm/RMSNorm/GroupNorm/BatchNorm, recognised by module type, so
XLNet's and BART's ``layer_norm`` weights are covered too -- the official code's substring ``"LayerNorm.weight"``
missed them).

With ``layer_decay == 1`` (off) no family knowledge is needed: two groups, ``all.decay`` and ``all.no_decay``,
at depth 0, for any architecture.
"""

from __future__ import annotations

from collections import Counter

import torch.nn as nn

from stabletune.errors import InvalidValue
from stabletune.techniques.families import get_layout, is_norm


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters exempt from weight decay: biases and normalisation-layer parameters."""
    out: set[str] = set()
    for mname, module in model.named_modules():
        norm = is_norm(module)
        for pname, _ in module.named_parameters(recurse=False):
            if norm or "bias" in pname:
                out.add(f"{mname}.{pname}" if mname else pname)
    return out


def param_depths(model: nn.Module) -> tuple[dict[str, int], int]:
    """LLRD depth of every trainable parameter and the number of blocks L (see the module table).

    Raises:
        ConfigError: unsupported architecture.
        InvalidValue: trainable parameters the family table does not place (LLRD cannot be applied).
    """
    layout = get_layout(model)
    n_blocks = len(layout.blocks)
    depths: dict[str, int] = {}
    unplaced: list[str] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        where, index = layout.locate(name)
        if where == "head":
            depths[name] = 0
        elif where == "block":
            depths[name] = n_blocks - index  # type: ignore[operator]
        elif where == "embeddings":
            depths[name] = n_blocks + 1
        else:
            unplaced.append(name)
    if unplaced:
        shown = ", ".join(unplaced[:3]) + (f" and {len(unplaced) - 3} more" if len(unplaced) > 3 else "")
        raise InvalidValue("layer_decay", f"parameter(s) {shown} are not placed by the {layout.family} family "
                           "table (unsupported architecture variant)")
    return depths, n_blocks


def _depth_name(depth: int, n_blocks: int) -> str:
    if depth == 0:
        return "head"
    if depth == n_blocks + 1:
        return "embeddings"
    return f"block.{n_blocks - depth}"


def build_param_groups(model: nn.Module, *, lr: float, weight_decay: float = 0.0,
                       layer_decay: float = 1.0) -> list[dict]:
    """Parameter groups for :func:`stabletune.techniques.optim.build_optimizer` (Section 7.1, LLRD).

    Args:
        model: the model (a supported family when ``layer_decay < 1``).
        lr: base (peak) learning rate of the head; group ``lr`` = ``lr * layer_decay**depth``.
        weight_decay: decoupled weight decay of the decay groups (no-decay groups get 0).
        layer_decay: eta in (0, 1]; 1 = off.

    Returns:
        Groups ordered by depth (head first), decay group before no-decay group within a depth, empty groups
        dropped. Each is ``{"params", "lr", "weight_decay", "name", "depth", "decay", "n_params"}`` where
        ``name`` is ``head``/``block.<i>``/``embeddings``/``all`` plus ``.decay``/``.no_decay``, ``decay`` says
        whether the group is in the decay set (used by pre-trained weight decay too) and ``n_params`` counts
        scalar parameters. Every trainable parameter is in exactly one group (checked).

    Raises:
        InvalidValue: ``layer_decay`` outside (0, 1], or unplaced parameters (``lr`` and ``weight_decay`` are
            the optimizer's to check: :func:`stabletune.techniques.optim.check_hyperparameters`).
        ConfigError: unsupported architecture.
    """
    check_layer_decay(layer_decay)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = no_decay_names(model)
    if layer_decay == 1.0:
        depths = {n: 0 for n, _ in trainable}
        n_blocks = -1
    else:
        depths, n_blocks = param_depths(model)
    groups: list[dict] = []
    for depth in sorted(set(depths.values())):
        base = "all" if n_blocks < 0 else _depth_name(depth, n_blocks)
        for decay in (True, False):
            params = [p for n, p in trainable if depths[n] == depth and (n not in no_decay) == decay]
            if not params:
                continue
            groups.append({
                "params": params,
                "lr": lr * layer_decay**depth,
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{base}.{'decay' if decay else 'no_decay'}",
                "depth": depth,
                "decay": decay,
                "n_params": sum(p.numel() for p in params),
            })
    counts = Counter(id(p) for g in groups for p in g["params"])
    if set(counts) != {id(p) for _, p in trainable} or any(c != 1 for c in counts.values()):
        raise RuntimeError("internal error: parameter groups do not hold every trainable parameter exactly once")
    return groups


def check_layer_decay(layer_decay: float) -> None:
    """Raise :class:`~stabletune.errors.InvalidValue` unless the LLRD factor eta is in (0, 1]."""
    if isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float)) or not 0.0 < layer_decay <= 1.0:
        raise InvalidValue("layer_decay", f"must be in (0, 1], got {layer_decay!r}")

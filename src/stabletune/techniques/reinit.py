"""Re-initialise the pooler and the top L Transformer blocks (Section 5, "Re-init").

The paper re-initialises "the pooler layers and the top L BERT Transformer blocks using the original BERT
initialization, N(0, 0.02^2)". We redraw those weights from the family's original initialisation, written out here
with ``torch.nn.init`` and an explicit ``torch.Generator`` (never ``model._init_weights``: Hugging Face v5 skips
parameters it has marked as initialised, and it would draw from the global RNG):

* ``nn.Linear`` / ``nn.Conv1d``: weight ~ N(0, std^2), bias = 0;
* ``nn.Embedding``: weight ~ N(0, std^2), the ``padding_idx`` row = 0;
* LayerNorm (and other norms): weight = 1, bias = 0;
* XLNet's relative attention tensors (q, k, v, o, r, r_r_bias, r_s_bias, r_w_bias, seg_embed) ~ N(0, std^2) and
  DeBERTa's ``q_bias``/``v_bias`` = 0, exactly as those families' ``_init_weights``;

where std is ``config.initializer_range`` (``config.init_std`` for BART). Draws are made on the CPU in float32
and copied into the parameter, so the same generator seed gives the same weights on every device and dtype.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from stabletune.errors import ConfigError, InvalidValue
from stabletune.techniques.families import get_layout, get_submodule, is_norm

# Families' own parameters registered directly on a module (not inside a Linear/Embedding/norm).
_NORMAL_DIRECT = {"XLNetRelativeAttention": ("q", "k", "v", "o", "r", "r_r_bias", "r_s_bias", "r_w_bias",
                                             "seg_embed")}
_ZERO_DIRECT = {"DisentangledSelfAttention": ("q_bias", "v_bias")}


@torch.no_grad()
def _normal_(param: torch.Tensor, std: float, generator: torch.Generator) -> None:
    draw = torch.empty(param.shape, dtype=torch.float32)
    torch.nn.init.normal_(draw, mean=0.0, std=std, generator=generator)
    param.copy_(draw)


@torch.no_grad()
def init_module_(module: nn.Module, *, std: float, generator: torch.Generator) -> None:
    """Draw ``module`` and all its submodules afresh from the BERT-style initialisation (see module docstring).

    Submodules are visited in ``module.modules()`` order and each weight consumes ``generator`` in that order, so
    the result is a function of the generator state alone.

    Args:
        module: the module to re-initialise in place (a task head, a pooler, a Transformer block).
        std: standard deviation of the normal draws (``initializer_range``; 0.02 for BERT).
        generator: a CPU ``torch.Generator`` (the run's init generator).

    Raises:
        ConfigError: a parameter whose initialisation rule is unknown (an unsupported architecture).
    """
    if std <= 0:
        raise InvalidValue("std", f"must be > 0, got {std}")
    for sub in module.modules():
        own = dict(sub.named_parameters(recurse=False))
        if not own:
            continue
        cls = type(sub).__name__
        if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            _normal_(sub.weight, std, generator)
            if sub.bias is not None:
                sub.bias.zero_()
            handled = {"weight", "bias"}
        elif isinstance(sub, nn.Embedding):
            _normal_(sub.weight, std, generator)
            if sub.padding_idx is not None:
                sub.weight[sub.padding_idx].zero_()
            handled = {"weight"}
        elif is_norm(sub):
            if getattr(sub, "weight", None) is not None:
                sub.weight.fill_(1.0)
            if getattr(sub, "bias", None) is not None:
                sub.bias.zero_()
            handled = {"weight", "bias"}
        else:
            handled = set()
        for pname in _NORMAL_DIRECT.get(cls, ()):
            _normal_(own[pname], std, generator)
            handled.add(pname)
        for pname in _ZERO_DIRECT.get(cls, ()):
            own[pname].zero_()
            handled.add(pname)
        unknown = sorted(set(own) - handled)
        if unknown:
            raise ConfigError(f"cannot re-initialise parameter(s) {', '.join(unknown)} of {cls}: "
                              "unknown initialisation rule (unsupported architecture)")


def apply_reinit(model: nn.Module, *, num_layers: int, reinit_pooler: bool,
                 generator: torch.Generator) -> list[str]:
    """Re-initialise the pooler and/or the top ``num_layers`` Transformer blocks in place (Section 5).

    The pooler is drawn first, then the re-initialised blocks from the lowest to the topmost (the official code's
    order). For RoBERTa, ELECTRA and BART, which have no pooler, ``reinit_pooler`` re-draws the classification
    head's ``dense`` layer; for XLNet its ``sequence_summary.summary`` (see :mod:`stabletune.techniques.families`). For BART
    the top blocks are the decoder layers.

    Args:
        model: a ``*ForSequenceClassification`` model of a supported family.
        num_layers: L, the number of top blocks to re-initialise (0 = none).
        reinit_pooler: re-initialise the pooler (or its stand-in).
        generator: the run's init generator (CPU); the generator is not touched when nothing is re-initialised.

    Returns:
        Qualified names of the re-initialised parameters (empty when nothing was done).

    Raises:
        ConfigError: unsupported architecture.
        InvalidValue: ``num_layers`` < 0 or larger than the number of blocks, or no pooler.
    """
    check_num_layers(num_layers)
    if num_layers == 0 and not reinit_pooler:
        return []
    layout = get_layout(model)
    check_num_layers(num_layers, layout)
    names = {id(p): n for n, p in model.named_parameters()}
    targets: list[tuple[str, nn.Module]] = []
    if reinit_pooler:
        pooler = get_submodule(model, layout.pooler_reinit)
        if pooler is None or not any(True for _ in pooler.parameters()):
            raise InvalidValue("reinit_pooler", f"this {layout.family} model has no pooler "
                               f"(expected model.{layout.pooler_reinit})")
        targets.append((layout.pooler_reinit, pooler))
    if num_layers:
        targets.extend(layout.blocks[-num_layers:])
    done: list[str] = []
    for _, module in targets:
        init_module_(module, std=layout.std, generator=generator)
        done.extend(names[id(p)] for p in module.parameters() if id(p) in names)
    return done


def check_num_layers(num_layers: int, layout=None) -> None:
    """Raise :class:`~stabletune.errors.InvalidValue` unless ``num_layers`` is an integer >= 0 and, given the
    model's layout, at most its number of Transformer blocks."""
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
        raise InvalidValue("num_layers", f"must be an integer >= 0, got {num_layers!r}")
    if layout is not None and num_layers > len(layout.blocks):
        raise InvalidValue("num_layers", f"{num_layers} exceeds the {len(layout.blocks)} Transformer blocks of this "
                           f"{layout.family} model")

"""Apply the paper's techniques to a loaded model in the one fixed order (Sections 4-7).

``prepare`` is the only place that decides the order::

    (load, by the caller) -> re-init (Sec. 5) -> snapshot theta0 -> mixout (Sec. 7.1) -> parameter groups with
    weight-decay split and LLRD (Sec. 7.1) -> optimizer: debiased Adam or BERTAdam (Sec. 4)
    -> pre-trained weight decay hook (Sec. 7.1), run after every optimizer step

Why this order: re-initialised weights must be the starting point that pre-trained weight decay pulls toward and
that mixout mixes with, so theta0 and the mixout targets are taken after re-init; mixout keeps the same Parameter
objects, so the groups built after it hold exactly the trained parameters.

Every technique's off value (``reinit_layers=0``, ``reinit_pooler=False``, ``mixout=0``, ``llrd=1``,
``pretrained_wd=0``) leaves the training trajectory bitwise identical to plain fine-tuning (tested).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import partial
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from stabletune.errors import ConfigError, InvalidValue
from stabletune.techniques.families import family_of, get_layout, init_std
from stabletune.techniques.llrd import build_param_groups, check_layer_decay, param_depths
from stabletune.techniques.mixout import apply_mixout, check_mixout, zero_dropout
from stabletune.techniques.mixout import _select as _select_mixout_targets
from stabletune.techniques.optim import build_optimizer, check_hyperparameters
from stabletune.techniques.prior_wd import build_prior_wd, check_prior_wd, snapshot
from stabletune.techniques.reinit import apply_reinit, check_num_layers


@dataclass
class Prepared:
    """What the training loop needs after :func:`prepare`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    """Param groups carry their own peak ``lr`` (after LLRD); wrap it in a LambdaLR for warm-up/decay."""
    after_step: Callable[[], None]
    """Call right after every ``optimizer.step()`` (pre-trained weight decay); a no-op when off."""
    blocks: list[tuple[str, nn.Module]]
    """The Transformer blocks, bottom to top (empty for an architecture outside the family table)."""
    record: dict = field(default_factory=dict)
    """JSON-able facts for the run folder."""
    after_step_for: Callable[[torch.optim.Optimizer, Mapping[str, torch.Tensor]], Callable[[], None]] = field(
        default=lambda optimizer, named: _noop)
    """The same after-step hook for another optimizer whose groups hold copies of these parameters under the same
    names (a vectorised ensemble's stacked weights), with theta0 = their values now; a no-op factory when off."""


def _noop() -> None:
    return None


# The techniques name their own arguments in their errors; prepare's caller knows prepare's names.
_PREPARE_ARG = {"num_layers": "reinit_layers", "p": "mixout", "targets": "mixout_targets",
                "granularity": "mixout_granularity", "name": "optimizer", "layer_decay": "llrd",
                "strength": "pretrained_wd", "new_params": "pretrained_wd_new_params"}


def prepare(model: nn.Module, *, init_generator: torch.Generator, reinit_layers: int = 0,
            reinit_pooler: bool = False, mixout: float = 0.0, mixout_targets: str = "all",
            optimizer: str = "adamw", lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
            weight_decay: float = 0.0, llrd: float = 1.0, pretrained_wd: float = 0.0,
            pretrained_wd_new_params: str = "init", new_param_names: Collection[str] = (),
            mixout_granularity: str = "neuron", fused: bool | None = None) -> Prepared:
    """Apply re-init, mixout, LLRD, the optimizer choice and pre-trained weight decay to a loaded model.

    Args:
        model: a loaded ``*ForSequenceClassification`` model (head already drawn). Modified in place.
        init_generator: CPU generator for re-initialised weights (the run's init seed).
        reinit_layers: ``--reinit-layers`` L, top Transformer blocks to re-initialise (Section 5).
        reinit_pooler: ``--reinit-pooler`` (Section 5; the head's dense layer for families without a pooler).
        mixout: ``--mixout`` p in [0, 1) (Section 7.1); 0 = off.
        mixout_targets: ``--mixout-targets``: ``all``, ``encoder`` or comma-separated name parts.
        optimizer: ``--optimizer``: ``adamw`` (debiased) or ``bertadam`` (Section 4).
        lr: peak learning rate (of the head under LLRD).
        betas: ``(--adam-beta1, --adam-beta2)``.
        eps: ``--adam-eps``.
        weight_decay: ``--weight-decay`` (decoupled, toward 0; biases and norms exempt).
        llrd: ``--llrd`` eta in (0, 1]; 1 = off.
        pretrained_wd: ``--pretrained-wd`` lambda >= 0; 0 = off.
        pretrained_wd_new_params: ``--pretrained-wd-new-params``: ``init``, ``zero`` or ``none``.
        new_param_names: names of parameters freshly initialised at load (the task head).
        mixout_granularity: ``neuron`` (Lee et al., official code) or ``element``.
        fused: optimizer kernel choice (None = fused where available), see :class:`stabletune.techniques.optim.AdamW`.

    Raises:
        InvalidValue: an invalid value (a ``ValueError`` naming prepare's argument), ``reinit_layers`` larger
            than the number of blocks, a pooler or mixout targets the model lacks.
        ConfigError: an unsupported architecture for a technique that needs the family table.
    """
    try:
        return _prepare(model, init_generator=init_generator, reinit_layers=reinit_layers,
                        reinit_pooler=reinit_pooler, mixout=mixout, mixout_targets=mixout_targets,
                        optimizer=optimizer, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, llrd=llrd,
                        pretrained_wd=pretrained_wd, pretrained_wd_new_params=pretrained_wd_new_params,
                        new_param_names=new_param_names, mixout_granularity=mixout_granularity, fused=fused)
    except InvalidValue as e:
        if e.arg not in _PREPARE_ARG:
            raise
        raise InvalidValue(_PREPARE_ARG[e.arg], e.problem) from None


def _prepare(model: nn.Module, *, init_generator: torch.Generator, reinit_layers: int, reinit_pooler: bool,
             mixout: float, mixout_targets: str, optimizer: str, lr: float, betas: tuple[float, float], eps: float,
             weight_decay: float, llrd: float, pretrained_wd: float, pretrained_wd_new_params: str,
             new_param_names: Collection[str], mixout_granularity: str, fused: bool | None) -> Prepared:
    # ---- validate everything first: a bad value must not leave a half-modified model ----------------------
    check_num_layers(reinit_layers)
    if not isinstance(reinit_pooler, bool):
        raise InvalidValue("reinit_pooler", f"must be true or false, got {reinit_pooler!r}")
    check_mixout(p=mixout, granularity=mixout_granularity)
    check_hyperparameters(name=optimizer, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    check_layer_decay(llrd)
    check_prior_wd(strength=pretrained_wd, new_params=pretrained_wd_new_params)
    needs_layout = reinit_layers > 0 or reinit_pooler or llrd != 1.0 or (mixout > 0 and mixout_targets == "encoder")
    layout = get_layout(model) if needs_layout else None  # raises ConfigError for unsupported architectures
    if layout is not None:
        check_num_layers(reinit_layers, layout)
    named = dict(model.named_parameters())
    unknown_new = sorted(set(new_param_names) - set(named))
    if unknown_new:
        raise ValueError(f"prepare: new_param_names not in the model: {', '.join(unknown_new[:3])}")
    if mixout > 0:
        _select_mixout_targets(model, mixout_targets)  # raises now if the targets match nothing
    if llrd != 1.0:
        param_depths(model)  # raises now if the family table leaves a parameter unplaced
    if layout is None and family_of(model) is not None:
        try:
            layout = get_layout(model)
        except ConfigError:  # a family model without the expected layout: fine while no technique needs it
            layout = None
    blocks = list(layout.blocks) if layout is not None else []

    # ---- 1. re-init (Section 5) ------------------------------------------------------------------------------
    reinit_names = apply_reinit(model, num_layers=reinit_layers, reinit_pooler=reinit_pooler,
                                generator=init_generator)
    reinit_blocks = [name for name, _ in blocks[len(blocks) - reinit_layers:]] if reinit_layers else []

    # ---- 2. snapshot theta0 (only needed by pre-trained weight decay) ---------------------------------------
    theta0 = snapshot((n, p) for n, p in model.named_parameters() if p.requires_grad) if pretrained_wd > 0 else {}

    # ---- 3. mixout (Section 7.1) ----------------------------------------------------------------------------
    mixout_layers: list[str] = []
    dropout_zeroed: list[str] = []
    if mixout > 0:
        mixout_layers = apply_mixout(model, p=float(mixout), targets=mixout_targets,
                                     granularity=mixout_granularity, zero_dropout_modules=False)
        dropout_zeroed = zero_dropout(model)

    # ---- 4. parameter groups (weight-decay split, LLRD) and optimizer (Section 4) ----------------------------
    groups = build_param_groups(model, lr=lr, weight_decay=weight_decay, layer_decay=llrd)
    opt = build_optimizer(groups, name=optimizer, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                          fused=fused)

    # ---- 5. pre-trained weight decay hook (Section 7.1) -----------------------------------------------------
    new_names = set(new_param_names) | set(reinit_names)
    named = dict(model.named_parameters())
    after_step = build_prior_wd(opt, named, theta0, strength=float(pretrained_wd),
                                new_param_names=new_names, new_params=pretrained_wd_new_params) \
        if pretrained_wd > 0 else _noop

    decay_ids = {id(p) for g in groups if g["decay"] for p in g["params"]}
    decayed = [n for n, p in named.items() if id(p) in decay_ids]
    n_new_decayed = sum(1 for n in decayed if n in new_names)
    record = {
        "order": ["load", "reinit", "snapshot_theta0", "mixout", "param_groups", "optimizer"],
        "family": layout.family if layout is not None else family_of(model),
        "model_type": getattr(getattr(model, "config", None), "model_type", None),
        "num_blocks": len(blocks),
        "init_std": layout.std if layout is not None else _safe_std(model),
        "optimizer": {"name": optimizer, "correct_bias": optimizer == "adamw", "betas": list(betas), "eps": eps,
                      "weight_decay": weight_decay, "fused": fused},
        "reinit": {"layers": reinit_layers, "pooler": reinit_pooler,
                   "pooler_module": layout.pooler_reinit if (layout is not None and reinit_pooler) else None,
                   "blocks": reinit_blocks, "params": reinit_names},
        "mixout": {"p": float(mixout), "targets": mixout_targets, "granularity": mixout_granularity,
                   "layers": mixout_layers, "dropout_zeroed": dropout_zeroed},
        "llrd": float(llrd),
        "param_groups": [{"name": g["name"], "depth": g["depth"], "lr": g["lr"], "weight_decay": g["weight_decay"],
                          "n_params": g["n_params"], "n_tensors": len(g["params"])} for g in groups],
        "pretrained_wd": {"lambda": float(pretrained_wd), "new_params": pretrained_wd_new_params,
                          "new_param_names": sorted(new_names),
                          "n_tensors_decayed": len(decayed) if pretrained_wd > 0 else 0,
                          "n_new_tensors_in_decay_groups": n_new_decayed},
        "n_trainable_params": sum(p.numel() for p in named.values() if p.requires_grad),
    }
    after_step_for = partial(_prior_wd_for, strength=float(pretrained_wd), new_param_names=frozenset(new_names),
                             new_params=pretrained_wd_new_params)
    return Prepared(model=model, optimizer=opt, after_step=after_step, blocks=blocks, record=record,
                    after_step_for=after_step_for)


def _prior_wd_for(optimizer: torch.optim.Optimizer, named_params: Mapping[str, torch.Tensor], *, strength: float,
                  new_param_names: Collection[str], new_params: str) -> Callable[[], None]:
    if strength == 0:
        return _noop
    return build_prior_wd(optimizer, named_params, snapshot(named_params), strength=strength,
                          new_param_names=new_param_names, new_params=new_params)


def _safe_std(model: nn.Module) -> float | None:
    try:
        return init_std(getattr(model, "config", None))
    except ConfigError:
        return None

"""The paper's techniques inside an existing Hugging Face ``Trainer`` script (Zhang et al., ICLR 2021, Sec. 4-7).

Two lines in a ``Trainer`` script::

    from stabletune.integrations.hf import prepare_for_trainer

    st = prepare_for_trainer(model, args, reinit_layers=3, reinit_pooler=True, optimizer="adamw")
    trainer = Trainer(model=model, args=args, train_dataset=..., optimizers=st.optimizers, callbacks=st.callbacks)

:func:`prepare_for_trainer` runs :func:`stabletune.techniques.prepare` -- the same function stabletune's own loop
uses -- so the order is fixed in one place: re-init (Sec. 5) -> snapshot of the starting weights -> Mixout
(Sec. 7.1) -> parameter groups with LLRD (Sec. 7.1) -> debiased Adam or BERTAdam (Sec. 4). The model is modified
in place *before* ``Trainer`` exists, so re-init always precedes training, and the optimizer holds exactly the
parameters that will be trained.

What ``Trainer`` gets, and why the order cannot go wrong:

* ``optimizers=(optimizer, None)``: stabletune's optimizer; ``Trainer`` builds its own learning-rate schedule on
  it from ``args`` (``lr_scheduler_type``, ``warmup_steps``/``warmup_ratio``), keeping each group's peak rate
  (LLRD). ``args.learning_rate``, ``weight_decay``, ``adam_beta1/2`` and ``adam_epsilon`` configure the optimizer:
  ``TrainingArguments`` stays the one place for the recipe.
* weight decay toward the pre-trained weights (Sec. 7.1) must run right after every optimizer step and before the
  scheduler moves the rate. It is registered as a step post-hook on the optimizer itself
  (``Optimizer.register_step_post_hook``), so it runs exactly when the optimizer really steps (also when a
  mixed-precision scaler skips a step: then neither runs), whatever the training loop.
* ``callbacks=[StabletuneCallback]``: checks when training starts that ``Trainer`` trains the prepared model with
  the prepared optimizer (a forgotten ``optimizers=`` would silently train with Hugging Face's AdamW and none of
  the techniques) and raises otherwise.

Not supported: ``model_init`` (Trainer re-creates the model: prepare inside your ``model_init`` instead and pass
the optimizer yourself), DeepSpeed/FSDP (they build their own optimizer).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from stabletune.techniques import prepare

try:  # the callback base class; the module stays importable (for docs, errors) without transformers
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - transformers is a core dependency
    TrainerCallback = object  # type: ignore[misc,assignment]


class StabletuneCallback(TrainerCallback):
    """Refuses to train unless ``Trainer`` uses the model and optimizer that :func:`prepare_for_trainer` made."""

    def __init__(self, optimizer: torch.optim.Optimizer, param_ids: frozenset[int]):
        self.optimizer = optimizer
        self.param_ids = param_ids

    def on_train_begin(self, args, state, control, **kwargs: Any):
        opt = kwargs.get("optimizer")
        inner = getattr(opt, "optimizer", opt)  # accelerate wraps it in an AcceleratedOptimizer
        if inner is not self.optimizer:
            raise ValueError("stabletune: Trainer is not using the optimizer prepared by prepare_for_trainer(); "
                             "pass optimizers=st.optimizers to Trainer")
        model = kwargs.get("model")
        if model is not None:
            trained = {id(p) for p in model.parameters() if p.requires_grad}
            if not trained <= self.param_ids:
                raise ValueError("stabletune: Trainer's model is not the model passed to prepare_for_trainer() "
                                 "(its parameters are not in the prepared optimizer)")
        return control


@dataclass
class TrainerSetup:
    """What :func:`prepare_for_trainer` returns: pass ``optimizers`` and ``callbacks`` to ``Trainer``."""

    model: nn.Module
    """The same model object, re-initialised / with Mixout layers as asked."""
    optimizer: torch.optim.Optimizer
    callback: StabletuneCallback
    record: dict = field(default_factory=dict)
    """JSON-able facts: order, parameter groups, re-initialised and Mixout layers (as a stabletune run records)."""

    @property
    def optimizers(self) -> tuple[torch.optim.Optimizer, None]:
        """``Trainer(optimizers=...)``: the optimizer, and None so Trainer builds the schedule from ``args``."""
        return (self.optimizer, None)

    @property
    def callbacks(self) -> list[StabletuneCallback]:
        """``Trainer(callbacks=...)`` (append your own)."""
        return [self.callback]


_PREPARED = "_stabletune_prepared"  # set on a model once prepare_for_trainer() has changed it
_ARGS_RATES = ("learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon")  # read from args


def _check_arguments(model: Any, args: Any, *, seed: Any, init_generator: Any, llrd: Any, pretrained_wd: Any,
                     mixout: Any) -> None:
    """Refuse, before the model is touched, what the CLI would refuse: each error names the argument."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"invalid model: expected a torch.nn.Module (a *ForSequenceClassification model), "
                         f"got {type(model).__name__}")
    if getattr(model, _PREPARED, False):
        raise ValueError("invalid model: it was already prepared by prepare_for_trainer() (re-init and Mixout "
                         "would be applied twice); load the model again")
    missing = [name for name in (*_ARGS_RATES, "seed") if not hasattr(args, name)]
    if missing:
        raise ValueError(f"invalid args: expected transformers.TrainingArguments, got {type(args).__name__} "
                         f"without {', '.join(missing)}")
    numbers = [(f"args.{name}", getattr(args, name)) for name in _ARGS_RATES]
    for name, value in numbers + [("llrd", llrd), ("pretrained_wd", pretrained_wd), ("mixout", mixout)]:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"invalid {name}: {value!r} (a finite number)")
    if init_generator is None:
        name = "args.seed" if seed is None else "seed"
        value = args.seed if seed is None else seed
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
            raise ValueError(f"invalid {name}: {value!r} (an integer in [0, 2**64))")
    elif not isinstance(init_generator, torch.Generator):
        raise ValueError(f"invalid init_generator: expected a torch.Generator, got {type(init_generator).__name__}")


def prepare_for_trainer(model: nn.Module, args: Any, *, reinit_layers: int = 0, reinit_pooler: bool = False,
                        mixout: float = 0.0, mixout_targets: str = "all", mixout_granularity: str = "neuron",
                        optimizer: str = "adamw", llrd: float = 1.0, pretrained_wd: float = 0.0,
                        pretrained_wd_new_params: str = "init", new_param_names: Collection[str] = (),
                        seed: int | None = None, init_generator: torch.Generator | None = None) -> TrainerSetup:
    """Apply stabletune's techniques to ``model`` and build what ``transformers.Trainer`` needs.

    Args:
        model: a ``*ForSequenceClassification`` model, loaded (head drawn) and not yet given to ``Trainer``.
            Modified in place.
        args: the script's ``TrainingArguments``: ``learning_rate`` (peak rate of the head under LLRD),
            ``weight_decay`` (decoupled, toward 0; biases and norms exempt), ``adam_beta1``, ``adam_beta2``,
            ``adam_epsilon`` and ``seed`` are read from it.
        reinit_layers: re-initialise the top L Transformer blocks (Section 5).
        reinit_pooler: re-initialise the pooler (the head's dense layer for families without one; Section 5).
        mixout: Mixout probability p in [0, 1), 0 = off (Section 7.1). Turns dropout off in the model.
        mixout_targets: ``all``, ``encoder`` or comma-separated name parts of the nn.Linear layers to wrap.
        mixout_granularity: ``neuron`` (Lee et al.'s code) or ``element``.
        optimizer: ``adamw`` (debiased Adam) or ``bertadam`` (no bias correction; Section 4).
        llrd: layer-wise learning-rate decay eta in (0, 1], 1 = off (Section 7.1).
        pretrained_wd: weight decay toward the pre-trained weights lambda >= 0, 0 = off (Section 7.1).
        pretrained_wd_new_params: what the head and re-initialised weights decay toward: ``init``, ``zero``,
            ``none``.
        new_param_names: the parameters the checkpoint did not provide (the task head), e.g.
            ``from_pretrained(..., output_loading_info=True)[1]["missing_keys"]``; only needed with
            ``pretrained_wd_new_params`` ``zero`` or ``none``.
        seed: seed of the re-initialised weights; default ``args.seed``.
        init_generator: a CPU generator to draw re-initialised weights from instead of ``seed``.

    Returns:
        A :class:`TrainerSetup`; pass ``optimizers=setup.optimizers, callbacks=setup.callbacks`` to ``Trainer``.

    Raises:
        ValueError: an invalid technique value (naming the argument), or a technique that needs the family table
            on an architecture outside it (stabletune's own ConfigError, raised as ValueError: a library call).
    """
    from stabletune.errors import UserError

    _check_arguments(model, args, seed=seed, init_generator=init_generator, llrd=llrd, pretrained_wd=pretrained_wd,
                     mixout=mixout)
    if init_generator is None:
        init_generator = torch.Generator().manual_seed(int(args.seed if seed is None else seed))
    try:
        prepared = prepare(
            model, init_generator=init_generator, reinit_layers=reinit_layers, reinit_pooler=reinit_pooler,
            mixout=mixout, mixout_targets=mixout_targets, mixout_granularity=mixout_granularity,
            optimizer=optimizer, lr=float(args.learning_rate), betas=(float(args.adam_beta1), float(args.adam_beta2)),
            eps=float(args.adam_epsilon), weight_decay=float(args.weight_decay), llrd=llrd,
            pretrained_wd=pretrained_wd, pretrained_wd_new_params=pretrained_wd_new_params,
            new_param_names=new_param_names)
    except UserError as e:
        raise ValueError(str(e)) from None
    opt = prepared.optimizer
    after_step = prepared.after_step
    if pretrained_wd > 0:
        # On the optimizer itself: runs after every real step, before Trainer's scheduler.step() (the step's lr).
        opt.register_step_post_hook(lambda _opt, _args, _kwargs: after_step())
    setattr(prepared.model, _PREPARED, True)
    param_ids = frozenset(id(p) for g in opt.param_groups for p in g["params"])
    record = {**prepared.record, "integration": "transformers.Trainer",
              "post_step": "optimizer step post-hook" if pretrained_wd > 0 else None}
    return TrainerSetup(model=prepared.model, optimizer=opt, callback=StabletuneCallback(opt, param_ids),
                        record=record)


__all__ = ["prepare_for_trainer", "TrainerSetup", "StabletuneCallback"]

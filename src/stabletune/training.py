"""Fine-tuning runs, top to bottom: set-up -> the step loop with periodic evaluation -> test and write.

The recipe is Section 3 of Zhang et al. (ICLR 2021): batch 32, peak LR 2e-5 with linear warm-up over the first
10 % of updates then linear decay to 0, gradient clipping at 1.0, dropout 0.1, 3 epochs, max length 128,
10 evaluations on the validation split, the best checkpoint (by the task metric) evaluated on the test split.
A run knows nothing of studies: ``train(cfg, out_dir)`` reads one config and writes one run folder.

:func:`train_ensemble` trains K runs that differ only in their seeds at once (the paper's conclusions rest on
many seeds per setting). Both go through the same engine (:mod:`stabletune.engine`) and differ only in the step
function: :class:`~stabletune.engine.loop.SingleStep` or the vectorised
:class:`~stabletune.engine.ensemble.EnsembleStep`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from typing import Callable

import torch

from stabletune.config import RunConfig
from stabletune.engine.events import Callback, Event
from stabletune.engine.finish import RunResult, finish
from stabletune.engine.loop import SingleStep, Step, loop
from stabletune.engine.runlog import staged
from stabletune.engine.setup import Run, resolve_device, setup
from stabletune.errors import ConfigError
from stabletune.integrations.tensorboard import logged

__all__ = ["train", "train_ensemble", "train_members", "RunResult", "Event", "Callback", "member_key",
           "sequential_reason", "MEMBER_FIELDS"]


def train(cfg: RunConfig, out_dir: str | None = None, *, callback: Callback | None = None) -> RunResult:
    """Fine-tune once as configured; write the run folder to ``out_dir`` (default ``cfg.out``; None: write nothing).

    ``callback`` gets an :class:`~stabletune.engine.events.Event` after every update and every evaluation;
    returning True stops the run (status "killed").

    Example:
        >>> from stabletune import make_config, train
        >>> res = train(make_config({"task": "rte", "data_dir": "../shared/data/glue", "max_steps": 20}), "runs/x")
        >>> res.best["test"]["acc"]
    """
    return train_members([cfg], [out_dir if out_dir is not None else cfg.out], SingleStep, callback=callback)[0]


def train_members(cfgs: list[RunConfig], out_dirs: list[str | None], make_step: Callable[[Run], Step], *,
                  callback: Callback | None = None) -> list[RunResult]:
    """The one body of every run: set up the members, run the step loop, test and write each member's folder."""
    device = resolve_device(cfgs[0].device)
    # Nothing a run does may change the caller's global RNG state (model loading and dropout draw from it).
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        run = setup(cfgs, out_dirs, device)        # data, split, tokenised sets, prepared models, schedule
        with staged(run.folders):                  # a failure anywhere below leaves no run folder
            step = make_step(run)                  # how the members update: the only part that varies
            with logged(run.members, callback) as events:  # + TensorBoard (--report-to), closed after the loop
                state = loop(run, step, events)    # the step loop + periodic evaluation, per member
            step.close()
            return finish(run, state, step)        # test last and best checkpoints, write, commit


# ------------------------------------------------------------------------------------------------
# K seeds at once
# ------------------------------------------------------------------------------------------------
MEMBER_FIELDS = ("seed", "init_seed", "data_seed", "out", "overwrite", "progress")
"""The only RunConfig fields in which members of one ensemble may differ."""


def member_key(cfg: RunConfig) -> str:
    """Runs with equal keys may be members of one ensemble (their configs differ only in :data:`MEMBER_FIELDS`)."""
    return json.dumps({k: v for k, v in cfg.to_dict().items() if k not in MEMBER_FIELDS}, sort_keys=True,
                      default=str)


def sequential_reason(cfg: RunConfig) -> str | None:
    """Why ``cfg``'s recipe cannot be vectorised (None when it can)."""
    if cfg.mixout > 0:
        return "mixout replaces nn.Linear layers by MixoutLinear modules that draw their own masks"
    if cfg.precision == "fp16":
        return "fp16 loss scaling would skip a step for all members when one member overflows"
    from stabletune.model import run_encoder

    if run_encoder(cfg) == "unpadded":  # the run id says unpadded, and members cannot share one packed layout
        return "the run uses the unpadded encoder (set encoder_impl: hf to train seeds as one vectorised model)"
    return None


def train_ensemble(cfgs: list[RunConfig], out_dirs: list[str | None] | None = None, *,
                   callback: Callback | None = None) -> list[RunResult]:
    """Train K runs that differ only in their seeds as one vectorised model; one RunResult per member.

    Each member is the run :func:`train` would make, up to float rounding, with one exception: with dropout > 0
    its dropout masks are drawn differently (see :mod:`stabletune.engine.ensemble`). Recipes that cannot be
    vectorised (:func:`sequential_reason`: mixout, fp16) and a single config train the members one after the
    other as ordinary runs. ``techniques["ensemble"]`` of each result says which.

    Args:
        cfgs: member configs; they may differ only in :data:`MEMBER_FIELDS` (else ConfigError).
        out_dirs: run folder of each member (default: each config's ``out``; None writes nothing).
        callback: gets every member's :class:`~stabletune.engine.events.Event` (``member`` = its index);
            returning True stops the run in progress: every member of a vectorised ensemble, the current member
            of a sequential one.

    Example:
        >>> cfgs = [make_config({"task": "rte", "split": "paper-1k", "seed": s}) for s in range(4)]
        >>> results = train_ensemble(cfgs)
    """
    if not cfgs:
        raise ConfigError("train_ensemble: give at least one run config")
    out_dirs = list(out_dirs) if out_dirs is not None else [c.out for c in cfgs]
    if len(out_dirs) != len(cfgs):
        raise ConfigError(f"train_ensemble: {len(out_dirs)} output folders for {len(cfgs)} configs")
    base = cfgs[0].to_dict()
    for i, c in enumerate(cfgs[1:], 1):
        diff = [k for k, v in c.to_dict().items() if k not in MEMBER_FIELDS and v != base[k]]
        if diff:
            raise ConfigError(f"train_ensemble: member {i} differs from member 0 in {', '.join(diff)}; "
                              f"members may differ only in {', '.join(MEMBER_FIELDS)}")
    named_outs = [d for d in out_dirs if d]
    if len(set(map(str, named_outs))) != len(named_outs):
        raise ConfigError("train_ensemble: two members would write the same output folder")
    reason = sequential_reason(cfgs[0]) if len(cfgs) > 1 else "a single member is an ordinary run"
    if reason is None:
        from stabletune.engine.ensemble import EnsembleStep

        return train_members(cfgs, out_dirs, EnsembleStep, callback=callback)
    results = []
    for k, (c, d) in enumerate(zip(cfgs, out_dirs)):
        note = {"ensemble": {"size": len(cfgs), "member": k, "mode": "sequential", "reason": reason}}
        as_member = (lambda e, k=k: callback(replace(e, member=k))) if callback else None
        results += train_members([c], [d], partial(SingleStep, note=note), callback=as_member)
    return results

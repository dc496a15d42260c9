"""The step loop with periodic evaluation: the one loop body of every run.

Section 3's recipe: batches of the data seed's order, one update per batch (gradient clipping at 1.0, linear
warm-up and decay), ``num_evals`` evaluations on the validation split with a copy of the best weights kept (the
best checkpoint by the task metric is tested later, really restored). A non-finite training loss stops a member
where it is ("diverged"), keeping the weights it had before that update.

How the members update is the only part that varies, and it is the *step function* (:class:`Step`):
:class:`SingleStep` here for an ordinary run, :class:`stabletune.engine.ensemble.EnsembleStep` for K members
trained as one vectorised model. Everything else (batches, divergence, logs, evaluations, best weights, events,
timings) is this loop's, kept per member in :class:`MemberState`.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from stabletune.data.batching import Encoded, collate, epoch_batches
from stabletune.engine.events import Callback, Event
from stabletune.engine.setup import Run, derive_seed


# ------------------------------------------------------------------------------------------------
# Loss and evaluation
# ------------------------------------------------------------------------------------------------
def compute_loss(logits: torch.Tensor, labels: torch.Tensor, is_regression: bool) -> torch.Tensor:
    if is_regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


@torch.inference_mode()
def evaluate(model, enc: Encoded, spec, *, batch_size: int, device: torch.device, pad_id: int,
             autocast, pad_to: int | None = None) -> tuple[dict[str, float], float, np.ndarray]:
    """Metrics, mean loss and predictions on one split. Batches sorted by length to waste no compute on padding.
    An empty split (no test file) gives ``(None, None, [])``."""
    from stabletune.metrics import compute_metrics

    if len(enc) == 0:
        return None, None, np.empty(0)
    was_training = model.training
    model.eval()
    order = np.argsort(-enc.lengths, kind="stable")
    preds = np.empty(len(enc), dtype=np.float64 if spec.is_regression else np.int64)
    total_loss = 0.0
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = {k: v.to(device) for k, v in collate(enc, idx, pad_id=pad_id, pad_to=pad_to).items()}
        labels = batch.pop("labels")
        with autocast():
            logits = model(**batch).logits
        total_loss += compute_loss(logits, labels, spec.is_regression).item() * len(idx)
        out = logits.float().squeeze(-1) if spec.is_regression else logits.argmax(-1)
        preds[idx] = out.cpu().numpy()
    model.train(was_training)
    metrics = compute_metrics(spec, preds, enc.labels)
    return metrics, total_loss / max(1, len(enc)), preds


def _better(value: float, best: float | None) -> bool:
    if best is None:
        return True
    if math.isnan(best):
        return not math.isnan(value)
    return value > best  # ties keep the earlier checkpoint


# ------------------------------------------------------------------------------------------------
# The step function
# ------------------------------------------------------------------------------------------------
class Step(Protocol):
    """How the members of a run take one update. The loop calls, per batch: :meth:`forward`, then
    :meth:`freeze` for each member whose loss is not finite, then (if any member is left) :meth:`update`."""

    dropout_seed: int
    """Seed of torch's global generator for the run's dropout (and mixout) masks, set right before the loop."""

    def forward(self, parts: list[dict[str, torch.Tensor]]) -> list[float]:
        """Forward one collated batch per member (CPU tensors with ``labels``); the members' losses."""

    def freeze(self, k: int) -> None:
        """Member k diverged at this batch: it keeps the weights it has now, whatever later updates do."""

    def update(self, alive: list[bool]) -> tuple[float, list[float | None]]:
        """Backward, clip, optimizer step, after-step hook, schedule, for the living members; returns the LR used
        (the first parameter group's) and each member's gradient norm before clipping (None: clipping off)."""

    def close(self) -> None:
        """After the loop: leave every member's model holding its own final weights."""

    def techniques(self, k: int) -> dict:
        """What member k's record says about how it was stepped (merged into ``RunResult.techniques``)."""


class SingleStep:
    """The step function of an ordinary run: one model, its prepared optimizer, a GradScaler under fp16.

    Args:
        run: the set-up run (one member).
        note: extra ``techniques`` entries for the record (the sequential fall-back of an ensemble says so).
    """

    def __init__(self, run: Run, *, note: dict | None = None):
        (member,) = run.members
        self.model, self.optimizer = member.model, member.prepared.optimizer
        self.after_step = member.prepared.after_step
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, run.schedule)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.scaler = torch.amp.GradScaler("cuda") if run.precision == "fp16" else None
        self.device, self.autocast, self.max_grad_norm = run.device, run.autocast, run.cfg.max_grad_norm
        self.is_regression = run.spec.is_regression
        self.dropout_seed = derive_seed(member.cfg.resolved_data_seed, "dropout")
        self.note = dict(note or {})
        self._loss: torch.Tensor | None = None

    def forward(self, parts: list[dict[str, torch.Tensor]]) -> list[float]:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in parts[0].items()}
        labels = batch.pop("labels")
        with self.autocast():
            logits = self.model(**batch).logits
        self._loss = compute_loss(logits, labels, self.is_regression)
        return [self._loss.item()]

    def freeze(self, k: int) -> None:
        pass  # the only member: the loop stops before any further update

    def update(self, alive: list[bool]) -> tuple[float, list[float | None]]:
        loss, scaler, optimizer = self._loss, self.scaler, self.optimizer
        self._loss = None
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm).item()
                     if self.max_grad_norm > 0 else None)
        lr = optimizer.param_groups[0]["lr"]
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        self.after_step()  # weight decay toward pre-trained weights uses this step's lr (Section 7.1)
        self.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return lr, [grad_norm]

    def close(self) -> None:
        self._loss = None

    def techniques(self, k: int) -> dict:
        return dict(self.note)


# ------------------------------------------------------------------------------------------------
# Per-member state and the loop
# ------------------------------------------------------------------------------------------------
@dataclass
class MemberState:
    """One member's record of the loop: its curves, best weights, divergence and timing."""

    alive: bool = True
    status: str = "finished"  # finished | diverged | killed
    error: str | None = None
    steps: int = 0
    """Updates this member took (less than the run's when it diverged)."""
    examples: int = 0
    tokens: int = 0
    eval_s: float = 0.0
    train_log: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    best_metric: float | None = None
    best_val: dict | None = None
    best_step: int | None = None
    best_state: dict | None = None
    last_val: dict | None = None


@dataclass
class LoopState:
    """What the loop hands to :func:`stabletune.engine.finish.finish`."""

    members: list[MemberState]
    step: int = 0
    train_s: float = 0.0
    """Seconds in updates (evaluation excluded), shared by all members."""


def loop(run: Run, step: Step, callback: Callback | None = None) -> LoopState:
    """Train the run's members for ``run.total`` updates with evaluations at ``run.evals_at``."""
    from tqdm.auto import tqdm

    from stabletune.metrics import main_metric
    from stabletune.techniques.param_distance import block_distances

    cfg, spec, K = run.cfg, run.spec, len(run.members)
    state = LoopState(members=[MemberState() for _ in range(K)])
    ev = run.eval_kwargs()
    train_enc = run.enc["train"]
    lengths = train_enc.lengths
    # Each member's data order comes from its own generator (its data seed); dropout (and mixout masks) draw from
    # torch's global generator, seeded here (runs are inside fork_rng, so the caller's global state is untouched).
    order_gens = [torch.Generator().manual_seed(derive_seed(m.cfg.resolved_data_seed, "order")) for m in run.members]
    torch.manual_seed(step.dropout_seed)
    batches: list[list] = [[] for _ in range(K)]
    bar = tqdm(total=run.total, desc=f"{spec.name} train" + (f" x{K}" if K > 1 else ""), unit="step",
               disable=not cfg.progress, dynamic_ncols=True, file=sys.stderr)
    for m in run.members:
        m.model.train()
    t0 = time.perf_counter()
    while state.step < run.total:
        for k in range(K):
            if not batches[k]:  # a new epoch: a fresh seed-driven order
                batches[k] = epoch_batches(lengths, batch_size=cfg.batch_size, generator=order_gens[k],
                                           group_by_length=cfg.group_by_length)
        idx = [batches[k].pop(0) for k in range(K)]  # every member draws, living or not (its order is its own)
        parts = [collate(train_enc, i, pad_id=run.pad_id, pad_to=run.pad_to) for i in idx]
        losses = step.forward(parts)
        for k, (ms, v) in enumerate(zip(state.members, losses)):
            if ms.alive and not math.isfinite(v):  # diverged: stop, keep what was learned so far, say so
                ms.alive, ms.status = False, "diverged"
                ms.error = f"non-finite training loss {v} at step {state.step + 1}"
                step.freeze(k)
        if not any(ms.alive for ms in state.members):
            break
        lr, grad_norms = step.update([ms.alive for ms in state.members])
        state.step += 1
        width = max(int(p["input_ids"].shape[1]) for p in parts)
        stop = False
        for k, ms in enumerate(state.members):
            if not ms.alive:
                continue
            member_lengths = lengths[idx[k]]
            ms.steps = state.step
            ms.examples += len(idx[k])
            ms.tokens += int(member_lengths.sum())
            ms.train_log.append({"step": state.step, "loss": losses[k], "lr": lr, "grad_norm": grad_norms[k]})
            if callback and callback(Event("step", state.step, run.total, member=k, loss=losses[k], lr=lr,
                                           grad_norm=grad_norms[k], width=width,
                                           lengths=tuple(member_lengths.tolist()))):
                stop = True
        bar.update(1)
        bar.set_postfix(loss=f"{losses[0]:.4f}", refresh=False)

        if state.step in run.evals_at:
            state.train_s += time.perf_counter() - t0
            for k, (m, ms) in enumerate(zip(run.members, state.members)):
                if not ms.alive:
                    continue
                t1 = time.perf_counter()
                val, val_loss, _ = evaluate(m.model, run.enc["validation"], spec, **ev)
                score = main_metric(spec, val)
                record = {"step": state.step, "epoch": state.step / run.per_epoch, "val": val, "val_loss": val_loss}
                if m.reference is not None:
                    record["param_distance"] = block_distances(m.prepared.blocks, m.reference)
                ms.evals.append(record)
                ms.last_val = val
                if _better(score, ms.best_metric):  # keep a copy of the best weights (really restored later)
                    ms.best_metric, ms.best_val, ms.best_step = score, val, state.step
                    ms.best_state = {n: v.detach().clone() for n, v in m.model.state_dict().items()}
                ms.eval_s += time.perf_counter() - t1
                if callback and callback(Event("eval", state.step, run.total, member=k, val=val, val_loss=val_loss,
                                               score=score, param_distance=record.get("param_distance"))):
                    stop = True
            if state.members[0].alive:
                bar.set_postfix(loss=f"{losses[0]:.4f}", val=f"{main_metric(spec, state.members[0].last_val):.4f}")
            t0 = time.perf_counter()
        if stop:
            for ms in state.members:
                if ms.alive:
                    ms.status = "killed"
            break
    state.train_s += time.perf_counter() - t0
    bar.close()
    return state

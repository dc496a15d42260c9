"""K seeds of one recipe stepped as a single vectorised model (``torch.func``): the ensemble's step function.

The paper's conclusions rest on many seeds per setting (Sections 4-7 report 20-50 runs each). Runs that share
task, split, model and recipe differ only in their seeds, so K of them can be trained as one model whose every
parameter carries a leading member dimension: ``torch.func.stack_module_state`` stacks the K initialisations,
``torch.func.functional_call`` runs the architecture with member k's weights, and ``torch.func.vmap``
(``randomness="different"``) maps it over the members. One backward pass and one fused optimizer step then update
all members; every operation is per member, so no information crosses members.

Only the update differs from an ordinary run (:class:`EnsembleStep` replaces
:class:`stabletune.engine.loop.SingleStep`); set-up, the loop, evaluation, best weights, divergence and finishing
are the engine's, per member. What each member keeps as its own, exactly as in a separate run: its weight
initialisation, its data order (members see batches of different lengths; each step pads all members' batches to
the longest one, which changes nothing but float rounding because the attention mask covers the padding), its
gradient clipping (norm over its own parameters), optimizer state, LR schedule and pre-trained weight decay.

What differs: dropout masks. Dropout cannot take a per-member generator inside ``vmap``; with
``randomness="different"`` each member draws different masks, from one generator seeded from all members' data
seeds. With dropout > 0 a member is therefore a run of the same distribution as its separate run, but not the
same bits; with dropout 0 it matches the separate run up to float rounding (tested). The record says so.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from stabletune.engine.loop import compute_loss
from stabletune.engine.setup import Run, derive_seed


def _attention_bias(mask: torch.Tensor, attn_implementation: str) -> torch.Tensor:
    """A ready 4-D mask ``[..., B, 1, 1, T]`` from a 0/1 padding mask, so that Transformers' mask helpers (which
    inspect the mask's values, something vmap forbids) return it as it is. SDPA takes a boolean mask (True =
    attend); eager attention adds a float bias (0 or the dtype's minimum), as Transformers builds it."""
    m = mask[..., :, None, None, :]
    if attn_implementation == "sdpa":
        return m.bool()
    return (1.0 - m.float()) * torch.finfo(torch.float32).min


def stack_batch(parts: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack members' batches ``[B, T_k]`` into ``[K, B, max T_k]`` (pads: pad id, mask 0, type 0)."""
    width = max(p["input_ids"].shape[1] for p in parts)
    sizes = {p["input_ids"].shape[0] for p in parts}
    if len(sizes) != 1:  # epoch_batches gives every member the same batch sizes in the same positions
        raise RuntimeError(f"ensemble members got batches of different sizes {sorted(sizes)}")
    out = {}
    for key in parts[0]:
        if key == "labels":
            out[key] = torch.stack([p[key] for p in parts])
        else:
            fill = pad_id if key == "input_ids" else 0
            out[key] = torch.stack([F.pad(p[key], (0, width - p[key].shape[1]), value=fill) for p in parts])
    return out


class EnsembleStep:
    """The step function of K members trained as one :class:`StackedModels`: a vmapped forward, one backward,
    per-member clipping, one optimizer over the stacked weights (each member's slice updated as its own optimizer
    would), the members' pre-trained weight decay on the stacked weights, and a diverged member's weights frozen.

    Member modules keep views of the stacked weights during training (evaluation and best-weight copies see each
    member's current weights); :meth:`close` gives them their own storage again.
    """

    def __init__(self, run: Run):
        self.K, self.device, self.autocast, self.pad_id = len(run.members), run.device, run.autocast, run.pad_id
        self.max_grad_norm = run.cfg.max_grad_norm
        models = [m.model for m in run.members]
        for model in models:
            model.train()  # before stacking: the stacked architecture copies member 0's mode
        first = run.members[0].prepared
        self.stacked = StackedModels(models, is_regression=run.spec.is_regression)
        self.params = self.stacked.params
        self.optimizer = self.stacked.optimizer_like(first.optimizer, models[0])
        for m in run.members:
            m.prepared.optimizer = None  # the stacked optimizer replaces the members' (never stepped)
        # theta0 of pre-trained weight decay: the stacked weights right after prepare()
        self.after_step = first.after_step_for(self.optimizer, self.params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, run.schedule)
        data_seeds = ",".join(str(m.cfg.resolved_data_seed) for m in run.members)
        self.dropout_seed = derive_seed(run.members[0].cfg.resolved_data_seed, f"ensemble-dropout:{data_seeds}")
        self.dropout_note = ("vmap randomness='different' from one generator seeded by the members' data seeds "
                             f"[{data_seeds}]")
        self.frozen: list[dict | None] = [None] * self.K
        self._losses: torch.Tensor | None = None

    def forward(self, parts: list[dict[str, torch.Tensor]]) -> list[float]:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in stack_batch(parts, self.pad_id).items()}
        labels = batch.pop("labels")
        with self.autocast():
            self._losses = self.stacked.losses(batch, labels)
        return self._losses.detach().float().cpu().tolist()

    def freeze(self, k: int) -> None:
        self.frozen[k] = {n: self.params[n].detach()[k].clone() for n in self.stacked.trainable}

    def update(self, alive: list[bool]) -> tuple[float, list[float | None]]:
        losses, self._losses = self._losses, None
        living = torch.tensor(alive, device=losses.device)
        torch.where(living, losses, torch.zeros_like(losses)).sum().backward()
        grad_norms = self.stacked.clip_grad_norm_(self.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.after_step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._restore_frozen()
        return lr, grad_norms if grad_norms is not None else [None] * self.K

    @torch.no_grad()
    def _restore_frozen(self) -> None:
        for k, w in enumerate(self.frozen):
            if w is not None:
                for n, v in w.items():
                    self.params[n][k].copy_(v)

    def close(self) -> None:
        self._losses = None
        self._restore_frozen()
        self.stacked.release()  # members own their weights again (a saved model must not be a view into the stack)
        # the stacked copies, optimizer state and hook are not needed for testing: free them
        self.stacked = self.params = self.optimizer = self.scheduler = self.after_step = None

    def techniques(self, k: int) -> dict:
        return {"ensemble": {"size": self.K, "member": k, "mode": "vectorised", "dropout": self.dropout_note}}


class StackedModels:
    """K models of one architecture as one: parameters stacked along a leading member dimension, a vmapped loss.

    After construction each member module's parameters are views of its slice of the stacked tensors, so the
    member modules always show their member's current weights (for evaluation, distances, best-state copies)
    at no memory cost; :meth:`release` gives them their own storage again.

    Args:
        models: K modules of the same class and configuration, all in the same train/eval mode.
        is_regression: loss is MSE (else cross-entropy), as :func:`stabletune.engine.loop.compute_loss`.
    """

    def __init__(self, models: list[torch.nn.Module], *, is_regression: bool):
        self.K = len(models)
        self.models = models
        self.params, self.buffers = torch.func.stack_module_state(models)
        self.trainable = [n for n, p in self.params.items() if p.requires_grad]
        base = copy.deepcopy(models[0]).to("meta")
        # Inside vmap the attention is the eager one (batched matmuls and softmax): torch has no batching rule
        # for the CPU SDPA kernel and would loop over members. Same function, float rounding aside.
        if hasattr(base.config, "_attn_implementation"):
            base.config._attn_implementation = "eager"
        attn = getattr(base.config, "_attn_implementation", "eager")
        for k, m in enumerate(models):
            for name, p in m.named_parameters():
                p.data = self.params[name].data[k]

        def member_loss(p, b, inputs, labels):
            inputs = dict(inputs)
            inputs["attention_mask"] = _attention_bias(inputs["attention_mask"], attn)
            logits = torch.func.functional_call(base, (p, b), (), inputs).logits
            return compute_loss(logits, labels, is_regression)

        self._losses = torch.func.vmap(member_loss, in_dims=(0, 0, 0, 0), randomness="different")

    def losses(self, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Per-member losses ``[K]`` of a stacked batch (``[K, B, T]`` tensors with an ``attention_mask``)."""
        return self._losses(self.params, self.buffers, batch, labels)

    def optimizer_like(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The same optimizer class, hyper-parameters and groups as ``optimizer`` (built for ``model``, one member),
        over the stacked parameters. Adam is elementwise, so each member's slice is updated as its own optimizer
        would update it."""
        name_of = {id(p): n for n, p in model.named_parameters()}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [self.params[name_of[id(p)]] for p in g["params"]]} for g in optimizer.param_groups]
        extra = {"fused": optimizer.fused} if hasattr(optimizer, "fused") else {}
        return type(optimizer)(groups, **optimizer.defaults, **extra)

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> list[float] | None:
        """``clip_grad_norm_`` for each member separately (the norm over its slice of every gradient); returns
        the members' norms before clipping, or None when clipping is off."""
        K = self.K
        grads = [self.params[n].grad for n in self.trainable if self.params[n].grad is not None]
        if max_norm <= 0 or not grads:
            return None
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(K, -1), 2, dim=1) for g in grads])  # [P, K]
        total = torch.linalg.vector_norm(norms, 2, dim=0)  # [K]
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.view(K, *([1] * (g.dim() - 1))).to(g.dtype))
        return total.tolist()

    @torch.no_grad()
    def release(self) -> None:
        """Give every member module its own copy of its current weights (detached from the stack)."""
        for m in self.models:
            for p in m.parameters():
                p.data = p.data.clone()


__all__ = ["EnsembleStep", "StackedModels", "stack_batch"]

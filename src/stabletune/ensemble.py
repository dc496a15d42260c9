"""K seeds of one recipe trained at once as a single vectorised model (``torch.func``).

The paper's conclusions rest on many seeds per setting (Sections 4-7 report 20-50 runs each). Runs of one
study that share task, split, model and recipe differ only in their seeds, so K of them can be trained as one
model whose every parameter carries a leading member dimension: ``torch.func.stack_module_state`` stacks the K
initialisations, ``torch.func.functional_call`` runs the architecture with member k's weights, and
``torch.func.vmap`` (``randomness="different"``) maps it over the members. One backward pass and one fused
optimizer step then update all members; every operation is per member, so no information crosses members.

What each member keeps as its own, exactly as in a separate :func:`stabletune.train.train` run:

* its weight initialisation (head and re-initialised layers drawn from its ``init_seed``);
* its data order (its own ``epoch_batches`` generator from its ``data_seed``). Members see batches of different
  lengths; each step pads all members' batches to the longest one, which changes nothing but float rounding
  because the attention mask covers the padding;
* its gradient clipping (norm over its own parameters), optimizer state, LR schedule, evaluations, best
  checkpoint, test scores, divergence, and run folder.

What differs: dropout masks. Dropout cannot take a per-member generator inside ``vmap``; with
``randomness="different"`` each member draws different masks, from one generator seeded from all members' data
seeds. With dropout > 0 a member is therefore a run of the same distribution as its separate run, but not the
same bits; with dropout 0 it matches the separate run up to float rounding (tested). The record says so.

Fallbacks (recorded in ``techniques["ensemble"]``): Mixout replaces layers by modules that draw their own masks
(module structure differs from the plain model), and fp16 loss scaling would skip a step for every member when
one overflows; both train the members one after the other with :func:`~stabletune.train.train` instead.

Speed (docs/performance.md): on one H200 a MiniLM-sized update costs 2.6-5.2x less per seed at K=4-8 than a
separate run's, and a whole 8-seed study ran ~2x faster with 2 workers x K=4 than with separate runs (evaluation
is still per member); studies use K=4 on GPUs by default. On CPU it is barely faster per seed (K=2 1.22x, K=4
1.08x) and needs ~0.85 GB more memory per member, so it is off by default there.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from stabletune.data.batching import collate, epoch_batches
from stabletune.config import RunConfig
from stabletune.errors import ConfigError
from stabletune.train import (Callback, RunResult, _better, _write_folder, compute_loss, derive_seed, encode_splits,
                              eval_steps, evaluate, linear_schedule, load_run_data, majority_baselines,
                              pad_length, peak_memory_mb, resolve_device, resolve_precision, run_environment,
                              task_record, train, update_counts)

log = logging.getLogger(__name__)

MEMBER_FIELDS = ("seed", "init_seed", "data_seed", "out", "overwrite", "progress")
"""The only RunConfig fields in which members of one ensemble may differ."""


def member_key(cfg: RunConfig) -> str:
    """Runs with equal keys may be members of one ensemble (their configs differ only in :data:`MEMBER_FIELDS`)."""
    import json

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

    Args:
        cfgs: member configs; they may differ only in :data:`MEMBER_FIELDS` (else ConfigError).
        out_dirs: run folder of each member (default: each config's ``out``; None writes nothing).
        callback: called with ``{"event": "step", "step", "total", "losses", "width", "lengths"}`` after every
            update and ``{"event": "eval", "step", "total", "member", "score", "val"}`` after every member's
            evaluation; returning True stops all members (status "killed").

    Returns:
        One :class:`~stabletune.train.RunResult` per member, in order, as :func:`~stabletune.train.train` would
        return it; ``techniques["ensemble"]`` says how the member was trained.

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
    if reason:
        results = [train(c, d, callback=callback) for c, d in zip(cfgs, out_dirs)]
        for k, r in enumerate(results):
            r.techniques["ensemble"] = {"size": len(cfgs), "member": k, "mode": "sequential", "reason": reason}
            if r.out_dir:
                from stabletune.runlog import write_json

                write_json(Path(r.out_dir) / "results.json",
                           {k2: v for k2, v in r.to_dict().items() if k2 not in ("train_log", "evals", "config")})
        return results
    device = resolve_device(cfgs[0].device)
    # As train(): nothing here may change the caller's global RNG state (model loading and dropout draw from it).
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        return _train_vectorised(cfgs, out_dirs, callback, device)


# ------------------------------------------------------------------------------------------------
# The vectorised run
# ------------------------------------------------------------------------------------------------
def _load_member(cfg: RunConfig, spec, device: torch.device):
    """Model, tokenizer and prepared techniques of one member, as train() builds them."""
    from stabletune.model import load_model
    from stabletune.techniques import prepare

    init_gen = torch.Generator().manual_seed(cfg.resolved_init_seed)
    loaded = load_model(cfg.model, num_labels=spec.num_labels, dropout=cfg.dropout,
                        attn_implementation=cfg.attn_implementation, init_generator=init_gen,
                        init_from=cfg.init_from, labels=spec.labels)
    prepared = prepare(
        loaded.model, init_generator=init_gen, reinit_layers=cfg.reinit_layers, reinit_pooler=cfg.reinit_pooler,
        mixout=cfg.mixout, mixout_targets=cfg.mixout_targets, mixout_granularity=cfg.mixout_granularity,
        optimizer=cfg.optimizer, lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, weight_decay=cfg.weight_decay, llrd=cfg.llrd,
        pretrained_wd=cfg.pretrained_wd, pretrained_wd_new_params=cfg.pretrained_wd_new_params,
        new_param_names=loaded.new_param_names)
    prepared.model.to(device)
    return loaded, prepared


def _attention_bias(mask: torch.Tensor, attn_implementation: str) -> torch.Tensor:
    """A ready 4-D mask ``[..., B, 1, 1, T]`` from a 0/1 padding mask, so that Transformers' mask helpers (which
    inspect the mask's values, something vmap forbids) return it as it is. SDPA takes a boolean mask (True =
    attend); eager attention adds a float bias (0 or the dtype's minimum), as Transformers builds it."""
    m = mask[..., :, None, None, :]
    if attn_implementation == "sdpa":
        return m.bool()
    return (1.0 - m.float()) * torch.finfo(torch.float32).min


def _stack_batch(parts: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
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


def _train_vectorised(cfgs: list[RunConfig], out_dirs: list[str | None], callback: Callback | None,
                      device: torch.device) -> list[RunResult]:
    from tqdm.auto import tqdm

    from stabletune.metrics import main_metric
    from stabletune.techniques.param_distance import block_distances, snapshot_blocks
    from stabletune.techniques.prior_wd import build_prior_wd
    from stabletune.runlog import RunFolder

    t_start = time.perf_counter()
    cfg, K = cfgs[0], len(cfgs)
    folders = [RunFolder(d, overwrite=c.overwrite) if d else None for c, d in zip(cfgs, out_dirs)]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    precision = resolve_precision(cfg.precision, device)

    # --- data once for all members (the split depends on the split seed only) -------------------------
    spec, splits = load_run_data(cfg)

    # --- members: own init seed each; then stacked. Member modules keep views of the stacked weights -----
    members = [_load_member(c, spec, device) for c in cfgs]
    tokenizer = members[0][0].tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = encode_splits(tokenizer, splits, max_length=cfg.max_seq_length, is_regression=spec.is_regression)
    per_epoch, total, warmup = update_counts(cfg, len(enc["train"]))

    models = [p.model for _, p in members]
    for m in models:
        m.train()
    stacked = StackedModels(models, is_regression=spec.is_regression)
    params = stacked.params
    optimizer = stacked.optimizer_like(members[0][1].optimizer, models[0])
    for _, prep in members:
        prep.optimizer = None
    after_step = (lambda: None)
    if cfg.pretrained_wd > 0:  # the same hook, on the stacked weights: theta0 is the weights right after prepare
        rec = members[0][1].record
        new_names = set(members[0][0].new_param_names) | set(rec["reinit"]["params"])
        after_step = build_prior_wd(optimizer.param_groups, params, {n: p.detach().clone() for n, p in params.items()},
                                    strength=float(cfg.pretrained_wd), new_param_names=new_names,
                                    new_params=cfg.pretrained_wd_new_params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total))
    references = [snapshot_blocks(prep.blocks) if cfg.track_param_distance else None for _, prep in members]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    evals_at = set(eval_steps(total, cfg.num_evals))
    for f in folders:
        if f:
            f.open()
    try:
        state = _Loop(K)
        order_gens = [torch.Generator().manual_seed(derive_seed(c.resolved_data_seed, "order")) for c in cfgs]
        data_seeds = ",".join(str(c.resolved_data_seed) for c in cfgs)
        pad_to = pad_length(cfg)
        ev = dict(batch_size=cfg.eval_batch_size, device=device, pad_id=pad_id, autocast=autocast, pad_to=pad_to)
        batches: list[list] = [[] for _ in range(K)]
        lengths = enc["train"].lengths
        bar = tqdm(total=total, desc=f"{spec.name} train x{K}", unit="step", disable=not cfg.progress,
                   dynamic_ncols=True, file=sys.stderr)
        # dropout masks (train_ensemble runs all this inside fork_rng)
        torch.manual_seed(derive_seed(cfgs[0].resolved_data_seed, f"ensemble-dropout:{data_seeds}"))
        t0 = time.perf_counter()
        while state.step < total:
            for k in range(K):
                if not batches[k]:
                    batches[k] = epoch_batches(lengths, batch_size=cfg.batch_size, generator=order_gens[k],
                                               group_by_length=cfg.group_by_length)
            idx = [batches[k].pop(0) for k in range(K)]
            batch = _stack_batch([collate(enc["train"], i, pad_id=pad_id, pad_to=pad_to) for i in idx], pad_id)
            batch = {k2: v.to(device, non_blocking=True) for k2, v in batch.items()}
            labels = batch.pop("labels")
            with autocast():
                losses = stacked.losses(batch, labels)
            loss_values = losses.detach().float().cpu().tolist()
            for k, v in enumerate(loss_values):
                if state.alive[k] and not math.isfinite(v):
                    state.diverge(k, f"non-finite training loss {v} at step {state.step + 1}",
                                  {n: params[n].detach()[k].clone() for n in stacked.trainable})
            if not any(state.alive):
                break
            alive = torch.tensor(state.alive, device=losses.device)
            torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
            grad_norms = stacked.clip_grad_norm_(cfg.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            after_step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.restore_frozen(params)
            state.step += 1
            mask = batch["attention_mask"]
            for k in range(K):
                if state.alive[k]:
                    state.steps[k] = state.step
                    state.examples[k] += len(idx[k])
                    state.tokens[k] += int(mask[k].sum())
                    state.train_log[k].append({"step": state.step, "loss": loss_values[k], "lr": lr,
                                               "grad_norm": grad_norms[k] if grad_norms else None})
            bar.update(1)
            stop = False
            if callback:
                stop = bool(callback({"event": "step", "step": state.step, "total": total,
                                      "losses": loss_values, "width": int(mask.shape[-1]),
                                      "lengths": mask.sum(-1).flatten().tolist()}))
            if state.step in evals_at:
                state.train_s += time.perf_counter() - t0
                for k in range(K):
                    if not state.alive[k]:
                        continue
                    t1 = time.perf_counter()
                    val, val_loss, _ = evaluate(models[k], enc["validation"], spec, **ev)
                    score = main_metric(spec, val)
                    record = {"step": state.step, "epoch": state.step / per_epoch, "val": val, "val_loss": val_loss}
                    if references[k] is not None:
                        record["param_distance"] = block_distances(members[k][1].blocks, references[k])
                    state.evals[k].append(record)
                    state.last_val[k] = val
                    if _better(score, state.best_metric[k]):
                        state.best_metric[k], state.best_val[k], state.best_step[k] = score, val, state.step
                        state.best_state[k] = {n: v.detach().clone() for n, v in models[k].state_dict().items()}
                    state.eval_s[k] += time.perf_counter() - t1
                    if callback and callback({"event": "eval", "step": state.step, "total": total, "member": k,
                                              "score": score, "val": val}):
                        stop = True
                t0 = time.perf_counter()
            if stop:
                state.kill()
                break
        state.train_s += time.perf_counter() - t0
        bar.close()
        state.restore_frozen(params)
        stacked.release()  # members own their weights again (a saved model must not be a view into the stack)
        del params, stacked, optimizer, scheduler, after_step

        # --- per member: the last checkpoint, then the best one, on the test split; write its folder -------
        results = []
        for k, (c, (loaded, prep)) in enumerate(zip(cfgs, members)):
            model = models[k]
            t_test = time.perf_counter()
            last = {"step": state.steps[k], "val": state.last_val[k], "test": None}
            best = {"step": state.best_step[k], "val": state.best_val[k], "test": None}
            if state.steps[k] > 0 and state.status[k] != "diverged":
                last["test"], last["test_loss"], _ = evaluate(model, enc["test"], spec, **ev)
            if state.best_state[k] is not None and best["step"] == last["step"] and last["test"] is not None:
                best["test"], best["test_loss"] = last["test"], last["test_loss"]  # the same weights: test once
            elif state.best_state[k] is not None:
                model.load_state_dict(state.best_state[k])
                best["test"], best["test_loss"], _ = evaluate(model, enc["test"], spec, **ev)
            t_test = time.perf_counter() - t_test
            seeds = {"seed": c.seed, "init_seed": c.resolved_init_seed, "data_seed": c.resolved_data_seed,
                     "split_seed": c.split_seed}
            result = RunResult(
                status=state.status[k], config=c.to_dict(), seeds=seeds,
                task=task_record(spec),
                num_steps=total, warmup_steps=warmup, best=best, last=last, train_log=state.train_log[k],
                evals=state.evals[k], error=state.error[k],
                data={"sizes": {n: len(v) for n, v in enc.items()},
                      "truncated": {n: v.num_truncated for n, v in enc.items()}, "steps_per_epoch": per_epoch,
                      "majority_baseline": majority_baselines(spec, enc), "split": splits.record()},
                techniques={**prep.record, "new_param_names": loaded.new_param_names,
                            "ensemble": {"size": K, "member": k, "mode": "vectorised",
                                         "dropout": "vmap randomness='different' from one generator seeded by "
                                                    f"the members' data seeds [{data_seeds}]"}},
                timings={"wall_s": time.perf_counter() - t_start, "train_s": state.train_s,
                         "eval_s": state.eval_s[k], "test_s": t_test,
                         "examples_per_s": state.examples[k] / max(state.train_s, 1e-9),
                         "tokens_per_s": state.tokens[k] / max(state.train_s, 1e-9),
                         "peak_memory_mb": peak_memory_mb(device), "shared_by_members": K},
                environment=run_environment(device, precision, loaded.source, loaded.encoder),
                out_dir=str(folders[k].final) if folders[k] else None)
            if folders[k]:
                _write_folder(folders[k], result, splits.indices, model if c.save_model else None, tokenizer)
            results.append(result)
        for f in folders:
            if f:
                f.commit()
        return results
    except BaseException:
        for f in folders:
            if f:
                f.discard()
        raise


class _Loop:
    """Per-member bookkeeping of the vectorised loop."""

    def __init__(self, K: int):
        self.step, self.train_s = 0, 0.0
        self.alive = [True] * K
        self.status = ["finished"] * K
        self.error: list[str | None] = [None] * K
        self.frozen: list[dict | None] = [None] * K
        self.steps, self.examples, self.tokens = [0] * K, [0] * K, [0] * K
        self.eval_s = [0.0] * K
        self.train_log: list[list[dict]] = [[] for _ in range(K)]
        self.evals: list[list[dict]] = [[] for _ in range(K)]
        self.best_metric: list[Any] = [None] * K
        self.best_val: list[Any] = [None] * K
        self.best_step: list[Any] = [None] * K
        self.best_state: list[Any] = [None] * K
        self.last_val: list[Any] = [None] * K

    def diverge(self, k: int, error: str, weights: dict) -> None:
        """Member k stops here with the weights it had before this step (as train() does)."""
        self.alive[k], self.status[k], self.error[k], self.frozen[k] = False, "diverged", error, weights

    def restore_frozen(self, params: dict) -> None:
        with torch.no_grad():
            for k, w in enumerate(self.frozen):
                if w is not None:
                    for n, v in w.items():
                        params[n][k].copy_(v)

    def kill(self) -> None:
        self.status = ["killed" if a else s for a, s in zip(self.alive, self.status)]


class StackedModels:
    """K models of one architecture as one: parameters stacked along a leading member dimension, a vmapped loss.

    After construction each member module's parameters are views of its slice of the stacked tensors, so the
    member modules always show their member's current weights (for evaluation, distances, best-state copies)
    at no memory cost; :meth:`release` gives them their own storage again.

    Args:
        models: K modules of the same class and configuration, all in the same train/eval mode.
        is_regression: loss is MSE (else cross-entropy), as :func:`stabletune.train.compute_loss`.
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


__all__ = ["train_ensemble", "StackedModels", "sequential_reason", "member_key", "MEMBER_FIELDS"]

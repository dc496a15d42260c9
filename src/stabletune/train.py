"""One fine-tuning run, top to bottom: setup -> the step loop -> periodic evaluation -> best restore -> test -> write.

The recipe is Section 3 of Zhang et al. (ICLR 2021): batch 32, peak LR 2e-5 with linear warm-up over the first
10 % of updates then linear decay to 0, gradient clipping at 1.0, dropout 0.1, 3 epochs, max length 128,
10 evaluations on the validation split, the best checkpoint (by the task metric) evaluated on the test split.
A run knows nothing of studies: ``train(cfg, out_dir)`` reads one config and writes one run folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from stabletune.data.batching import Encoded, collate, encode, epoch_batches, steps_per_epoch
from stabletune.config import RunConfig
from stabletune.errors import ConfigError
from stabletune.integrations.tensorboard import with_logger

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], Any]
"""Called with {"event": "step"|"eval", ...}; returning True stops the run (recorded as status "killed")."""


@dataclass
class RunResult:
    """What one run returns (and writes to its folder). JSON-able via ``to_dict``."""

    status: str  # finished | diverged | killed
    config: dict
    seeds: dict
    task: dict
    num_steps: int
    warmup_steps: int
    best: dict  # {"step", "val": {...}, "test": {...}}
    last: dict
    train_log: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    data: dict = field(default_factory=dict)  # sizes, truncation counts, split indices
    techniques: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    error: str | None = None
    out_dir: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------
# Small pieces
# ------------------------------------------------------------------------------------------------
def derive_seed(seed: int, purpose: str) -> int:
    """Independent 63-bit seeds for the different random streams of one seed value."""
    h = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up from 0 over `warmup` updates, then linear decay to 0 at `total`
    (Hugging Face's get_linear_schedule_with_warmup, which the official code uses)."""
    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def eval_steps(total: int, num_evals: int) -> list[int]:
    """`num_evals` evaluation points spread evenly over training, and always one at the final step."""
    return sorted({math.ceil(total * i / num_evals) for i in range(1, num_evals + 1)} | {total})


def encode_splits(tokenizer, splits, *, max_length: int, is_regression: bool) -> dict[str, Encoded]:
    """Tokenise train / validation / test once (a split without examples, a run without a test file, stays empty)."""
    def one(rows) -> Encoded:
        if not rows:
            return Encoded([], None, np.empty(0, dtype=np.float32 if is_regression else np.int64), 0)
        return encode(tokenizer, rows, max_length=max_length, is_regression=is_regression)
    return {name: one(rows)
            for name, rows in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))}


def load_run_data(cfg: RunConfig):
    """``(spec, splits)`` of a run: the task scored by ``cfg.metric``, its examples read and split (split seed
    only). Shared by :func:`train` and the vectorised ensemble."""
    from stabletune.data import load_task_data, make_splits, read_user_examples
    from stabletune.tasks import with_metric

    spec, train_rows, dev_rows = load_task_data(
        task=cfg.task, data_dir=cfg.data_dir, train_file=cfg.train_file, dev_file=cfg.dev_file,
        text_columns=cfg.text_columns, label_column=cfg.label_column, task_type=cfg.task_type)
    try:
        spec = with_metric(spec, cfg.metric)
    except ValueError as e:
        raise ConfigError(f"invalid option --metric: {e}") from None
    test_rows = (read_user_examples(cfg.test_file, spec, text_columns=cfg.text_columns,
                                    label_column=cfg.label_column) if cfg.test_file else None)
    splits = make_splits(spec, train_rows, dev_rows, split=cfg.split, seed=cfg.split_seed,
                         train_size=cfg.train_size, test=test_rows)
    return spec, splits


def task_record(spec) -> dict:
    """The ``task`` entry of a run's result: name, labels, the selecting metric (and F1's positive class)."""
    record = {"name": spec.name, "labels": list(spec.labels) if spec.labels else None, "metric": spec.metric}
    if spec.metric == "f1" and spec.positive_index is not None:
        record["positive_label"] = spec.labels[spec.positive_index]
    return record


def majority_baselines(spec, enc: dict[str, Encoded]) -> dict[str, float | None]:
    """The main metric of always predicting the most frequent class, on validation and test (Table 3)."""
    from stabletune.metrics import majority_baseline

    return {name: (majority_baseline(spec, enc[name].labels) if len(enc[name]) else None)
            for name in ("validation", "test")}


def update_counts(cfg: RunConfig, n_train: int) -> tuple[int, int, int]:
    """(updates per epoch, total updates, warm-up updates): --max-steps wins over --epochs, --warmup-steps over
    --warmup-ratio."""
    per_epoch = steps_per_epoch(n_train, cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps is not None else max(1, math.ceil(cfg.epochs * per_epoch))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * total)
    if warmup > total:
        raise ConfigError(f"invalid option --warmup-steps: {warmup} is more than the {total} training steps")
    return per_epoch, total, warmup


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"invalid option --device: {device!r}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("invalid option --device: cuda requested but no CUDA device is available")
    return d


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 on CPU by default (bf16 autocast was measured 25-30x slower on our AVX2 CPUs); bf16 on a capable GPU."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("invalid option --precision: fp16 (with a grad scaler) needs a CUDA device; use fp32 or bf16")
    if precision == "bf16" and device.type == "cpu":
        log.warning("bf16 autocast on CPU is much slower than fp32 on CPUs without bf16 units")
    return precision


def compute_loss(logits: torch.Tensor, labels: torch.Tensor, is_regression: bool) -> torch.Tensor:
    if is_regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def library_versions() -> dict[str, str]:
    import tokenizers
    import transformers

    import stabletune

    return {"stabletune": stabletune.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "numpy": np.__version__, "platform": platform.platform()}


#: Environment variables that change which CPU kernels run or how many threads they use.
KERNEL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "ATEN_CPU_CAPABILITY",
              "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def cpu_environment() -> dict[str, Any]:
    """The CPU and the kernel path of this process: fp32 results are bitwise reproducible only for the same
    thread count and the same kernels (CPU instruction set, MKL/oneDNN versions), see docs/LOG.md 2026-12-01."""
    import os
    import re

    info: dict[str, str] = {}
    try:  # the first processor's entries (Linux); the vector extensions decide the kernels MKL/oneDNN pick
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([^\s]+)", config)
    onednn = re.search(r"MKL-DNN v([^\s]+)", config)
    vector = sorted(f for f in info.get("flags", "").split() if f.startswith(("avx", "fma", "amx")))
    return {"cpu_model": info.get("model name") or platform.processor() or platform.machine(),
            "cpu_id": "/".join(info.get(k, "?") for k in ("vendor_id", "cpu family", "model", "stepping")),
            "cpu_vector_flags": vector, "logical_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": mkl.group(1) if mkl else None, "onednn": onednn.group(1) if onednn else None,
            "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}}


def run_environment(device: torch.device, precision: str, model_source: str, encoder: str) -> dict[str, Any]:
    """A run's ``environment`` record: device, precision, threads, model source, encoder path, CPU and kernel
    path, library versions."""
    return {"device": str(device), "precision": precision, "threads": torch.get_num_threads(),
            "model_source": model_source, "encoder": encoder, "cpu": cpu_environment(),
            "versions": library_versions()}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


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


def pad_length(cfg: RunConfig) -> int | None:
    """The fixed batch width of ``--padding max_length`` (None: dynamic padding)."""
    return cfg.max_seq_length if cfg.padding == "max_length" else None


def _better(value: float, best: float | None) -> bool:
    if best is None:
        return True
    if math.isnan(best):
        return not math.isnan(value)
    return value > best  # ties keep the earlier checkpoint


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------
def train(cfg: RunConfig, out_dir: str | None = None, *, callback: Callback | None = None) -> RunResult:
    """Fine-tune once as configured; write the run folder to ``out_dir`` (default ``cfg.out``; None: write nothing).

    Example:
        >>> from stabletune import make_config, train
        >>> res = train(make_config({"task": "rte", "data_dir": "../shared/data/glue", "max_steps": 20}), "runs/x")
        >>> res.best["test"]["acc"]
    """
    device = resolve_device(cfg.device)
    # Nothing a run does may change the caller's global RNG state (model loading and dropout draw from it).
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        return _run(cfg, out_dir, callback, device)


def _run(cfg: RunConfig, out_dir: str | None, callback: Callback | None, device: torch.device) -> RunResult:
    from stabletune.metrics import main_metric
    from stabletune.model import load_model, run_encoder
    from stabletune.techniques.param_distance import block_distances, snapshot_blocks
    from stabletune.runlog import RunFolder
    from stabletune.techniques import prepare

    t_start = time.perf_counter()
    out_dir = out_dir if out_dir is not None else cfg.out
    folder = RunFolder(out_dir, overwrite=cfg.overwrite) if out_dir else None  # fail early if it exists
    if cfg.report_to == "tensorboard" and cfg.logging_dir is None and folder is None:
        raise ConfigError("invalid option --report-to: tensorboard needs --logging-dir or a run folder (--out)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    precision = resolve_precision(cfg.precision, device)
    init_seed, data_seed = cfg.resolved_init_seed, cfg.resolved_data_seed
    seeds = {"seed": cfg.seed, "init_seed": init_seed, "data_seed": data_seed, "split_seed": cfg.split_seed}

    # --- data: read, split (split seed only), tokenise once -----------------------------------------
    spec, splits = load_run_data(cfg)

    # --- model: weights + head drawn from the init seed; techniques in their one fixed order ---------
    init_gen = torch.Generator().manual_seed(init_seed)
    loaded = load_model(cfg.model, num_labels=spec.num_labels, dropout=cfg.dropout,
                        attn_implementation=cfg.attn_implementation, init_generator=init_gen,
                        init_from=cfg.init_from, labels=spec.labels, encoder=run_encoder(cfg))
    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = encode_splits(tokenizer, splits, max_length=cfg.max_seq_length, is_regression=spec.is_regression)

    per_epoch, total, warmup = update_counts(cfg, len(enc["train"]))

    prepared = prepare(
        loaded.model, init_generator=init_gen, reinit_layers=cfg.reinit_layers, reinit_pooler=cfg.reinit_pooler,
        mixout=cfg.mixout, mixout_targets=cfg.mixout_targets, mixout_granularity=cfg.mixout_granularity, optimizer=cfg.optimizer, lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, weight_decay=cfg.weight_decay, llrd=cfg.llrd,
        pretrained_wd=cfg.pretrained_wd, pretrained_wd_new_params=cfg.pretrained_wd_new_params,
        new_param_names=loaded.new_param_names)
    model, optimizer = prepared.model.to(device), prepared.optimizer
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total))
    params = [p for p in model.parameters() if p.requires_grad]
    reference = snapshot_blocks(prepared.blocks) if cfg.track_param_distance else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    evals_at = set(eval_steps(total, cfg.num_evals))

    if folder:
        folder.open()
    tensorboard = None
    try:
        tensorboard = _tensorboard(cfg, folder)
        callback = with_logger(tensorboard, callback)
        # Data order and dropout come from the data seed: the order from its own generator; dropout (and mixout
        # masks) draw from torch's global generator, seeded here (train() runs inside fork_rng, so the caller's
        # global state is left untouched).
        order_gen = torch.Generator().manual_seed(derive_seed(data_seed, "order"))
        torch.manual_seed(derive_seed(data_seed, "dropout"))
        loop = _train_loop(
            model, optimizer, scheduler, prepared.after_step, params, enc, spec, cfg,
            total=total, per_epoch=per_epoch, evals_at=evals_at, order_gen=order_gen, device=device,
            pad_id=pad_id, autocast=autocast, scaler=scaler, callback=callback, main_metric=main_metric,
            distance=(lambda: block_distances(prepared.blocks, reference)) if reference is not None else None)
        if tensorboard is not None:
            tensorboard.close()  # everything is logged: close before the folder moves into place

        # --- test: the last checkpoint as it stands, then the best one really restored -------------
        ev = dict(batch_size=cfg.eval_batch_size, device=device, pad_id=pad_id, autocast=autocast,
                  pad_to=pad_length(cfg))
        t_test = time.perf_counter()
        last = {"step": loop["step"], "val": loop["last_val"], "test": None}
        best = {"step": loop["best_step"], "val": loop["best_val"], "test": None}
        if loop["step"] > 0 and loop["status"] != "diverged":
            last["test"], last["test_loss"], _ = evaluate(model, enc["test"], spec, **ev)
        if loop["best_state"] is not None and best["step"] == last["step"] and last["test"] is not None:
            best["test"], best["test_loss"] = last["test"], last["test_loss"]  # the same weights: test once
        elif loop["best_state"] is not None:
            model.load_state_dict(loop["best_state"])
            best["test"], best["test_loss"], _ = evaluate(model, enc["test"], spec, **ev)
        t_test = time.perf_counter() - t_test

        wall = time.perf_counter() - t_start
        result = RunResult(
            status=loop["status"], config=cfg.to_dict(), seeds=seeds,
            task=task_record(spec),
            num_steps=total, warmup_steps=warmup, best=best, last=last, train_log=loop["train_log"],
            evals=loop["evals"], error=loop["error"],
            data={"sizes": {k: len(v) for k, v in enc.items()},
                  "truncated": {k: v.num_truncated for k, v in enc.items()}, "steps_per_epoch": per_epoch,
                  "majority_baseline": majority_baselines(spec, enc), "split": splits.record()},
            techniques={**prepared.record, "new_param_names": loaded.new_param_names},
            timings={"wall_s": wall, "train_s": loop["train_s"], "eval_s": loop["eval_s"], "test_s": t_test,
                     "examples_per_s": loop["examples"] / max(loop["train_s"], 1e-9),
                     "tokens_per_s": loop["tokens"] / max(loop["train_s"], 1e-9),
                     "peak_memory_mb": peak_memory_mb(device)},
            environment=run_environment(device, precision, loaded.source, loaded.encoder),
            out_dir=str(folder.final) if folder else None)
        if folder:
            _write_folder(folder, result, splits.indices, model if cfg.save_model else None, tokenizer)
            folder.commit()
        return result
    except BaseException:
        if tensorboard is not None:
            tensorboard.close()
        if folder:
            folder.discard()
        raise


def _tensorboard(cfg: RunConfig, folder) -> Any:
    """The run's TensorBoard logger (``--report-to tensorboard``), or None. Default folder: OUT/tensorboard,
    written inside the staged run folder (it moves into place with the rest of the run)."""
    if cfg.report_to != "tensorboard":
        return None
    from stabletune.integrations.tensorboard import TensorBoardLogger

    return TensorBoardLogger(cfg.logging_dir if cfg.logging_dir is not None else folder.path / "tensorboard")


def _train_loop(model, optimizer, scheduler, after_step, params, enc, spec, cfg, *, total, per_epoch, evals_at,
                order_gen, device, pad_id, autocast, scaler, callback, main_metric, distance) -> dict:
    """The step loop with periodic evaluation; returns curves, best state and timings."""
    from tqdm.auto import tqdm

    pad_to = pad_length(cfg)
    ev = dict(batch_size=cfg.eval_batch_size, device=device, pad_id=pad_id, autocast=autocast, pad_to=pad_to)
    lengths = enc["train"].lengths
    train_log, evals = [], []
    best_val = best_metric = best_state = best_step = last_val = None
    status, error, step, examples, tokens = "finished", None, 0, 0, 0
    train_s = eval_s = 0.0
    batches: list = []
    bar = tqdm(total=total, desc=f"{spec.name} train", unit="step", disable=not cfg.progress, dynamic_ncols=True,
               file=sys.stderr)
    model.train()
    t0 = time.perf_counter()
    while step < total:
        if not batches:  # a new epoch: a fresh seed-driven order
            batches = epoch_batches(lengths, batch_size=cfg.batch_size, generator=order_gen,
                                    group_by_length=cfg.group_by_length)
        idx = batches.pop(0)
        batch = {k: v.to(device, non_blocking=True) for k, v in collate(enc["train"], idx, pad_id=pad_id,
                                                                    pad_to=pad_to).items()}
        labels = batch.pop("labels")
        with autocast():
            logits = model(**batch).logits
        loss = compute_loss(logits, labels, spec.is_regression)
        loss_value = loss.item()
        if not math.isfinite(loss_value):  # diverged: stop, keep what was learned so far, say so
            status, error = "diverged", f"non-finite training loss {loss_value} at step {step + 1}"
            break
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        grad_norm = (torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).item()
                     if cfg.max_grad_norm > 0 else None)
        lr = optimizer.param_groups[0]["lr"]
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        after_step()  # weight decay toward pre-trained weights uses this step's lr (Section 7.1)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        examples += len(idx)
        tokens += int(batch["attention_mask"].sum())
        train_log.append({"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        stop = bool(callback({"event": "step", "step": step, "total": total, "loss": loss_value, "lr": lr,
                              "grad_norm": grad_norm, "width": int(batch["input_ids"].shape[1])})) if callback else False

        if step in evals_at:
            train_s += time.perf_counter() - t0
            t1 = time.perf_counter()
            val, val_loss, _ = evaluate(model, enc["validation"], spec, **ev)
            score = main_metric(spec, val)
            record = {"step": step, "epoch": step / per_epoch, "val": val, "val_loss": val_loss}
            if distance is not None:
                record["param_distance"] = distance()
            evals.append(record)
            last_val = val
            if _better(score, best_metric):  # keep a copy of the best weights (really restored later)
                best_metric, best_val, best_step = score, val, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{loss_value:.4f}", val=f"{score:.4f}")
            eval_s += time.perf_counter() - t1
            if callback and callback({"event": "eval", "step": step, "total": total, "score": score, "val": val,
                                      "val_loss": val_loss, "param_distance": record.get("param_distance")}):
                stop = True
            t0 = time.perf_counter()
        if stop:
            status = "killed"
            break
    else:
        train_s += time.perf_counter() - t0
    if status != "finished":
        train_s += time.perf_counter() - t0
    bar.close()
    return {"status": status, "error": error, "step": step, "train_log": train_log, "evals": evals,
            "best_state": best_state, "best_step": best_step, "best_val": best_val, "last_val": last_val,
            "train_s": train_s, "eval_s": eval_s, "examples": examples, "tokens": tokens}


def model_metadata(result: RunResult) -> dict:
    """What ``stabletune predict`` needs to apply a saved model as it was trained (stored in its config.json
    as ``stabletune``): text and label columns, maximum length, task type and the selecting metric."""
    cfg = result.config
    return {"task": result.task, "text_columns": list(cfg.get("text_columns") or []) or None,
            "label_column": cfg.get("label_column") if cfg.get("train_file") else None,
            "max_seq_length": cfg.get("max_seq_length"), "eval_batch_size": cfg.get("eval_batch_size")}


def _write_folder(folder, result: RunResult, split_indices: dict, model, tokenizer) -> None:
    summary = {k: v for k, v in result.to_dict().items() if k not in ("train_log", "evals", "config")}
    folder.write_json("config.json", {"config": result.config, "seeds": result.seeds, "task": result.task,
                                      "num_steps": result.num_steps, "warmup_steps": result.warmup_steps,
                                      "model_source": result.environment["model_source"]})
    folder.write_json("split.json", split_indices)
    folder.write_jsonl("train_log.jsonl", result.train_log)
    folder.write_jsonl("evals.jsonl", result.evals)
    if model is not None:
        from transformers.utils import logging as hf_logging

        model.config.stabletune = model_metadata(result)  # predict reads the text columns and length from it
        hf_logging.disable_progress_bar()
        model.save_pretrained(folder.path / "model")  # mixout targets are non-persistent buffers: not saved
        hf_logging.enable_progress_bar()
        tokenizer.save_pretrained(folder.path / "model")
    folder.write_json("results.json", summary)  # last: its presence marks a complete run

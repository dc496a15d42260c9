#!/usr/bin/env python
"""Training speed of stabletune side by side with the official recipe and Hugging Face's Trainer.

    python benchmarks/bench_train.py                # full benchmark (~10 min on 2 cores), prints a table
    python benchmarks/bench_train.py --json         # the same as JSON
    python benchmarks/bench_train.py --quick --model DIR   # smoke run (used by tests/test_benchmarks.py)
    python benchmarks/bench_train.py --ensemble 1,2,4      # adds vectorised-ensemble speed per seed

Everything runs in ONE process, interleaved: for every repeat, for every task, each method runs in turn (the
order rotates between repeats), so a busy neighbour slows all methods alike; we quote medians over repeats.

Methods, all on the same model (default: the embedded MiniLM-L6), task, ``paper-1k`` split, batch size, LR and
number of steps:

* ``stabletune``: :func:`stabletune.training.train` itself, run with the paper-1k recipe and stopped by its callback
  after ``1 + steps`` updates (so the real setup, batching, techniques.prepare and step code run, unchanged),
  on the default path: random batches (the paper's) and the unpadded encoder (``stabletune.unpadded``).
  The one warm-up update is not timed; the final test evaluation that ``train`` does for a stopped run is skipped
  (it happens after the timed window). Each repeat uses another data seed, so other batches are sampled.
* ``stabletune-grouped``: the same with length-grouped batches on the Hugging Face (padded) forward: little
  padding, but batches drawn otherwise than the paper's. ``stabletune-hf-random`` (not run by default): random
  batches on the Hugging Face forward. Each method's ``group_by_length`` and ``encoder_impl`` are set explicitly
  (:data:`STABLETUNE_METHODS`), so the benchmark does not depend on RunConfig's defaults.
* ``official``: ``benchmarks/baselines/official.py``: every batch padded to 128 tokens, random sampler, eager
  attention, fp32, foreach AdamW, loss from the model, clip, scheduler.
* ``trainer``: ``transformers.Trainer`` with its default ``DataCollatorWithPadding`` (pad to the longest in a
  random batch), its default optimizer (``adamw_torch_fused``), no evaluation, no saving, ``report_to="none"``.
  Needs ``accelerate``; skipped with a note when it is missing.

Measured per method: examples/s over the timed updates; padded and real tokens; the peak resident memory of the
process during the timed updates (sampled every 5 ms, after returning freed heap memory to the OS); achieved FLOP/s
and its fraction of the machine's fp32 matmul peak, measured in the same process (best of repeated 4096^2 GEMMs).

FLOPs of one update with ``B`` sequences of padded length ``T`` (encoder of ``L`` layers, width ``d``, FFN width
``f``, ``C`` labels)::

    FLOPs = 3 * [ 2 * P * B * T  +  4 * L * d * B * T^2  +  2 * B * (d^2 + d * C) ]
    P     = L * (4 * d^2 + 2 * d * f)      (weight matrices of Q, K, V, output and the two FFN layers)

i.e. ``6 * P * tokens`` for the dense layers, ``12 * L * d * T^2`` per sequence for attention (Q K^T and
attention x V), plus pooler and classifier; backward = 2 x forward. Embedding look-ups, layer norms, softmax,
GELU, dropout and the optimizer do no matmul work and are not counted (they are what keeps a step below peak).
"Useful" FLOPs use the real lengths instead of the padded ones. For the unpadded encoder the executed FLOPs are
counted as the useful ones (its dense layers see no padding; its attention pads within groups of similar lengths,
and its last block runs for the first tokens only, which the formula does not credit).

Also measured: the fraction of peak of one update at fixed lengths (16, 64, 128 tokens), and the wall time of one
full ``paper-1k`` run (3 epochs, 10 evaluations, test) through ``stabletune.training.train``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from baselines import official  # noqa: E402

TASKS = ("cola", "sst-2", "mrpc", "rte")
METHODS = ("stabletune", "stabletune-grouped", "official", "trainer", "stabletune-hf-random")
DEFAULT_METHODS = ("stabletune", "stabletune-grouped", "official", "trainer")
STABLETUNE_METHODS = {  # RunConfig options of each stabletune method, set explicitly (independent of defaults)
    "stabletune": {"group_by_length": False, "encoder_impl": "unpadded"},  # the default path: the paper's batches
    "stabletune-grouped": {"group_by_length": True, "encoder_impl": "hf"},  # length-grouped batches, HF forward
    "stabletune-hf-random": {"group_by_length": False, "encoder_impl": "hf"},  # the paper's batches, HF forward
}
BATCH_SIZE = 32
LR = 2e-5


# ------------------------------------------------------------------------------------------------
# Measurement helpers
# ------------------------------------------------------------------------------------------------
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def release_memory() -> None:
    """Collect garbage and give freed heap pages back to the OS, so that RSS measures what is live."""
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


class PeakRss:
    """Samples the process RSS every ``interval`` seconds in a thread between ``start()`` and ``stop()``."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop, self._thread = interval, None, threading.Event(), None

    def start(self) -> None:
        if rss_mb() is None or self._thread is not None:
            return
        self.peak = rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mb() or 0.0)

    def stop(self) -> float | None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_mb() or 0.0)
        return self.peak


def gemm_peak(n: int, reps: int = 2) -> float:
    """Best FLOP/s of ``reps`` fp32 ``n x n`` matrix products (after one warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


class Dims:
    """Model sizes for the FLOP count (see the module docstring)."""

    def __init__(self, config, num_labels: int):
        self.L = config.num_hidden_layers
        self.d = config.hidden_size
        self.f = config.intermediate_size
        self.C = num_labels
        self.P = self.L * (4 * self.d**2 + 2 * self.d * self.f)

    def step_flops(self, tokens: float, sq_tokens: float, seqs: int) -> float:
        """FLOPs of one update given sum of lengths, sum of squared lengths and number of sequences."""
        return 3 * (2 * self.P * tokens + 4 * self.L * self.d * sq_tokens + 2 * seqs * (self.d**2 + self.d * self.C))


class Window:
    """Times the updates after the first (warm-up) one and sums their batch statistics.

    ``step(batch_stats)`` is called after every update with ``(B, T, real_tokens, real_sq_tokens)``.
    """

    def __init__(self, steps: int):
        self.steps, self.done, self.t0, self.t1 = steps, 0, None, None
        self.examples = self.padded = self.padded_sq = self.real = self.real_sq = 0
        self.widths: list[int] = []
        self.rss = PeakRss()

    def step(self, stats: tuple[int, int, int, int]) -> bool:
        """Record one finished update; returns True once ``1 + steps`` updates are done."""
        now = time.perf_counter()
        self.done += 1
        if self.done == 1:
            self.rss.start()
            self.t0 = time.perf_counter()
            return False
        B, T, real, real_sq = stats
        self.examples += B
        self.padded += B * T
        self.padded_sq += B * T * T
        self.real += real
        self.real_sq += real_sq
        self.widths.append(T)
        if self.done == 1 + self.steps:
            self.t1 = now
            return True
        return False

    def result(self, dims: Dims, *, unpadded: bool = False) -> dict:
        if self.t1 is None:
            raise RuntimeError(f"only {self.done} of {1 + self.steps} updates ran")
        peak = self.rss.stop()
        dt = self.t1 - self.t0
        n = self.done - 1
        useful = dims.step_flops(self.real, self.real_sq, self.examples)
        flops = useful if unpadded else dims.step_flops(self.padded, self.padded_sq, self.examples)
        return {"seconds": dt, "steps": n, "examples": self.examples, "examples_per_s": self.examples / dt,
                "s_per_step": dt / n, "mean_width": float(np.mean(self.widths)), "padded_tokens": self.padded,
                "real_tokens": self.real, "flop_per_s": flops / dt, "useful_flop_per_s": useful / dt,
                "peak_rss_mb": peak}


def batch_stats(mask: torch.Tensor) -> tuple[int, int, int, int]:
    lengths = mask.sum(1).to(torch.int64)
    return int(mask.shape[0]), int(mask.shape[1]), int(lengths.sum()), int((lengths * lengths).sum())


# ------------------------------------------------------------------------------------------------
# Data and models shared by the methods
# ------------------------------------------------------------------------------------------------
class TaskData:
    def __init__(self, task: str, data_dir: str, model: str, quick: bool):
        from stabletune.data import load_task_data, make_splits
        from stabletune.model import resolve_model
        from transformers import AutoTokenizer

        self.task = task
        self.spec, train_rows, dev_rows = load_task_data(task=task, data_dir=data_dir)
        self.splits = make_splits(self.spec, train_rows, dev_rows, split="paper-1k", seed=0)
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
        self.official = official.pad_to_max_features(self.tokenizer, self.splits.train)
        rows = self.splits.train
        b = [e.text_b for e in rows] if rows[0].text_b is not None else None
        enc = self.tokenizer([e.text_a for e in rows], b, truncation=True, max_length=128)
        self.trainer_rows = [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                              "label": rows[i].label} for i in range(len(rows))]
        self.num_labels = self.spec.num_labels
        self.full_steps = math.ceil(3 * math.ceil(len(rows) / BATCH_SIZE))


def load(model: str, num_labels: int, attn: str):
    from stabletune.model import load_model

    return load_model(model, num_labels=num_labels, dropout=0.1, attn_implementation=attn,
                      init_generator=torch.Generator().manual_seed(0)).model


# ------------------------------------------------------------------------------------------------
# The three methods
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _instrumented_stabletune(window: Window):
    """Record the batches of stabletune's loop and skip the untimed test evaluation of a stopped run."""
    from stabletune.engine import loop as loop_mod  # the loop's batches and the (test) evaluations

    real_collate, real_evaluate = loop_mod.collate, loop_mod.evaluate

    def collate(enc, idx, *, pad_id, pad_to=None):
        batch = real_collate(enc, idx, pad_id=pad_id, pad_to=pad_to)
        pending.append(batch_stats(batch["attention_mask"]))
        return batch

    def no_test(*args, **kwargs):  # only reached after the timed window (the run was stopped by the callback)
        return {}, float("nan"), np.empty(0)  # evaluate's contract: metrics, loss, predictions (none here)

    pending: list = []
    loop_mod.collate, loop_mod.evaluate = collate, no_test
    try:
        yield pending
    finally:
        loop_mod.collate, loop_mod.evaluate = real_collate, real_evaluate


def run_stabletune(data: TaskData, args, steps: int, repeat: int, *, method: str = "stabletune") -> dict:
    from stabletune.config import make_config
    from stabletune.training import train

    cfg = make_config({"task": data.task, "data_dir": args.data_dir, "split": "paper-1k", "model": args.model,
                       "threads": args.threads, "progress": False, "num_evals": 1, "seed": 0,
                       "data_seed": repeat, **STABLETUNE_METHODS[method]})
    window = Window(steps)
    with _instrumented_stabletune(window) as pending:
        def callback(event):
            return event.kind == "step" and window.step(pending.pop(0))

        res = train(cfg, None, callback=callback)
    encoder = res.environment["encoder"]
    out = window.result(Dims(_config_of(args.model, data.num_labels), data.num_labels),
                        unpadded=encoder == "unpadded")
    out["loss_first"] = res.train_log[0]["loss"]
    out["encoder"] = encoder
    return out


def run_official(data: TaskData, args, steps: int, repeat: int) -> dict:
    model = load(args.model, data.num_labels, "eager")
    window = Window(steps)
    official.train_steps(model, data.official, steps=1 + steps, batch_size=BATCH_SIZE, lr=LR,
                         warmup=int(0.1 * data.full_steps), total=data.full_steps, seed=repeat,
                         on_step=lambda step, batch: window.step(batch_stats(batch["attention_mask"])))
    out = window.result(Dims(model.config, data.num_labels))
    del model
    return out


def run_trainer(data: TaskData, args, steps: int, repeat: int) -> dict:
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = load(args.model, data.num_labels, "sdpa")
    window = Window(steps)
    pad = DataCollatorWithPadding(data.tokenizer)
    pending: list = []

    def collator(features):
        batch = pad(features)
        pending.append(batch_stats(batch["attention_mask"]))
        return batch

    class Timer(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            window.step(pending.pop(0))

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=BATCH_SIZE, learning_rate=LR, max_steps=1 + steps,
            warmup_steps=int(0.1 * data.full_steps), lr_scheduler_type="linear", eval_strategy="no",
            save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True, seed=repeat,
            use_cpu=True, dataloader_pin_memory=False)
        trainer = Trainer(model=model, args=targs, train_dataset=data.trainer_rows, data_collator=collator,
                          callbacks=[Timer()])
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics to stdout
        trainer.train()
        optim = str(targs.optim.value if hasattr(targs.optim, "value") else targs.optim)
    torch.set_num_threads(args.threads)
    out = window.result(Dims(model.config, data.num_labels))
    out["optimizer"] = optim
    del trainer, model
    return out


def _stabletune_runner(method: str):
    def run_method(data: TaskData, args, steps: int, repeat: int) -> dict:
        return run_stabletune(data, args, steps, repeat, method=method)
    return run_method


RUNNERS = {"official": run_official, "trainer": run_trainer,
           **{m: _stabletune_runner(m) for m in STABLETUNE_METHODS}}

_CONFIGS: dict = {}


def _config_of(model: str, num_labels: int):
    if model not in _CONFIGS:
        from stabletune.model import resolve_model
        from transformers import AutoConfig

        _CONFIGS[model] = AutoConfig.from_pretrained(resolve_model(model), num_labels=num_labels)
    return _CONFIGS[model]


def trainer_available() -> str | None:
    try:
        import accelerate  # noqa: F401
        from transformers import Trainer  # noqa: F401
    except ImportError as e:
        return f"transformers.Trainer needs accelerate ({e.__class__.__name__}: {e})"
    return None


# ------------------------------------------------------------------------------------------------
# Fixed-length step efficiency (stabletune's model, techniques.prepare and the same step operations)
# ------------------------------------------------------------------------------------------------
def fixed_length_steps(args, lengths: list[int], steps: int) -> dict[int, dict]:
    from stabletune.techniques import prepare
    from stabletune.engine.loop import compute_loss

    from stabletune.model import load_model

    g = torch.Generator().manual_seed(0)
    loaded = load_model(args.model, num_labels=2, dropout=0.1, attn_implementation="sdpa", init_generator=g)
    prepared = prepare(loaded.model, init_generator=g, lr=LR, new_param_names=loaded.new_param_names)
    model, opt = prepared.model, prepared.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    dims = Dims(model.config, 2)
    vocab = model.config.vocab_size
    model.train()
    out = {}
    for T in lengths:
        gen = torch.Generator().manual_seed(T)
        batch = {"input_ids": torch.randint(1000, vocab, (BATCH_SIZE, T), generator=gen) if vocab > 1000
                 else torch.randint(0, vocab, (BATCH_SIZE, T), generator=gen),
                 "attention_mask": torch.ones(BATCH_SIZE, T, dtype=torch.long),
                 "token_type_ids": torch.zeros(BATCH_SIZE, T, dtype=torch.long)}
        labels = torch.randint(0, 2, (BATCH_SIZE,), generator=gen)
        fb, total = [], []
        for i in range(1 + steps):
            t0 = time.perf_counter()
            loss = compute_loss(model(**batch).logits, labels, False)
            loss.item()
            loss.backward()
            t1 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            if i:
                fb.append(t1 - t0)
                total.append(t2 - t0)
        flops = dims.step_flops(BATCH_SIZE * T, BATCH_SIZE * T * T, BATCH_SIZE)
        out[T] = {"s_per_step": statistics.median(total), "s_fwd_bwd": statistics.median(fb),
                  "flop_per_s": flops / statistics.median(total), "fwd_bwd_flop_per_s": flops / statistics.median(fb)}
    del model, opt, prepared, loaded
    return out


def ablations(args, reps: int = 3) -> dict:
    """What single choices cost, interleaved: optimizer kernels on the model's parameters; SDPA vs eager attention
    for one forward+backward at 64 tokens."""
    from stabletune.model import load_model
    from stabletune.techniques.optim import build_optimizer

    g = torch.Generator().manual_seed(0)
    model = load_model(args.model, num_labels=2, dropout=0.1, attn_implementation="sdpa", init_generator=g).model
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    opts = {"fused (stabletune AdamW)": build_optimizer(params, name="adamw", lr=LR),
            "foreach (torch AdamW)": torch.optim.AdamW(params, lr=LR, weight_decay=0.0, foreach=True),
            "for-loop (torch AdamW, CPU default)": torch.optim.AdamW(params, lr=LR, weight_decay=0.0, foreach=False)}
    times: dict[str, list[float]] = {k: [] for k in opts}
    for i in range(1 + reps):
        for name, opt in opts.items():
            t = time.perf_counter()
            opt.step()
            if i:
                times[name].append(time.perf_counter() - t)
    out = {"optimizer_step_s": {k: statistics.median(v) for k, v in times.items()},
           "n_params": sum(p.numel() for p in params)}
    del opts, params
    model.train()
    gen = torch.Generator().manual_seed(1)
    T = 64
    batch = {"input_ids": torch.randint(0, model.config.vocab_size, (BATCH_SIZE, T), generator=gen),
             "attention_mask": torch.ones(BATCH_SIZE, T, dtype=torch.long)}
    labels = torch.randint(0, 2, (BATCH_SIZE,), generator=gen)
    att: dict[str, list[float]] = {"sdpa": [], "eager": []}
    for i in range(1 + reps):
        for impl in att:
            model.config._attn_implementation = impl
            t = time.perf_counter()
            torch.nn.functional.cross_entropy(model(**batch).logits, labels).backward()
            if i:
                att[impl].append(time.perf_counter() - t)
            model.zero_grad(set_to_none=True)
    out["fwd_bwd_64_tokens_s"] = {k: statistics.median(v) for k, v in att.items()}
    del model
    return out


# ------------------------------------------------------------------------------------------------
# End to end and ensembles
# ------------------------------------------------------------------------------------------------
def end_to_end(args) -> dict:
    from stabletune.config import make_config
    from stabletune.training import train

    over = {"task": args.e2e_task, "data_dir": args.data_dir, "split": "paper-1k", "model": args.model,
            "threads": args.threads, "progress": False, **STABLETUNE_METHODS["stabletune"]}
    if args.quick:
        over.update(max_steps=4, num_evals=2)
    t = time.perf_counter()
    res = train(make_config(over), None)
    wall = time.perf_counter() - t
    tm = res.timings
    return {"task": args.e2e_task, "steps": res.num_steps, "evals": len(res.evals), "wall_s": wall,
            "train_s": tm["train_s"], "eval_s": tm["eval_s"], "test_s": tm["test_s"],
            "setup_s": wall - tm["train_s"] - tm["eval_s"] - tm["test_s"], "examples_per_s": tm["examples_per_s"],
            "peak_rss_mb": tm["peak_memory_mb"], "status": res.status}


def ensemble_speed(args, data: TaskData, ks: list[int], steps: int, repeats: int) -> list[dict]:
    """Seconds per update per seed of ``train_ensemble`` with K members (K=1: the ordinary ``train``)."""
    from stabletune.config import make_config
    from stabletune.engine import loop as loop_mod
    from stabletune.training import train_ensemble

    rows = {k: [] for k in ks}
    for r in range(repeats):
        for k in ks[r % len(ks):] + ks[:r % len(ks)]:
            cfgs = [make_config({"task": data.task, "data_dir": args.data_dir, "split": "paper-1k",
                                 "model": args.model, "threads": args.threads, "progress": False,
                                 "num_evals": 1, "seed": 100 * r + i, **STABLETUNE_METHODS["stabletune-grouped"]})
                    for i in range(k)]
            release_memory()
            if k == 1:  # vectorised ensembles run on the Hugging Face path: compare with the same path
                rows[k].append(run_stabletune(data, args, steps, 100 * r, method="stabletune-grouped"))
                continue
            window = Window(steps)

            step_lengths: list = []

            def callback(e, k=k):
                if e.kind != "step":
                    return False
                step_lengths.extend(e.lengths)  # one event per member; the step is done after the last one
                if e.member < k - 1:
                    return False
                lengths = np.asarray(step_lengths, dtype=np.int64)
                step_lengths.clear()
                return window.step((len(lengths), e.width, int(lengths.sum()), int((lengths**2).sum())))

            real_evaluate = loop_mod.evaluate
            loop_mod.evaluate = lambda *a, **kw: ({}, float("nan"), np.empty(0))  # skip the untimed test evaluations
            try:
                train_ensemble(cfgs, [None] * k, callback=callback)
            finally:
                loop_mod.evaluate = real_evaluate
            rows[k].append(window.result(Dims(_config_of(args.model, data.num_labels), data.num_labels)))
    out = []
    base = statistics.median(x["s_per_step"] for x in rows[1])
    for k in ks:
        s = statistics.median(x["s_per_step"] for x in rows[k])
        out.append({"task": data.task, "K": k, "s_per_step": s, "s_per_step_per_seed": s / k,
                    "speedup_per_seed_vs_K1": base / (s / k),
                    "mean_width": float(np.mean([x["mean_width"] for x in rows[k]])),
                    "peak_rss_mb": max(x["peak_rss_mb"] or 0 for x in rows[k])})
    return out


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import transformers

    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "load_avg_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods]
    notes = []
    why = trainer_available() if "trainer" in methods else None
    if why:
        methods.remove("trainer")
        notes.append(f"trainer skipped: {why}")
    info = machine()
    t_start = time.perf_counter()
    datas = {t: TaskData(t, args.data_dir, args.model, args.quick) for t in args.tasks}
    raw: dict = {t: {m: [] for m in methods} for t in args.tasks}
    peaks: list[float] = []
    fixed: list[dict] = []
    for r in range(args.repeats):
        for t in args.tasks:
            # the peak is sampled often: on a shared machine a single GEMM may catch a busy moment
            peaks.append(gemm_peak(args.gemm))
            order = methods[r % len(methods):] + methods[:r % len(methods)]
            for m in order:
                release_memory()
                raw[t][m].append(RUNNERS[m](datas[t], args, args.steps, r))
                torch.set_num_threads(args.threads)
        if args.fixed_lengths:
            release_memory()
            fixed.append(fixed_length_steps(args, args.fixed_lengths, args.fixed_steps))
    peak = max(peaks)
    rows = []
    for t in args.tasks:
        med = {m: statistics.median(x["examples_per_s"] for x in raw[t][m]) for m in methods}
        for m in methods:
            xs = raw[t][m]
            row = {"task": t, "method": m, "examples_per_s": med[m],
                   "examples_per_s_all": [x["examples_per_s"] for x in xs],
                   "s_per_step": statistics.median(x["s_per_step"] for x in xs),
                   "real_tokens_per_s": statistics.median(x["real_tokens"] / x["seconds"] for x in xs),
                   "mean_width": float(np.mean([x["mean_width"] for x in xs])),
                   "pad_fraction": 1 - sum(x["real_tokens"] for x in xs) / sum(x["padded_tokens"] for x in xs),
                   "flop_per_s": statistics.median(x["flop_per_s"] for x in xs),
                   "useful_flop_per_s": statistics.median(x["useful_flop_per_s"] for x in xs),
                   "peak_rss_mb": max((x["peak_rss_mb"] or 0.0) for x in xs) or None}
            row["fraction_of_peak"] = row["flop_per_s"] / peak
            row["useful_fraction_of_peak"] = row["useful_flop_per_s"] / peak
            if "optimizer" in xs[0]:
                row["optimizer"] = xs[0]["optimizer"]
            row["encoder"] = xs[0].get("encoder", "hf")
            for other in ("official", "trainer", "stabletune-grouped"):
                if other in med and m != other:
                    row[f"vs_{other}"] = med[m] / med[other]
            rows.append(row)
        # real tokens/s: a grouped batch is all-short or all-long, so over a few updates its examples/s depends on
        # which batches were drawn; per real token the methods compare on the same footing
        tok = {r["method"]: r["real_tokens_per_s"] for r in rows if r["task"] == t}
        for r in rows:
            if r["task"] == t and "stabletune-grouped" in tok and r["method"] != "stabletune-grouped":
                r["tokens_vs_stabletune-grouped"] = r["real_tokens_per_s"] / tok["stabletune-grouped"]
    fixed_rows = []
    if fixed:
        for T in args.fixed_lengths:
            s = statistics.median(f[T]["s_per_step"] for f in fixed)
            fb = statistics.median(f[T]["s_fwd_bwd"] for f in fixed)
            fl = statistics.median(f[T]["flop_per_s"] for f in fixed)
            ffl = statistics.median(f[T]["fwd_bwd_flop_per_s"] for f in fixed)
            fixed_rows.append({"tokens": T, "s_per_step": s, "s_fwd_bwd": fb, "flop_per_s": fl,
                               "fraction_of_peak": fl / peak, "fwd_bwd_fraction_of_peak": ffl / peak})
    abl = None
    if args.ablations:
        release_memory()
        abl = ablations(args, reps=1 if args.quick else 3)
    ens = []
    if args.ensemble:
        ens = ensemble_speed(args, datas[args.tasks[0]], args.ensemble, args.steps, args.repeats)
    e2e = end_to_end(args) if args.e2e else None
    if e2e is not None and "official" in methods and e2e["task"] in raw:
        s_off = statistics.median(x["s_per_step"] for x in raw[e2e["task"]]["official"])
        e2e["official_train_s_projected"] = s_off * e2e["steps"]
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"date": time.strftime("%Y-%m-%d"), "machine": {**info, "load_avg_end": load_end},
            "settings": {"tasks": args.tasks, "methods": methods, "steps": args.steps, "repeats": args.repeats,
                         "batch_size": BATCH_SIZE, "lr": LR, "model": args.model, "split": "paper-1k",
                         "gemm_n": args.gemm},
            "gemm_peak_flop_per_s": peak, "gemm_flop_per_s_all": peaks, "rows": rows, "fixed_length": fixed_rows,
            "ensemble": ens, "ablations": abl, "end_to_end": e2e, "notes": notes,
            "bench_wall_s": time.perf_counter() - t_start}


def fmt_table(res: dict) -> str:
    G = 1e9
    out = [f"stabletune training speed, {res['date']}: {res['machine']['cpu']}, {res['machine']['cores']} cores, "
           f"{res['machine']['threads']} threads (OMP_WAIT_POLICY {res['machine']['omp_wait_policy']}), torch "
           f"{res['machine']['torch']}, transformers "
           f"{res['machine']['transformers']}; load average at start/end "
           f"{_fmt_load(res['machine']['load_avg_start'])} / {_fmt_load(res['machine']['load_avg_end'])}",
           f"model {res['settings']['model']}, paper-1k, batch {BATCH_SIZE}, {res['settings']['steps']} timed "
           f"updates x {res['settings']['repeats']} repeats (medians), fp32 matmul peak "
           f"{res['gemm_peak_flop_per_s'] / G:.1f} GFLOP/s ({res['settings']['gemm_n']}^2 GEMM, best of "
           f"{len(res['gemm_flop_per_s_all'])} samples)", ""]
    hdr = (f"{'task':6} {'method':20} {'encoder':8} {'ex/s':>7} {'s/step':>7} {'width':>6} {'pad%':>5} "
           f"{'vs off':>7} {'vs HF':>6} {'vs grp':>6} {'tok/s':>6} {'grp tok':>7} {'GFLOP/s':>8} {'%peak':>6} "
           f"{'useful%':>7} {'RSS MB':>7}")
    out += [hdr, "-" * len(hdr)]
    for r in res["rows"]:
        out.append(f"{r['task']:6} {r['method']:20} {r['encoder']:8} {r['examples_per_s']:7.1f} "
                   f"{r['s_per_step']:7.3f} {r['mean_width']:6.1f} {100 * r['pad_fraction']:5.1f} "
                   f"{_fmt_ratio(r.get('vs_official')):>7} {_fmt_ratio(r.get('vs_trainer')):>6} "
                   f"{_fmt_ratio(r.get('vs_stabletune-grouped')):>6} {r['real_tokens_per_s']:6.0f} "
                   f"{_fmt_ratio(r.get('tokens_vs_stabletune-grouped')):>7} "
                   f"{r['flop_per_s'] / G:8.1f} {100 * r['fraction_of_peak']:6.1f} "
                   f"{100 * r['useful_fraction_of_peak']:7.1f} {(r['peak_rss_mb'] or 0):7.0f}")
    out.append("pad% is the padding in the batches; the unpadded encoder computes on the real tokens only; "
               "vs grp = examples/s relative to stabletune-grouped; tok/s = real tokens per second, grp tok = "
               "that relative to stabletune-grouped (grouped batches are all-short or all-long: over few updates "
               "their examples/s depends on which were drawn)")
    if res["fixed_length"]:
        out += ["", "one stabletune update at fixed length (batch 32, synthetic tokens): fraction of matmul peak",
                f"{'tokens':>6} {'s/step':>7} {'fwd+bwd s':>9} {'%peak step':>10} {'%peak fwd+bwd':>13}"]
        for r in res["fixed_length"]:
            out.append(f"{r['tokens']:6d} {r['s_per_step']:7.3f} {r['s_fwd_bwd']:9.3f} "
                       f"{100 * r['fraction_of_peak']:10.1f} {100 * r['fwd_bwd_fraction_of_peak']:13.1f}")
    if res["ensemble"]:
        out += ["", "vectorised ensemble (train_ensemble; K=1 is train()), seconds per update",
                f"{'task':6} {'K':>3} {'s/step':>7} {'s/step/seed':>11} {'speed/seed vs K=1':>17} {'width':>6} "
                f"{'RSS MB':>7}"]
        for r in res["ensemble"]:
            out.append(f"{r['task']:6} {r['K']:3d} {r['s_per_step']:7.3f} {r['s_per_step_per_seed']:11.3f} "
                       f"{_fmt_ratio(r['speedup_per_seed_vs_K1']):>17} {r['mean_width']:6.1f} "
                       f"{r['peak_rss_mb']:7.0f}")
    a = res.get("ablations")
    if a:
        out += ["", f"optimizer step on all {a['n_params'] / 1e6:.1f} M parameters (ms): " + ", ".join(
            f"{k} {1e3 * v:.0f}" for k, v in a["optimizer_step_s"].items()),
            "forward+backward at 64 tokens (s): " + ", ".join(
            f"{k} {v:.3f}" for k, v in a["fwd_bwd_64_tokens_s"].items())]
    e = res["end_to_end"]
    if e:
        proj = (f"; official training alone would take ~{e['official_train_s_projected']:.0f} s "
                f"({e['steps']} x its median s/step)" if "official_train_s_projected" in e else "")
        out += ["", f"end to end, stabletune.training.train on {e['task']} paper-1k ({e['steps']} updates, "
                f"{e['evals']} evaluations + test): {e['wall_s']:.1f} s wall = train {e['train_s']:.1f} + eval "
                f"{e['eval_s']:.1f} + test {e['test_s']:.1f} + setup {e['setup_s']:.1f}; "
                f"{e['examples_per_s']:.1f} examples/s in training{proj}"]
    out += [f"note: {n}" for n in res["notes"]]
    out.append(f"benchmark wall time {res['bench_wall_s']:.0f} s")
    return "\n".join(out)


def _fmt_ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _fmt_load(x) -> str:
    return "-" if not x else "/".join(f"{v:.1f}" for v in x)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS), help="comma list (default: %(default)s)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma list from {', '.join(METHODS)} (default: %(default)s)")
    p.add_argument("--steps", type=int, default=5, help="timed updates per measurement (plus 1 warm-up)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--data-dir", default=None, help="GLUE folder (default: $STABLETUNE_DATA_DIR or ../shared)")
    p.add_argument("--gemm", type=int, default=4096, help="size of the square GEMM that measures the peak")
    p.add_argument("--fixed-lengths", default="16,64,128", help="comma list of lengths; empty to skip")
    p.add_argument("--fixed-steps", type=int, default=2)
    p.add_argument("--ensemble", default="", help="comma list of ensemble sizes K to time (e.g. 1,2,4)")
    p.add_argument("--no-ablations", dest="ablations", action="store_false",
                   help="skip the optimizer-kernel and attention micro-measurements")
    p.add_argument("--e2e-task", default="cola")
    p.add_argument("--no-e2e", dest="e2e", action="store_false")
    p.add_argument("--quick", action="store_true", help="a short smoke run (1 task, 2 steps, 1 repeat)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    a.tasks = [t.strip().lower() for t in a.tasks.split(",") if t.strip()]
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in a.methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    a.fixed_lengths = [int(x) for x in a.fixed_lengths.split(",") if x.strip()]
    a.ensemble = [int(x) for x in a.ensemble.split(",") if x.strip()]
    if a.ensemble and a.ensemble[0] != 1:
        a.ensemble = [1] + [k for k in a.ensemble if k != 1]
    if a.quick:
        a.tasks, a.steps, a.repeats, a.gemm = a.tasks[-1:], 2, 1, 256
        a.fixed_lengths, a.fixed_steps = a.fixed_lengths[:1], 1
        a.e2e_task = a.tasks[0]
    if a.data_dir is None:
        env = os.environ.get("STABLETUNE_DATA_DIR")
        a.data_dir = env or str(HERE.parent.parent / "shared" / "data" / "glue")
    return a


def main(argv=None) -> int:
    args = parse(argv)
    res = run(args)
    print(json.dumps(res, indent=1, default=float) if args.json else fmt_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

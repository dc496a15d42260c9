"""Finishing a run: each member's last checkpoint and its best one (really restored) on the test split (Section 3:
the best validation checkpoint is the one reported), its :class:`RunResult`, and its run folder, written into a
staging folder and committed atomically only when every member's folder is complete."""

from __future__ import annotations

import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from stabletune.engine import loop as _loop
from stabletune.engine.loop import LoopState, Step
from stabletune.engine.runlog import RunFolder
from stabletune.engine.setup import Run
from stabletune.predcodec import encode_predictions


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
    #: per-example test predictions of each checkpoint ("best", "last"), encoded by :mod:`stabletune.predcodec`
    predictions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


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


def finish(run: Run, state: LoopState, step: Step) -> list[RunResult]:
    """Test every member's last and best checkpoints, build its RunResult, write its folder; commit the folders
    once all are written (call inside :func:`stabletune.engine.runlog.staged`)."""
    spec, enc, ev = run.spec, run.enc, run.eval_kwargs()
    K = len(run.members)
    results = []
    for k, (m, ms) in enumerate(zip(run.members, state.members)):
        # --- test: the last checkpoint as it stands, then the best one really restored -------------
        t_test = time.perf_counter()
        last = {"step": ms.steps, "val": ms.last_val, "test": None}
        best = {"step": ms.best_step, "val": ms.best_val, "test": None}
        predictions: dict[str, np.ndarray] = {}
        if ms.steps > 0 and ms.status != "diverged":
            last["test"], last["test_loss"], preds = _loop.evaluate(m.model, enc["test"], spec, **ev)
            predictions["last"] = preds
        if ms.best_state is not None and best["step"] == last["step"] and last["test"] is not None:
            best["test"], best["test_loss"] = last["test"], last["test_loss"]  # the same weights: test once
            predictions["best"] = predictions["last"]
        elif ms.best_state is not None:
            m.model.load_state_dict(ms.best_state)
            best["test"], best["test_loss"], predictions["best"] = _loop.evaluate(m.model, enc["test"], spec, **ev)
        t_test = time.perf_counter() - t_test

        timings = {"wall_s": time.perf_counter() - run.t_start, "train_s": state.train_s, "eval_s": ms.eval_s,
                   "test_s": t_test, "examples_per_s": ms.examples / max(state.train_s, 1e-9),
                   "tokens_per_s": ms.tokens / max(state.train_s, 1e-9), "peak_memory_mb": peak_memory_mb(run.device)}
        if K > 1:
            timings["shared_by_members"] = K  # train_s (and memory) are the vectorised model's, shared by K runs
        result = RunResult(
            status=ms.status, config=m.cfg.to_dict(), seeds=m.seeds, task=task_record(spec),
            num_steps=run.total, warmup_steps=run.warmup, best=best, last=last, train_log=ms.train_log,
            evals=ms.evals, error=ms.error,
            predictions={ck: encode_predictions(p, regression=spec.is_regression)
                         for ck, p in predictions.items() if len(p)},
            data={"sizes": {n: len(v) for n, v in enc.items()},
                  "truncated": {n: v.num_truncated for n, v in enc.items()}, "steps_per_epoch": run.per_epoch,
                  "majority_baseline": majority_baselines(spec, enc), "split": run.splits.record()},
            techniques={**m.prepared.record, "new_param_names": m.loaded.new_param_names, **step.techniques(k)},
            timings=timings,
            environment=run_environment(run.device, run.precision, m.loaded.source, m.loaded.encoder),
            out_dir=str(m.folder.final) if m.folder else None)
        if m.folder:
            write_folder(m.folder, result, run.splits.indices, m.model if m.cfg.save_model else None, run.tokenizer)
        results.append(result)
    for f in run.folders:
        if f:
            f.commit()
    return results


def task_record(spec) -> dict:
    """The ``task`` entry of a run's result: name, labels, the selecting metric (and F1's positive class)."""
    record = {"name": spec.name, "labels": list(spec.labels) if spec.labels else None, "metric": spec.metric}
    if spec.metric == "f1" and spec.positive_index is not None:
        record["positive_label"] = spec.labels[spec.positive_index]
    return record


def majority_baselines(spec, enc: dict) -> dict[str, float | None]:
    """The main metric of always predicting the most frequent class, on validation and test (Table 3)."""
    from stabletune.metrics import majority_baseline

    return {name: (majority_baseline(spec, enc[name].labels) if len(enc[name]) else None)
            for name in ("validation", "test")}


def model_metadata(result: RunResult) -> dict:
    """What ``stabletune predict`` needs to apply a saved model as it was trained (stored in its config.json
    as ``stabletune``): text and label columns, maximum length, task type and the selecting metric."""
    cfg = result.config
    return {"task": result.task, "text_columns": list(cfg.get("text_columns") or []) or None,
            "label_column": cfg.get("label_column") if cfg.get("train_file") else None,
            "max_seq_length": cfg.get("max_seq_length"), "eval_batch_size": cfg.get("eval_batch_size")}


def write_folder(folder: RunFolder, result: RunResult, split_indices: dict, model, tokenizer) -> None:
    """The run folder's files (layout in :mod:`stabletune.engine.runlog`); ``results.json`` last."""
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

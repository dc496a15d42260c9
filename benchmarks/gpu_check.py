#!/usr/bin/env python
"""GPU speed check (< 5 min on one GPU): what stabletune's step does on an accelerator.

    bash benchmarks/gpu_check.sh                # on a machine with a CUDA GPU
    bash benchmarks/gpu_check.sh --cpu-smoke    # tiny model on CPU: checks the script runs (used by a test)

1. A BERT-Large-sized encoder (24 layers, width 1024, 16 heads, FFN 4096; random initialisation, no weights
   needed) with a classification head: batch 32 x 128 tokens, bf16 autocast, SDPA attention, stabletune's fused
   AdamW (:func:`stabletune.techniques.optim.build_optimizer`), gradient clipping. Prints steps/s, examples/s, achieved
   TFLOP/s (formula of ``benchmarks/bench_train.py``) against a bf16 GEMM measured in the same process, and peak
   memory. The same for the ``eager`` attention, for comparison.
2. Vectorised ensembles (:class:`stabletune.engine.ensemble.StackedModels`) of a MiniLM-sized encoder (6 layers, width
   384), K in {1, 4, 8, 16}, at 32 and 128 tokens: seconds per update per seed against one separate run's update
   (SDPA, no vmap, as :func:`stabletune.training.train`), and memory.

No data set and no download: inputs are random token ids. ``--json`` prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import Dims  # noqa: E402

LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
MINILM = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def make_model(sizes: dict, *, attn: str, device: torch.device, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, num_labels=2, attn_implementation=attn, **sizes)
    torch.manual_seed(seed)
    return BertForSequenceClassification(cfg).to(device).train()


def random_batch(batch: int, length: int, device: torch.device, *, lead: tuple = (), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (*lead, batch, length), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    labels = torch.randint(0, 2, (*lead, batch), generator=g)
    return {k: v.to(device) for k, v in out.items()}, labels.to(device)


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)


def gemm_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps = 10 if device.type == "cuda" else 2
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def timed_steps(step, device: torch.device, *, warmup: int, steps: int):
    """Median seconds of ``step()`` over ``steps`` calls after ``warmup`` untimed ones, and its last return."""
    times, out = [], None
    for i in range(warmup + steps):
        sync(device)
        t = time.perf_counter()
        out = step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times), out


def single_model(sizes: dict, *, attn: str, device: torch.device, dtype: torch.dtype | None, batch: int,
                 length: int, warmup: int, steps: int) -> dict:
    from stabletune.techniques.optim import build_optimizer
    from stabletune.engine.loop import compute_loss

    reset_memory(device)
    model = make_model(sizes, attn=attn, device=device)
    opt = build_optimizer(model.parameters(), name="adamw", lr=2e-5)
    params = [p for p in model.parameters() if p.requires_grad]
    inputs, labels = random_batch(batch, length, device)
    def step():
        with autocast(device, dtype):
            loss = compute_loss(model(**inputs).logits, labels, False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    s, loss = timed_steps(step, device, warmup=warmup, steps=steps)
    flops = Dims(model.config, 2).step_flops(batch * length, batch * length * length, batch)
    out = {"attn": attn, "s_per_step": s, "steps_per_s": 1 / s, "examples_per_s": batch / s,
           "tflop_per_s": flops / s / 1e12, "peak_memory_gb": peak_memory_gb(device),
           "n_params": sum(p.numel() for p in params), "loss_finite": math.isfinite(loss.item())}
    return out


def ensemble_speed(sizes: dict, *, ks: list[int], device: torch.device, dtype: torch.dtype | None, batch: int,
                   length: int, warmup: int, steps: int) -> list[dict]:
    from stabletune.engine.ensemble import StackedModels
    from stabletune.techniques.optim import build_optimizer

    # the baseline: one separate run's step (what train() does: SDPA, no vmap)
    sep = single_model(sizes, attn="sdpa", device=device, dtype=dtype, batch=batch, length=length, warmup=warmup,
                       steps=steps)
    rows = [{"K": "separate", "s_per_step": sep["s_per_step"], "s_per_step_per_seed": sep["s_per_step"],
             "speedup_per_seed_vs_separate": 1.0, "peak_memory_gb": sep["peak_memory_gb"],
             "losses_finite": sep["loss_finite"]}]
    base_s = None
    for K in ks:
        reset_memory(device)
        models = [make_model(sizes, attn="sdpa", device=device, seed=k) for k in range(K)]
        stacked = StackedModels(models, is_regression=False)
        opt = stacked.optimizer_like(build_optimizer(models[0].parameters(), name="adamw", lr=2e-5), models[0])
        inputs, labels = random_batch(batch, length, device, lead=(K,))
        def step():
            with autocast(device, dtype):
                losses = stacked.losses(inputs, labels)
            losses.sum().backward()
            stacked.clip_grad_norm_(1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return losses

        s, losses = timed_steps(step, device, warmup=warmup, steps=steps)
        base_s = base_s or s / K
        rows.append({"K": K, "s_per_step": s, "s_per_step_per_seed": s / K,
                     "speedup_per_seed_vs_first": base_s / (s / K),
                     "speedup_per_seed_vs_separate": sep["s_per_step"] / (s / K), "peak_memory_gb": peak_memory_gb(device),
                     "losses_finite": bool(torch.isfinite(losses).all())})
        models = stacked = opt = step = None  # free this K before the next one is built
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU, a few steps (checks the script)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.cpu_smoke:
        torch.set_num_threads(1)
        device, dtype = torch.device("cpu"), torch.bfloat16
        large, small, warmup, steps, gemm_n = TINY, TINY, 1, a.steps or 2, 256
        ks, batch, length, lengths = [1, 4, 8], 8, 16, [16]
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; run with --cpu-smoke to check the script on CPU", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        large, small, warmup, steps, gemm_n = LARGE, MINILM, 5, a.steps or 30, 8192
        ks, batch, length, lengths = [1, 4, 8, 16], 32, 128, [32, 128]
        torch.backends.cuda.matmul.allow_tf32 = True
    t0 = time.perf_counter()
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke)",
           "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__, "batch": batch, "length": length}
    res["gemm_peak_tflop_per_s"] = gemm_peak(device, dtype, gemm_n) / 1e12
    res["large"] = [single_model(large, attn=attn, device=device, dtype=dtype, batch=batch, length=length,
                                 warmup=warmup, steps=steps) for attn in ("sdpa", "eager")]
    for r in res["large"]:
        r["fraction_of_gemm_peak"] = r["tflop_per_s"] / res["gemm_peak_tflop_per_s"]
    res["ensemble"] = {n: ensemble_speed(small, ks=ks, device=device, dtype=dtype, batch=batch, length=n,
                                         warmup=warmup, steps=steps) for n in lengths}
    res["wall_s"] = time.perf_counter() - t0
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{res['device']}, {res['dtype']} autocast, torch {res['torch']}, batch {batch} x {length} tokens; "
          f"{res['dtype']} GEMM peak {res['gemm_peak_tflop_per_s']:.1f} TFLOP/s")
    print("BERT-Large-sized, fused AdamW:")
    for r in res["large"]:
        mem = f"{r['peak_memory_gb']:.1f} GiB" if r["peak_memory_gb"] is not None else "-"
        print(f"  {r['attn']:5}  {r['steps_per_s']:6.2f} steps/s  {r['examples_per_s']:7.1f} ex/s  "
              f"{r['tflop_per_s']:7.2f} TFLOP/s ({100 * r['fraction_of_gemm_peak']:.0f}% of GEMM)  peak {mem}")
    for n, rows in res["ensemble"].items():
        print(f"ensemble (MiniLM-sized, vmap), batch {batch} x {n} tokens, per seed:")
        for r in rows:
            mem = f"{r['peak_memory_gb']:.1f} GiB" if r["peak_memory_gb"] is not None else "-"
            print(f"  K={r['K']:<8} {r['s_per_step'] * 1e3:8.1f} ms/step  {r['s_per_step_per_seed'] * 1e3:8.1f} "
                  f"ms/step/seed  {r['speedup_per_seed_vs_separate']:.2f}x vs separate runs  peak {mem}")
    print(f"gpu_check wall time {res['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Which variable-length attention is fastest for the unpadded encoder on this machine (issue 14)?

    python benchmarks/bench_unpadded_attention.py                 # CoLA, MRPC, RTE; ~1-2 min on 1 thread
    python benchmarks/bench_unpadded_attention.py --quick --json  # smoke run (tests/test_benchmarks.py)

For random training batches of 32 (the paper's batches: real token lengths of the task's paper-1k training split,
embedded MiniLM tokenizer, max 128 tokens), it times forward + backward of

* ``attention``: one layer's attention alone on packed Q/K/V of MiniLM's shape (hidden 384, 12 heads), for each
  layout of :func:`stabletune.unpadded.varlen_attention` (``padded``, ``buckets``, ``nested``,
  ``block-diagonal``) and, as the reference, SDPA on the padded batch as Hugging Face runs it (``hf``);
* ``encoder``: the whole model (embedded MiniLM-L6 + classifier, dropout off) for one batch: the Hugging Face
  padded forward and the unpadded model with each layout (``block-diagonal`` is left out: quadratic in the
  batch's token count), computing the last block for the first tokens only (the default) and, as
  ``padded/all``, for every token.

Every variant runs in turn within each repeat (the order rotates), and we report medians over repeats, so load
from neighbours hits all variants alike. The machine's load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TASKS = ("cola", "mrpc", "rte")


def task_lengths(task: str, data_dir: str, model: str, max_length: int = 128) -> np.ndarray:
    """Token lengths of the task's paper-1k training split (as stabletune tokenises them)."""
    from transformers import AutoTokenizer

    from stabletune.data import load_task_data, make_splits
    from stabletune.data.batching import encode
    from stabletune.model import resolve_model

    spec, train_rows, dev_rows = load_task_data(task=task, data_dir=data_dir)
    splits = make_splits(spec, train_rows, dev_rows, split="paper-1k", seed=0)
    tok = AutoTokenizer.from_pretrained(resolve_model(model))
    return encode(tok, splits.train, max_length=max_length, is_regression=spec.is_regression).lengths


def random_batches(lengths: np.ndarray, n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [lengths[rng.choice(len(lengths), batch_size, replace=False)] for _ in range(n)]


def _mask(lens: np.ndarray) -> torch.Tensor:
    width = int(lens.max())
    return (torch.arange(width)[None, :] < torch.from_numpy(lens)[:, None]).long()


def time_attention(lens: np.ndarray, layout: str, *, hidden: int = 384, heads: int = 12, seed: int = 0) -> float:
    """Seconds of forward + backward of one attention call (packed Q/K/V of the batch ``lens``)."""
    import torch.nn.functional as F

    from stabletune.unpadded import pack, varlen_attention

    mask = _mask(lens)
    pk = pack(mask)
    g = torch.Generator().manual_seed(seed)
    if layout == "hf":  # the padded batch, as the Hugging Face model computes it
        B, L = mask.shape
        q, k, v = (torch.randn(B * L, hidden, generator=g, requires_grad=True) for _ in range(3))
        key_mask = mask.bool()[:, None, None, :]
        t = time.perf_counter()  # views and transposes as Hugging Face's attention makes them
        qh, kh, vh = (x.view(B, L, heads, hidden // heads).transpose(1, 2) for x in (q, k, v))
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=key_mask)
        out.transpose(1, 2).reshape(B * L, hidden).sum().backward()
        return time.perf_counter() - t
    q, k, v = (torch.randn(pk.total, hidden, generator=g, requires_grad=True) for _ in range(3))
    t = time.perf_counter()
    out = varlen_attention(q, k, v, pk, num_heads=heads, layout=layout)
    out.sum().backward()
    return time.perf_counter() - t


def time_encoder(model, lens: np.ndarray, *, seed: int = 0) -> float:
    """Seconds of forward + backward of the whole model on one batch of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    mask = _mask(lens)
    ids = torch.randint(1000, model.config.vocab_size, mask.shape, generator=g) * mask
    labels = torch.randint(0, 2, (len(lens),), generator=g)
    t = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def run(args) -> dict:
    from stabletune.model import load_model
    from stabletune.unpadded import LAYOUTS, repad_model_, unpad_model_

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    model = load_model(args.model, num_labels=2, dropout=0.0, attn_implementation="sdpa",
                       init_generator=torch.Generator().manual_seed(0)).model.train()
    att_variants = ["hf", *LAYOUTS]
    # "<layout>" computes the last block for the first token only (the default); "<layout>/all" for every token
    enc_variants = ["hf", *[x for x in LAYOUTS if x != "block-diagonal"], f"{LAYOUTS[0]}/all"]
    rows = []
    for task in args.tasks:
        lengths = task_lengths(task, args.data_dir, args.model)
        batches = random_batches(lengths, args.batches, args.batch_size, seed=0)
        att = {v: [] for v in att_variants}
        enc = {v: [] for v in enc_variants}
        for r in range(args.repeats):
            for i, lens in enumerate(batches):
                for v in att_variants[r % len(att_variants):] + att_variants[:r % len(att_variants)]:
                    att[v].append(time_attention(lens, v, seed=i))
                if args.encoder:
                    for v in enc_variants[r % len(enc_variants):] + enc_variants[:r % len(enc_variants)]:
                        if v == "hf":
                            repad_model_(model)
                        else:
                            unpad_model_(model, layout=v.split("/")[0], first_token_only=not v.endswith("/all"))
                        enc[v].append(time_encoder(model, lens, seed=i))
        pad = 1 - sum(int(b.sum()) for b in batches) / sum(len(b) * int(b.max()) for b in batches)
        row = {"task": task, "mean_length": float(lengths.mean()), "pad_fraction": pad,
               "attention_ms": {v: 1e3 * statistics.median(x) for v, x in att.items()}}
        if args.encoder:
            row["encoder_ms"] = {v: 1e3 * statistics.median(x) for v, x in enc.items()}
        rows.append(row)
    repad_model_(model)
    return {"date": time.strftime("%Y-%m-%d"), "cpu": _cpu(), "threads": args.threads, "torch": torch.__version__,
            "load_avg_start": load_start, "load_avg_end": os.getloadavg(), "batch_size": args.batch_size,
            "batches": args.batches, "repeats": args.repeats, "rows": rows}


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


def fmt(res: dict) -> str:
    out = [f"variable-length attention, {res['date']}: {res['cpu']}, {res['threads']} thread(s), torch "
           f"{res['torch']}; load average start/end {'/'.join(f'{x:.1f}' for x in res['load_avg_start'])} / "
           f"{'/'.join(f'{x:.1f}' for x in res['load_avg_end'])}",
           f"random batches of {res['batch_size']}, {res['batches']} batches x {res['repeats']} repeats, medians "
           f"(ms, forward + backward)"]
    for r in res["rows"]:
        out.append(f"{r['task']}: mean length {r['mean_length']:.1f}, padding {100 * r['pad_fraction']:.0f} %")
        out.append("  attention: " + ", ".join(f"{k} {v:.2f}" for k, v in r["attention_ms"].items()))
        if "encoder_ms" in r:
            out.append("  encoder:   " + ", ".join(f"{k} {v:.1f}" for k, v in r["encoder_ms"].items()))
    return "\n".join(out)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--data-dir", default=os.environ.get("STABLETUNE_DATA_DIR",
                                                        str(HERE.parent.parent / "shared" / "data" / "glue")))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=4, help="distinct random batches per task")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-encoder", dest="encoder", action="store_false", help="attention only")
    p.add_argument("--quick", action="store_true", help="smoke run: one task, 1 batch of 4, 1 repeat")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    a.tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    if a.quick:
        a.tasks, a.batches, a.repeats, a.batch_size = a.tasks[-1:], 1, 1, 4
    return a


def main(argv=None) -> int:
    args = parse(argv)
    res = run(args)
    print(json.dumps(res, indent=1) if args.json else fmt(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

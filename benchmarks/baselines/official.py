"""The official recipe's training data path, re-implemented from its description for speed comparisons.

What the paper's official code (``run_glue.py`` of asappresearch/revisit-bert-finetuning, itself the Hugging Face
``run_glue.py`` example of early 2020) does for every training step, and what this module reproduces:

* every example is tokenised once and **padded to ``max_seq_length`` = 128** (``glue_convert_examples_to_features``
  with right padding): each batch is a ``[32, 128]`` tensor whatever the real lengths;
* a ``TensorDataset`` read by a ``DataLoader`` with a ``RandomSampler`` (uniform shuffling, no length grouping),
  batch size 32, the global RNG seeded once before the loop;
* fp32 (the paper used apex fp16 on a GPU; on CPUs fp32 is the only fast choice), eager attention (the
  Transformers version of the time had no SDPA);
* the loss computed by the model from ``labels``; ``loss.item()`` every step; ``clip_grad_norm_`` over all
  parameters (max norm 1.0); AdamW over two groups (no weight decay on biases and LayerNorm weights) in torch's
  multi-tensor (``foreach``) implementation, the style of ``torch.optim.AdamW`` / ``transformers.AdamW``; then the
  linear warm-up/decay scheduler and ``model.zero_grad()`` (which zeroed gradients in place in the torch of the
  time; we pass ``set_to_none=False`` to keep that).

Only the training steps are reproduced (no evaluation, checkpointing or logging), which is what the speed
comparison in ``benchmarks/bench_train.py`` times. Written from the description above; no code was copied.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

MAX_SEQ_LENGTH = 128


def pad_to_max_features(tokenizer, examples: Sequence, *, max_length: int = MAX_SEQ_LENGTH) -> TensorDataset:
    """Tokenise ``examples`` (objects with ``text_a``, ``text_b``, ``label``) into fixed ``[N, max_length]`` tensors.

    Truncation is longest-first, padding on the right with the tokenizer's pad id, token type ids padded with 0:
    the feature layout of the official code. Returns ``(input_ids, attention_mask, token_type_ids, labels)``.
    """
    a = [e.text_a for e in examples]
    b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    enc = tokenizer(a, b, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt",
                    return_token_type_ids=True, return_attention_mask=True)
    labels = torch.tensor([e.label for e in examples],
                          dtype=torch.float32 if isinstance(examples[0].label, float) else torch.long)
    return TensorDataset(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels)


def grouped_parameters(model: torch.nn.Module, weight_decay: float = 0.0) -> list[dict]:
    """The official two groups: weight decay on everything but biases and LayerNorm weights."""
    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0}]


def linear_warmup_decay(warmup: int, total: int) -> Callable[[int], float]:
    """Transformers' ``get_linear_schedule_with_warmup`` multiplier."""
    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def train_steps(model: torch.nn.Module, dataset: TensorDataset, *, steps: int, batch_size: int = 32,
                lr: float = 2e-5, eps: float = 1e-8, weight_decay: float = 0.0, warmup: int = 0,
                total: int | None = None, max_grad_norm: float = 1.0, seed: int = 0,
                on_step: Callable[[int, dict], None] | None = None) -> list[float]:
    """Run ``steps`` official-recipe updates (epochs restart as needed); returns the training losses.

    ``on_step(step, batch)`` is called after each update with the batch tensors (for timing and padding counts).
    The caller's global RNG state is left untouched (the seeded sampler and dropout run inside ``fork_rng``).
    """
    optimizer = torch.optim.AdamW(grouped_parameters(model, weight_decay), lr=lr, eps=eps,
                                  weight_decay=weight_decay, foreach=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(warmup, total or steps))
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loader = DataLoader(dataset, sampler=RandomSampler(dataset), batch_size=batch_size)
        model.zero_grad(set_to_none=False)
        model.train()
        step = 0
        while step < steps:
            for input_ids, attention_mask, token_type_ids, labels in loader:
                batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                         "token_type_ids": token_type_ids, "labels": labels}
                loss = model(**batch).loss
                loss.backward()
                losses.append(loss.item())
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                scheduler.step()
                model.zero_grad(set_to_none=False)  # torch 1.x semantics of the time: zero in place
                step += 1
                if on_step is not None:
                    on_step(step, batch)
                if step >= steps:
                    break
    return losses

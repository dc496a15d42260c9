"""The unpadded encoder: dense layers on the packed real tokens, attention per sequence.

A batch padded to its longest sequence spends most of its FLOPs on pad tokens when lengths vary (50 % of CoLA's
and 48 % of RTE's tokens in random batches of 32; issue 14). Every dense layer of a BERT-style block -- Q/K/V and
output projections, the feed-forward pair, the layer norms, the embeddings -- acts on each token independently, so
it can run on the ``(total_tokens, hidden)`` matrix of the real tokens alone; only attention needs to know which
tokens form a sequence. This module computes the encoder that way, with the **same modules and parameters** as the
Hugging Face model: :func:`unpad_model_` swaps the class of the base model (``model.bert`` / ``model.roberta`` /
``model.electra``) for a subclass whose ``forward`` is :func:`unpadded_forward`. Nothing else changes: parameter
names, ``state_dict``, ``save_pretrained`` (it records the outer ``*ForSequenceClassification`` class, untouched),
``from_pretrained``/``--init-from``, and every technique (re-init, Mixout's module replacement, LLRD's groups,
pre-trained weight decay, parameter distance) sees the model it always saw. The forward calls the model's own
submodules (``embeddings``, ``attention.self.query`` ..., ``attention.output``, ``intermediate``, ``output``,
``pooler``), so a Mixout-wrapped ``nn.Linear`` is used as it is on the padded path. The math is the same up to
float rounding (tests/test_unpadded.py: logits, loss and every gradient within ~1e-5 of the HF model in fp32 with
dropout off); dropout masks are drawn in another layout, so with dropout on a run is a sample of the same
distribution, not the same bits (the science check is studies/unpadded-science.yaml).

What we took from where (docs/performance.md has the long version):

* MosaicBERT (``bert_padding.py``: ``unpad_input`` / ``pad_input`` with ``index_first_axis`` /
  ``index_put_first_axis``): unpad once at the bottom from the attention mask (``nonzero`` of the flattened mask
  gives each real token's row in the ``batch * width`` layout), run the whole stack packed, pad back only at the
  top. Like their custom autograd functions we move rows with ``index_select`` / ``index_copy``, whose backward
  passes are a scatter-add / gather of rows (not the generic advanced-indexing backward).
* NVIDIA's BERT (packed sequences, ``cu_seqlens`` for its fused multi-head attention) and flash-attention's
  ``varlen`` kernels: attention needs only the sequence boundaries. No such kernel exists for CPU in torch
  2.13, so attention runs through PyTorch's ``scaled_dot_product_attention`` per group of sequences: by default
  (``layout="buckets"``) one SDPA call per distinct length in the batch (no padding, no mask). The alternatives
  -- sequences sorted by length in groups of about 8, each padded to its own longest (``sorted``), one group
  padded to the longest (``padded``), ``torch.nested`` jagged tensors (``nested``), one block-diagonal mask
  (``block-diagonal``) -- were measured on this CPU by
  ``benchmarks/bench_unpadded_attention.py`` (docs/performance.md; what lost is in docs/LOG.md).
* MosaicBERT's ``subset_mask`` (its MLM head computes the last layer only for the masked tokens): a
  sequence-classification head reads only the first token, so the last block computes its queries, attention
  output and feed-forward only for those rows (keys and values still on every token). Exact for the head.

Limits (those inputs fall back to the Hugging Face forward, exactly): ``inputs_embeds`` or ``position_ids``
given, ``output_attentions`` / ``output_hidden_states`` asked for, caches / cross-attention, a sequence that does
not start at column 0 (left padding) or is empty. Supported families: BERT (and so the embedded MiniLM), RoBERTa
and ELECTRA with absolute position embeddings, used as encoders (not decoders).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MODEL_TYPES = ("bert", "roberta", "electra")
"""Families whose blocks are BERT's (embeddings -> [self-attention, output, intermediate, output] x L)."""

LAYOUTS = ("padded", "buckets", "sorted", "nested", "block-diagonal")
"""Variable-length attention variants (see :func:`varlen_attention`)."""

SORTED_GROUP = 8
"""Sequences per group of the ``sorted`` layout."""

DEFAULT_LAYOUT = "buckets"
"""Fastest on this project's CPU, 2-4 % ahead of ``sorted`` (docs/performance.md,
benchmarks/bench_unpadded_attention.py); ``sorted`` makes fewer calls, which may matter where launches cost."""


def unsupported_reason(config) -> str | None:
    """Why a model with this Hugging Face config cannot run unpadded (None when it can)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_TYPES:
        return f"model type {model_type!r} is not one of {', '.join(MODEL_TYPES)}"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {config.position_embedding_type!r} (only absolute positions)"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "the model is configured as a decoder"
    return None


# ------------------------------------------------------------------------------------------------
# Packing: which rows of the (batch * width) layout are real tokens, and how sequences group for attention
# ------------------------------------------------------------------------------------------------
@dataclass
class Packing:
    """Where the real tokens of a right-padded ``(batch, width)`` batch are.

    ``rows[t]`` is token ``t``'s row in the flattened ``batch * width`` layout (tokens in sequence order, so the
    tokens of sequence ``b`` are ``cu_seqlens[b]:cu_seqlens[b+1]``).
    """

    rows: torch.Tensor
    lengths: list[int]
    cu_seqlens: torch.Tensor
    batch: int
    width: int

    @property
    def max_len(self) -> int:
        return max(self.lengths)

    @property
    def total(self) -> int:
        return int(self.cu_seqlens[-1])


def pack(attention_mask: torch.Tensor) -> Packing:
    """The packing of a right-padded 0/1 mask (every row: ones, then zeros). Raises ValueError for an empty row
    or a mask that is not right-padded."""
    mask = attention_mask.bool()
    batch, width = mask.shape
    lengths_t = mask.sum(1)
    cols = torch.arange(width, device=mask.device)
    if not bool((lengths_t > 0).all()) or not bool((mask == (cols[None, :] < lengths_t[:, None])).all()):
        raise ValueError("pack: every attention-mask row must be ones then zeros, with at least one one")
    lengths = lengths_t.tolist()
    rows = mask.reshape(-1).nonzero().squeeze(1)
    cu = torch.zeros(batch + 1, dtype=torch.long)
    cu[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.long), 0)
    return Packing(rows=rows, lengths=lengths, cu_seqlens=cu.to(mask.device), batch=batch, width=width)


@dataclass
class _Groups:
    """Sequences split into groups, each padded to its own width: the slots of all groups laid end to end."""

    slots: torch.Tensor  # (total,) slot of each packed token in the concatenated padded groups
    num_slots: int
    groups: list[tuple[int, int, torch.Tensor | None]]  # (sequences, width, key mask or None) per group


def _group(pk: Packing, layout: str) -> _Groups:
    """``padded``: one group of every sequence at the longest length; ``buckets``: one group per distinct length
    (no mask needed)."""
    lengths = np.asarray(pk.lengths, dtype=np.int64)
    if layout == "padded":
        members = [np.arange(pk.batch)]
    elif layout == "buckets":
        order = np.argsort(-lengths, kind="stable")
        _, starts = np.unique(-lengths[order], return_index=True)
        members = np.split(order, starts[1:])
    elif layout == "sorted":
        order = np.argsort(-lengths, kind="stable")
        members = np.array_split(order, max(1, round(pk.batch / SORTED_GROUP)))
    else:
        raise ValueError(f"unknown grouped layout {layout!r}")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    slot_of_token = np.empty(int(lengths.sum()), dtype=np.int64)
    groups, offset = [], 0
    device = pk.rows.device
    for seqs in members:
        w = int(lengths[seqs].max())
        for r, b in enumerate(seqs):
            n = int(lengths[b])
            slot_of_token[starts[b]:starts[b] + n] = offset + r * w + np.arange(n)
        mask = None
        if int(lengths[seqs].min()) != w:  # keys beyond a sequence's length are masked out
            mask = torch.from_numpy(np.arange(w)[None, :] < lengths[seqs][:, None]).to(device)[:, None, None, :]
        groups.append((len(seqs), w, mask))
        offset += len(seqs) * w
    return _Groups(torch.from_numpy(slot_of_token).to(device), offset, groups)


# ------------------------------------------------------------------------------------------------
# Variable-length attention
# ------------------------------------------------------------------------------------------------
def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pk: Packing, *, num_heads: int,
                     scale: float | None = None, dropout_p: float = 0.0, layout: str = DEFAULT_LAYOUT,
                     _cache: dict | None = None) -> torch.Tensor:
    """Softmax attention of each sequence's tokens over its own tokens, on packed ``(total, hidden)`` Q, K, V.

    Layouts (all exact; which is fastest depends on the machine, see docs/performance.md):

    * ``padded``: scatter Q/K/V into one ``(batch, max_len)`` buffer, SDPA with a key mask, gather back (the
      dense layers stay unpadded; attention computes on padding).
    * ``buckets``: sequences of equal length form one SDPA call each (no padding, one call per distinct length).
    * ``sorted``: sequences sorted by length, cut into groups of about :data:`SORTED_GROUP`, each padded to its
      own longest (little padding, a few calls).
    * ``nested``: ``torch.nested`` jagged tensors (``nested_tensor_from_jagged`` with ``cu_seqlens``) into SDPA.
    * ``block-diagonal``: one SDPA call over all tokens with a ``(total, total)`` same-sequence mask (quadratic in
      the total token count: only for tiny batches).

    ``_cache`` (a dict shared by the layers of one forward) keeps the layout's index tensors between layers.
    """
    total, hidden = q.shape
    head = hidden // num_heads
    cache = _cache if _cache is not None else {}
    if layout in ("padded", "buckets", "sorted"):
        grp = cache.get(layout)
        if grp is None:
            grp = cache[layout] = _group(pk, layout)
        qkv = torch.cat([q, k, v], dim=1)
        buf = qkv.new_zeros(grp.num_slots, 3 * hidden).index_copy(0, grp.slots, qkv)
        # split/unbind rather than slicing and indexing: their backward is one cat/stack, where each slice's
        # backward would fill a zero tensor of the whole buffer (measured: a quarter of the attention time)
        parts = buf.split([n * w for n, w, _ in grp.groups]) if len(grp.groups) > 1 else (buf,)
        outs = []
        for part, (n, w, mask) in zip(parts, grp.groups):
            qg, kg, vg = (x.transpose(1, 2) for x in part.view(n, w, 3, num_heads, head).unbind(2))
            o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask, dropout_p=dropout_p, scale=scale)
            outs.append(o.transpose(1, 2).reshape(n * w, hidden))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
        return out.index_select(0, grp.slots)
    if layout == "nested":
        offsets = pk.cu_seqlens
        qn, kn, vn = (torch.nested.nested_tensor_from_jagged(x.view(total, num_heads, head), offsets).transpose(1, 2)
                      for x in (q, k, v))
        with warnings.catch_warnings():  # torch's CPU path warns that strided nested tensors are a prototype
            warnings.simplefilter("ignore", UserWarning)
            o = F.scaled_dot_product_attention(qn, kn, vn, dropout_p=dropout_p, scale=scale)
        return o.transpose(1, 2).values().reshape(total, hidden)
    if layout == "block-diagonal":
        mask = cache.get("block-diagonal")
        if mask is None:
            seq = torch.repeat_interleave(torch.arange(pk.batch, device=q.device),
                                          torch.tensor(pk.lengths, device=q.device))
            mask = cache["block-diagonal"] = (seq[:, None] == seq[None, :])[None, None]
        qb, kb, vb = (x.view(1, total, num_heads, head).transpose(1, 2) for x in (q, k, v))
        o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout_p, scale=scale)
        return o.transpose(1, 2).reshape(total, hidden)
    raise ValueError(f"unknown attention layout {layout!r}; choose from {', '.join(LAYOUTS)}")


def first_token_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pk: Packing, *, num_heads: int,
                          scale: float | None = None, dropout_p: float = 0.0, _cache: dict | None = None
                          ) -> torch.Tensor:
    """Attention of each sequence's first token (``q``: ``(batch, hidden)``) over all its tokens (packed ``k``,
    ``v``: ``(total, hidden)``); returns ``(batch, hidden)``."""
    batch, hidden = q.shape
    head = hidden // num_heads
    cache = _cache if _cache is not None else {}
    grp = cache.get("padded")
    if grp is None:
        grp = cache["padded"] = _group(pk, "padded")
    (_, width, mask), = grp.groups
    kv = torch.cat([k, v], dim=1)
    buf = kv.new_zeros(grp.num_slots, 2 * hidden).index_copy(0, grp.slots, kv)
    kb, vb = (x.transpose(1, 2) for x in buf.view(batch, width, 2, num_heads, head).unbind(2))
    qb = q.view(batch, 1, num_heads, head).transpose(1, 2)
    o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return o.reshape(batch, hidden)


# ------------------------------------------------------------------------------------------------
# The forward of the base model (BertModel / RobertaModel / ElectraModel), unpadded
# ------------------------------------------------------------------------------------------------
def _needs_hf(self, input_ids, attention_mask, kwargs) -> bool:
    if input_ids is None or kwargs.get("inputs_embeds") is not None or kwargs.get("position_ids") is not None:
        return True
    for key in ("encoder_hidden_states", "encoder_attention_mask", "cache", "past_key_values"):
        if kwargs.get(key) is not None:
            return True
    if kwargs.get("use_cache"):
        return True
    for key in ("output_attentions", "output_hidden_states"):
        if kwargs.get(key, getattr(self.config, key, False)):
            return True
    return attention_mask is not None and attention_mask.dim() != 2


def unpadded_forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                     token_type_ids: torch.Tensor | None = None, **kwargs):
    """``forward`` of an unpadded base model: same arguments and outputs as the Hugging Face one.

    Returns ``last_hidden_state`` (padded back to ``(batch, width, hidden)``, zeros at pad positions where the
    Hugging Face model has values that no head reads) and ``pooler_output`` (BERT/RoBERTa with a pooler).
    """
    from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

    hf_forward = _hf_class(type(self)).forward
    if _needs_hf(self, input_ids, attention_mask, kwargs):
        return hf_forward(self, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          **kwargs)
    batch, width = input_ids.shape
    try:
        pk = pack(attention_mask if attention_mask is not None else torch.ones_like(input_ids))
    except ValueError:  # left padding or an empty row: the padded computation defines those, use it
        return hf_forward(self, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          **kwargs)

    # Embeddings of the real tokens only, through the model's own embedding module (shape (1, total)): position
    # ids as the Hugging Face model computes them on the padded batch (BERT/ELECTRA: the column; RoBERTa: from the
    # non-pad input ids, offset by padding_idx), then picked at the real tokens.
    emb = self.embeddings
    if hasattr(emb, "create_position_ids_from_input_ids"):  # RoBERTa
        positions = emb.create_position_ids_from_input_ids(input_ids, emb.padding_idx)
    else:
        positions = torch.arange(width, device=input_ids.device).expand(batch, width)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)

    def pick(x: torch.Tensor) -> torch.Tensor:  # (batch, width) -> (1, total): the real tokens, in order
        return x.reshape(-1).index_select(0, pk.rows)[None]

    h = emb(input_ids=pick(input_ids), token_type_ids=pick(token_type_ids), position_ids=pick(positions))[0]
    if hasattr(self, "embeddings_project"):  # ELECTRA with embedding_size != hidden_size
        h = self.embeddings_project(h)

    cache: dict = {}
    layers = list(self.encoder.layer)
    for i, layer in enumerate(layers):
        sa = layer.attention.self
        scale = getattr(sa, "scaling", None)
        p = sa.dropout.p if sa.training else 0.0
        if self._unpadded_first_token_only and i == len(layers) - 1:
            # The head reads only each sequence's first token: the last block's queries, attention output and
            # feed-forward run on those rows only (keys and values still on every token). Exact for the head.
            first = h.index_select(0, pk.cu_seqlens[:-1])
            ctx = first_token_attention(sa.query(first), sa.key(h), sa.value(h), pk, num_heads=sa.num_attention_heads,
                                        scale=scale, dropout_p=p, _cache=cache)
            h = layer.attention.output(ctx, first)
            h = layer.output(layer.intermediate(h), h)
            break
        ctx = varlen_attention(sa.query(h), sa.key(h), sa.value(h), pk, num_heads=sa.num_attention_heads,
                               scale=scale, dropout_p=p, layout=self._unpadded_layout, _cache=cache)
        h = layer.attention.output(ctx, h)
        h = layer.output(layer.intermediate(h), h)

    hidden = h.shape[-1]
    if self._unpadded_first_token_only:
        seq = h.view(batch, 1, hidden)
    else:
        seq = h.new_zeros(batch * width, hidden).index_copy(0, pk.rows, h).view(batch, width, hidden)
    pooler = getattr(self, "pooler", None)
    pooled = pooler(seq) if pooler is not None else None
    return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=seq, pooler_output=pooled)


def _unpadded_subclass(hf_cls: type) -> type:
    return type(f"Unpadded{hf_cls.__name__}", (hf_cls,), {
        "forward": unpadded_forward, "_unpadded_layout": DEFAULT_LAYOUT, "_unpadded_first_token_only": False,
        "__module__": __name__,
        "__doc__": f"{hf_cls.__name__} whose forward runs unpadded (stabletune.unpadded)."})


def _build_classes() -> dict[type, type]:
    from transformers import BertModel, ElectraModel, RobertaModel

    return {cls: _unpadded_subclass(cls) for cls in (BertModel, RobertaModel, ElectraModel)}


_CLASSES: dict[type, type] | None = None


def _classes() -> dict[type, type]:
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _build_classes()
        for sub in _CLASSES.values():  # module-level names, so that pickling an unpadded model works
            globals()[sub.__name__] = sub
    return _CLASSES


def _hf_class(cls: type) -> type:
    for hf, sub in _classes().items():
        if cls is sub:
            return hf
    raise TypeError(f"{cls.__name__} is not an unpadded base model")


def _base(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", None)
    if not isinstance(base, nn.Module):
        raise ValueError(f"{type(model).__name__} has no Hugging Face base model (base_model)")
    return base


FIRST_TOKEN_HEADS = ("BertForSequenceClassification", "RobertaForSequenceClassification",
                     "ElectraForSequenceClassification")
"""Models whose head reads only the first token of the last hidden state (pooler / ``features[:, 0, :]``)."""


def unpad_model_(model: nn.Module, *, layout: str = DEFAULT_LAYOUT, first_token_only: bool | None = None
                 ) -> nn.Module:
    """Make ``model`` (a BERT/RoBERTa/ELECTRA ``*ForSequenceClassification``, or the base model itself) compute
    its encoder unpadded, in place, and return it. Parameters, buffers and module names are untouched.

    Args:
        layout: the attention layout (:func:`varlen_attention`).
        first_token_only: compute the last block only for each sequence's first token, the one the head reads
            (its ``last_hidden_state`` is then ``(batch, 1, hidden)``). Default: on for the
            :data:`FIRST_TOKEN_HEADS`, off otherwise.

    Raises:
        ValueError: the model is not supported (:func:`unsupported_reason`) or the layout is unknown.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown attention layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    base = _base(model)
    why = unsupported_reason(base.config)
    classes = _classes()
    hf_cls = _hf_class(type(base)) if is_unpadded(model) else type(base)
    if why is None and hf_cls not in classes:
        why = f"base model class {hf_cls.__name__} is not BertModel, RobertaModel or ElectraModel"
    if why is not None:
        raise ValueError(f"cannot run {type(model).__name__} unpadded: {why}")
    base.__class__ = classes[hf_cls]
    _register_output_capture(base)
    base._unpadded_layout = layout
    base._unpadded_first_token_only = (type(model).__name__ in FIRST_TOKEN_HEADS if first_token_only is None
                                       else bool(first_token_only))
    return model


def _register_output_capture(base: nn.Module) -> None:
    """Hugging Face registers which outputs (hidden states, attentions) a model class can record when the model is
    built, keyed by its class; register the swapped class too, so the fallback forward can still return them."""
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # another transformers version: nothing to register
        return
    _CAN_RECORD_REGISTRY[base] = getattr(base, "_can_record_outputs", None)


def repad_model_(model: nn.Module) -> nn.Module:
    """Undo :func:`unpad_model_` (the Hugging Face forward again), in place; a no-op on an ordinary model."""
    if is_unpadded(model):
        base = _base(model)
        base.__class__ = _hf_class(type(base))
        base.__dict__.pop("_unpadded_layout", None)
        base.__dict__.pop("_unpadded_first_token_only", None)
    return model


def is_unpadded(model: nn.Module) -> bool:
    """Whether ``model``'s encoder runs unpadded."""
    base = getattr(model, "base_model", None)
    return base is not None and type(base) in set(_classes().values())


def __getattr__(name: str):
    """``UnpaddedBertModel`` etc. are built on first use (transformers is imported lazily); pickle finds them here."""
    if name.startswith("Unpadded"):
        _classes()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODEL_TYPES", "LAYOUTS", "DEFAULT_LAYOUT", "Packing", "pack", "varlen_attention", "unpad_model_",
           "repad_model_", "is_unpadded", "unsupported_reason", "unpadded_forward"]

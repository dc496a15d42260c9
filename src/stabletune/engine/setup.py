"""Set-up of a run from its config: data, the paper's split, tokenised sets, the prepared model of every member,
the LR schedule, precision and the evaluation plan (Zhang et al., ICLR 2021, Section 3's recipe).

A run has K >= 1 members that share everything but their seeds (K = 1: an ordinary run; K > 1: a vectorised
ensemble). Data is read, split and tokenised once; each member gets its own model, drawn from its init seed and
prepared with the techniques in their one fixed order (:func:`stabletune.techniques.prepare`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from stabletune.config import RunConfig, option_errors, option_name
from stabletune.data.batching import Encoded, encode, steps_per_epoch
from stabletune.engine.runlog import RunFolder
from stabletune.errors import ConfigError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# Small pieces
# ------------------------------------------------------------------------------------------------
def derive_seed(seed: int, purpose: str) -> int:
    """Independent 63-bit seeds for the different random streams of one seed value."""
    h = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up from 0 over `warmup` updates, then linear decay to 0 at `total`
    (Hugging Face's get_linear_schedule_with_warmup, which the official code uses)."""
    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def eval_steps(total: int, num_evals: int) -> list[int]:
    """`num_evals` evaluation points spread evenly over training, and always one at the final step."""
    return sorted({math.ceil(total * i / num_evals) for i in range(1, num_evals + 1)} | {total})


def encode_splits(tokenizer, splits, *, max_length: int, is_regression: bool) -> dict[str, Encoded]:
    """Tokenise train / validation / test once (a split without examples, a run without a test file, stays empty)."""
    def one(rows) -> Encoded:
        if not rows:
            return Encoded([], None, np.empty(0, dtype=np.float32 if is_regression else np.int64), 0)
        return encode(tokenizer, rows, max_length=max_length, is_regression=is_regression)
    return {name: one(rows)
            for name, rows in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))}


def check_inputs(cfg: RunConfig) -> None:
    """What can be checked before anything is loaded: the input files and folders exist; ``max_seq_length`` is
    within the model's positions, and long enough to hold the tokenizer's special tokens plus at least one token
    of each text (a shorter length cannot be truncated to: the tokenizer would pass the sequences through whole).

    Raises:
        ConfigError: naming the option (``--train-file``, ``--max-seq-length``, ...).
    """
    from stabletune.data.readers import sentence_pairs
    from stabletune.model import input_limits

    for name in ("train_file", "dev_file", "test_file", "init_from", "data_dir"):
        path = getattr(cfg, name)
        if path is not None and not Path(path).exists():
            raise ConfigError(f"invalid option {option_name(name)}: {path} not found")

    limits = input_limits(cfg.model, init_from=cfg.init_from)
    n = cfg.max_seq_length
    if limits.max_length is not None and n > limits.max_length:
        raise ConfigError(f"invalid option --max-seq-length: {n} is more than the {limits.max_length} positions "
                          f"of model {cfg.init_from or cfg.model}")
    pairs = sentence_pairs(task=cfg.task, train_file=cfg.train_file, text_columns=cfg.text_columns)
    special = limits.special_tokens[pairs]
    need = special + (2 if pairs else 1)
    if n < need:
        raise ConfigError(f"invalid option --max-seq-length: {n} leaves no room for text: the tokenizer adds "
                          f"{special} special tokens to each {'sentence pair' if pairs else 'text'}; "
                          f"give at least {need}")


def load_run_data(cfg: RunConfig):
    """``(spec, splits)`` of a run: the task scored by ``cfg.metric``, its examples read and split (split seed
    only). Errors of the readers and splits are worded as the options that set the values."""
    from stabletune.data import load_task_data, make_splits, read_user_examples
    from stabletune.tasks import with_metric

    with option_errors(seed="split_seed", test="test_file"):
        spec, train_rows, dev_rows = load_task_data(
            task=cfg.task, data_dir=cfg.data_dir, train_file=cfg.train_file, dev_file=cfg.dev_file,
            text_columns=cfg.text_columns, label_column=cfg.label_column, task_type=cfg.task_type)
        try:
            spec = with_metric(spec, cfg.metric)
        except ValueError as e:
            raise ConfigError(f"invalid option --metric: {e}") from None
        test_rows = (read_user_examples(cfg.test_file, spec, text_columns=cfg.text_columns,
                                        label_column=cfg.label_column) if cfg.test_file else None)
        splits = make_splits(spec, train_rows, dev_rows, split=cfg.split, seed=cfg.split_seed,
                             train_size=cfg.train_size, test=test_rows)
    return spec, splits


def update_counts(cfg: RunConfig, n_train: int) -> tuple[int, int, int]:
    """(updates per epoch, total updates, warm-up updates): --max-steps wins over --epochs, --warmup-steps over
    --warmup-ratio."""
    per_epoch = steps_per_epoch(n_train, cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps is not None else max(1, math.ceil(cfg.epochs * per_epoch))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * total)
    if warmup > total:
        raise ConfigError(f"invalid option --warmup-steps: {warmup} is more than the {total} training steps")
    return per_epoch, total, warmup


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"invalid option --device: {device!r}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("invalid option --device: cuda requested but no CUDA device is available")
    return d


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 on CPU by default (bf16 autocast was measured 25-30x slower on our AVX2 CPUs); bf16 on a capable GPU."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("invalid option --precision: fp16 (with a grad scaler) needs a CUDA device; use fp32 or bf16")
    if precision == "bf16" and device.type == "cpu":
        log.warning("bf16 autocast on CPU is much slower than fp32 on CPUs without bf16 units")
    return precision


def pad_length(cfg: RunConfig) -> int | None:
    """The fixed batch width of ``--padding max_length`` (None: dynamic padding)."""
    return cfg.max_seq_length if cfg.padding == "max_length" else None


# ------------------------------------------------------------------------------------------------
# The set-up
# ------------------------------------------------------------------------------------------------
@dataclass
class Member:
    """One member's own pieces: its config and seeds, its loaded and prepared model, its run folder."""

    cfg: RunConfig
    loaded: Any
    """:class:`stabletune.model.LoadedModel` (tokenizer, model source, names of the new head's parameters)."""
    prepared: Any
    """:class:`stabletune.techniques.Prepared` (model, optimizer, after-step hook, blocks, record)."""
    folder: RunFolder | None
    reference: dict | None
    """Block weights at the start of fine-tuning, for ``--track-param-distance`` (Figure 7)."""

    @property
    def model(self) -> torch.nn.Module:
        return self.prepared.model

    @property
    def seeds(self) -> dict:
        c = self.cfg
        return {"seed": c.seed, "init_seed": c.resolved_init_seed, "data_seed": c.resolved_data_seed,
                "split_seed": c.split_seed}


@dataclass
class Run:
    """Everything shared by a run's members, ready for the step loop."""

    cfg: RunConfig
    """The recipe (member 0's config; members differ only in seeds and output)."""
    members: list[Member]
    device: torch.device
    precision: str
    spec: Any
    """The task's :class:`stabletune.tasks.TaskSpec`."""
    splits: Any
    """:class:`stabletune.data.Splits` (its ``indices`` go to each run folder)."""
    enc: dict[str, Encoded]
    tokenizer: Any
    pad_id: int
    per_epoch: int
    total: int
    warmup: int
    schedule: Callable[[int], float]
    """LR multiplier per update (:func:`linear_schedule`), for a LambdaLR on the step function's optimizer."""
    evals_at: set[int]
    autocast: Callable[[], Any]
    pad_to: int | None
    t_start: float

    def eval_kwargs(self) -> dict:
        """Keyword arguments of :func:`stabletune.engine.loop.evaluate` for this run."""
        return dict(batch_size=self.cfg.eval_batch_size, device=self.device, pad_id=self.pad_id,
                    autocast=self.autocast, pad_to=self.pad_to)

    @property
    def folders(self) -> list[RunFolder | None]:
        return [m.folder for m in self.members]


def setup(cfgs: list[RunConfig], out_dirs: list[str | None], device: torch.device) -> Run:
    """Build a run of ``len(cfgs)`` members (who share everything but seeds and output) from their configs.

    Checks the output folders first (before any data or model is loaded), then reads and splits the data (split
    seed only), loads and prepares each member's model (its init seed), tokenises once, and plans the schedule
    and evaluations.
    """
    from stabletune.model import load_model, run_encoder
    from stabletune.techniques import prepare
    from stabletune.techniques.param_distance import snapshot_blocks

    t_start = time.perf_counter()
    cfg = cfgs[0]
    folders = [RunFolder(d, overwrite=c.overwrite) if d else None for c, d in zip(cfgs, out_dirs)]  # fail early
    if any(c.report_to == "tensorboard" and c.logging_dir is None and f is None for c, f in zip(cfgs, folders)):
        raise ConfigError("invalid option --report-to: tensorboard needs --logging-dir or a run folder (--out)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    precision = resolve_precision(cfg.precision, device)

    # --- data: read, split (split seed only) -------------------------------------------------------
    spec, splits = load_run_data(cfg)

    # --- members: weights + head drawn from each init seed; techniques in their one fixed order --------
    members = []
    for c, folder in zip(cfgs, folders):
        init_gen = torch.Generator().manual_seed(c.resolved_init_seed)
        loaded = load_model(c.model, num_labels=spec.num_labels, dropout=c.dropout,
                            attn_implementation=c.attn_implementation, init_generator=init_gen,
                            init_from=c.init_from, labels=spec.labels, encoder=run_encoder(c))
        with option_errors(betas=("adam_beta1", "adam_beta2"), eps="adam_eps"):
            prepared = prepare(
                loaded.model, init_generator=init_gen, reinit_layers=c.reinit_layers,
                reinit_pooler=c.reinit_pooler, mixout=c.mixout, mixout_targets=c.mixout_targets,
                mixout_granularity=c.mixout_granularity, optimizer=c.optimizer, lr=c.lr,
                betas=(c.adam_beta1, c.adam_beta2), eps=c.adam_eps, weight_decay=c.weight_decay, llrd=c.llrd,
                pretrained_wd=c.pretrained_wd, pretrained_wd_new_params=c.pretrained_wd_new_params,
                new_param_names=loaded.new_param_names)
        prepared.model.to(device)
        reference = snapshot_blocks(prepared.blocks) if c.track_param_distance else None
        members.append(Member(cfg=c, loaded=loaded, prepared=prepared, folder=folder, reference=reference))

    # --- tokenise once; schedule, precision and evaluation plan -------------------------------------
    tokenizer = members[0].loaded.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = encode_splits(tokenizer, splits, max_length=cfg.max_seq_length, is_regression=spec.is_regression)
    per_epoch, total, warmup = update_counts(cfg, len(enc["train"]))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    return Run(cfg=cfg, members=members, device=device, precision=precision, spec=spec, splits=splits, enc=enc,
               tokenizer=tokenizer, pad_id=pad_id, per_epoch=per_epoch, total=total, warmup=warmup,
               schedule=linear_schedule(warmup, total), evals_at=set(eval_steps(total, cfg.num_evals)),
               autocast=autocast, pad_to=pad_length(cfg), t_start=t_start)

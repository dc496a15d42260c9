"""The paper's train/validation/test splits (Zhang et al., 2021, Section 3 and Table 3).

:func:`make_splits` builds the held-out splits from a seed alone (``numpy.random.default_rng(seed)``; no global
random state is read or changed):

- ``"paper-small"`` (RTE, MRPC, STS-B, CoLA, user datasets): the full training set is trained on; the original
  dev set is halved, stratified by label, into validation and test.
- ``"paper-1k"`` (all tasks, as the paper's Section 3): 1,000 training examples drawn from the training set,
  class-balanced. RTE, MRPC, STS-B, CoLA (and user datasets): the original dev set is halved into validation
  and test, as in ``paper-small``. SST-2, QNLI, QQP, MNLI: 1,000 more training examples are the validation set
  and the original dev set is the test set.
- ``"dev-as-test"``: the full dev set is the test set; 10 % of the training set (stratified) is held out as
  validation, so model selection never sees test data.
- ``"files"`` (user datasets as given, ``stabletune fit``): the dev file is the validation set (without one,
  10 % of the training file, stratified, as in ``dev-as-test``); the test file, if any, is the test set.

Each split has a version (:data:`SPLIT_VERSIONS`): it goes up whenever the same split name and seed would draw
other examples. A study's run ids include it (``stabletune.study.spec.run_id_for``), so results drawn with an
earlier definition are never reused as results of the current one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from stabletune.config import SPLITS
from stabletune.errors import DataError, InvalidValue
from stabletune.data.readers import Example, glue_dev_file
from stabletune.tasks import LARGE_TASKS, SMALL_TASKS, TaskSpec

logger = logging.getLogger(__name__)

PAPER_1K = 1000
"""Training and validation examples of the ``paper-1k`` split (Section 3, following Phang et al., 2018)."""
DEV_AS_TEST_VALIDATION = 0.1
MIN_HOLD_OUT = 5
"""The fewest validation examples a hold-out may give: below it, "the best checkpoint" is picked on a coin toss
(with 1-4 examples, one example moves accuracy by 20-100 points), so the split is refused and the number of
training examples it would need is named."""
"""Fraction of the training set held out as validation by the ``dev-as-test`` split."""
REGRESSION_BINS = 5
"""Equal-width score bins that stratify regression labels (STS-B: [0,1), [1,2), ..., [4,5])."""

SPLIT_VERSIONS: dict[str, int] = {"paper-small": 1, "paper-1k": 2, "dev-as-test": 1, "files": 1, "no-test": 1}
"""The current definition of each split. History:

- ``paper-1k`` v1 (until 2026-12-01): 1k training + 1k validation examples from the training set and the whole
  dev set as test, for every task. v2: the paper's per-task rule (Section 3, Table 3): RTE/MRPC/STS-B/CoLA and
  user datasets take validation and test from the halved dev set.
"""


def split_version(split: str) -> int:
    """The current version of ``split`` (see :data:`SPLIT_VERSIONS`); ValueError for an unknown split."""
    try:
        return SPLIT_VERSIONS[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r} (choose {', '.join(SPLIT_VERSIONS)})") from None


@dataclass
class Splits:
    """Training, validation and test examples of one run, and where each came from.

    Attributes:
        task: The task.
        train: Training examples.
        validation: Examples for model selection (evaluated during training).
        test: Held-out examples, scored once at the end.
        indices: JSON-able record of the draw: for each of ``"train"``, ``"validation"`` and ``"test"``,
            ``{"source": "train" | "dev" | "test", "indices": [int, ...]}``, indices into the list that
            :func:`load_task_data` returned for that source (``"test"``: the ``test`` list of ``"files"``).
        name: The split's name (``"paper-small"``, ...).
        version: The split's definition (:data:`SPLIT_VERSIONS`).
    """

    task: TaskSpec
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    indices: dict[str, dict]
    name: str = ""
    version: int = 1

    def record(self) -> dict:
        """What a run stores about its split (``results.json`` -> ``data.split``): its name and version. (The
        majority-class baselines of the split's labels are stored beside it, ``data.majority_baseline``.)"""
        return {"name": self.name, "version": self.version}


# ------------------------------------------------------------------------------------------------
# Splits (Section 3, Table 3, Appendix A)
# ------------------------------------------------------------------------------------------------
def make_splits(spec: TaskSpec, train: list[Example], dev: list[Example], *, split: str, seed: int,
                train_size: int | None = None, test: list[Example] | None = None) -> Splits:
    """Draw the training, validation and test sets of one run (Zhang et al., 2021, Section 3 / Table 3).

    All randomness comes from ``numpy.random.default_rng(seed)``: the same seed gives the same indices on
    any machine, whatever the global random state. Classification strata are the labels; regression
    strata are :data:`REGRESSION_BINS` equal-width bins of the score range (STS-B: floor of the score,
    with 5.0 in the top bin).

    - ``"paper-small"`` — RTE, MRPC, STS-B, CoLA and user datasets: train on the full training set; the dev
      set is halved within each stratum into validation and test. Each stratum of odd size has one spare
      example; the spares go alternately to validation and test (validation first), so the two halves
      differ by at most one example per stratum and validation gets the larger half when the dev size is
      odd (RTE 277 -> 139/138). The paper's official code gives validation the *smaller* half of every class.
    - ``"paper-1k"`` (version 2) — every task trains on 1,000 examples drawn from the training set,
      class-balanced (equal per class as far as the class sizes allow; the remainder goes to the largest
      classes; regression: proportional to the score bins). Validation and test follow the paper per task
      (Section 3, Table 3): RTE, MRPC, STS-B, CoLA and user datasets halve the dev set into validation and
      test exactly as ``paper-small`` does (CoLA: 522/521); SST-2, QNLI, QQP and MNLI draw 1,000 validation
      examples from the rest of the training set, balanced the same way, and test on the full dev set.
      The official code draws ``1000 // classes`` per class (999 for MNLI) and, for regression, a uniform
      sample; we allocate exactly 1,000 and stratify regression scores, which keeps the draw balanced.
    - ``"dev-as-test"`` — test = the full dev set; 10 % of the training set, stratified, is held out as
      validation (using the test set for model selection would bias the test score); train = the rest.
    - ``"no-test"`` — validation as ``dev-as-test`` (10 % of the training set, stratified), no test set and no
      dev file needed: a model trained only to be fine-tuned further, like the intermediate MNLI model of
      Section 7.2 (the shared MNLI data has no dev set). The run says so and is scored on validation only.

    ``train_size`` then subsamples the training split to that many examples, class-balanced (regression:
    proportional to the bins), after the split is drawn, so validation and test do not depend on it.

    Args:
        spec: The task.
        train: Training examples as read (``indices`` refer to this list for source ``"train"``).
        dev: Dev examples as read (source ``"dev"``); may be empty if the split does not need it.
        split: ``"paper-small"``, ``"paper-1k"`` or ``"dev-as-test"``.
        seed: Seed of the draw (``RunConfig.split_seed``).
        train_size: Optional size of the training split.
        test: The test examples of ``"files"`` (a user's test file); None or empty: no test set.

    Returns:
        The :class:`Splits`, with ``indices`` recording every draw.

    Raises:
        InvalidValue: Unknown split, ``paper-small`` for SST-2/QNLI/QQP/MNLI, or a ``train_size`` larger than
            the training split.
        DataError: A needed dev set is missing, or a set is too small for the split.
    """
    if not train:
        raise DataError(f"task {spec.name}: the training set is empty")
    rng = np.random.default_rng(seed)
    if split == "paper-small":
        if spec.glue_dir is not None and spec.name in LARGE_TASKS:
            raise InvalidValue("split", f"'paper-small' halves the dev set of the small tasks "
                               f"({', '.join(SMALL_TASKS)}) and user datasets; the paper studies {spec.name} "
                               "only downsampled: use split 'paper-1k'")
        _require_dev(spec, dev, split, "for validation and test")
        if len(dev) < 2:
            raise DataError(f"task {spec.name}: split 'paper-small' halves the dev set, which has {len(dev)} example")
        strata, available = _strata(spec, dev)
        validation_idx, test_idx = _draw(strata, [_halve(available)], rng)
        parts = {"train": ("train", np.arange(len(train))), "validation": ("dev", validation_idx),
                 "test": ("dev", test_idx)}
    elif split == "paper-1k" and not _validation_from_train(spec):
        _require_dev(spec, dev, split, "halved into validation and test")
        if len(dev) < 2:
            raise DataError(f"task {spec.name}: split 'paper-1k' halves the dev set, which has {len(dev)} example")
        if len(train) < PAPER_1K:
            raise DataError(f"task {spec.name}: split 'paper-1k' draws {PAPER_1K:,} training examples from the "
                            f"training set, which has only {len(train):,}")
        strata, available = _strata(spec, dev)
        validation_idx, test_idx = _draw(strata, [_halve(available)], rng)  # the same halves as paper-small
        strata, available = _strata(spec, train)
        allocate = _allocate_proportional if spec.is_regression else _allocate_balanced
        (train_idx, _) = _draw(strata, [allocate(available, PAPER_1K)], rng)
        parts = {"train": ("train", train_idx), "validation": ("dev", validation_idx), "test": ("dev", test_idx)}
    elif split == "paper-1k":
        _require_dev(spec, dev, split, "as the test set")
        if len(train) < 2 * PAPER_1K:
            raise DataError(f"task {spec.name}: split 'paper-1k' draws {PAPER_1K:,} training + {PAPER_1K:,} "
                            f"validation examples from the training set, which has only {len(train):,}")
        strata, available = _strata(spec, train)
        allocate = _allocate_proportional if spec.is_regression else _allocate_balanced
        train_counts = allocate(available, PAPER_1K)
        validation_counts = allocate(available - train_counts, PAPER_1K)
        train_idx, validation_idx, _ = _draw(strata, [train_counts, validation_counts], rng)
        parts = {"train": ("train", train_idx), "validation": ("train", validation_idx),
                 "test": ("dev", np.arange(len(dev)))}
    elif split == "dev-as-test":
        _require_dev(spec, dev, split, "as the test set")
        validation_idx, train_idx = _hold_out(spec, train, rng, f"split '{split}'")
        parts = {"train": ("train", train_idx), "validation": ("train", validation_idx),
                 "test": ("dev", np.arange(len(dev)))}
    elif split == "no-test":
        validation_idx, train_idx = _hold_out(spec, train, rng, f"split '{split}'")
        parts = {"train": ("train", train_idx), "validation": ("train", validation_idx),
                 "test": ("dev", np.arange(0))}
        logger.warning("task %s: split 'no-test' has no test set: the run is scored on validation only "
                       "(a model to fine-tune further, e.g. an intermediate task, Section 7.2)", spec.name)
    elif split == "files":
        if spec.glue_dir is not None:
            raise InvalidValue("split", f"'files' takes your own files (train, dev and test files), not GLUE task "
                               f"{spec.name}")
        if dev:
            train_idx, validation_idx = np.arange(len(train)), np.arange(len(dev))
        else:  # no dev file: hold out a stratified part of the training file, as dev-as-test does
            validation_idx, train_idx = _hold_out(spec, train, rng, "split 'files' without a dev file")
        parts = {"train": ("train", train_idx), "validation": ("dev" if dev else "train", validation_idx),
                 "test": ("test", np.arange(len(test or [])))}
    else:
        raise InvalidValue("split", f"{split!r} (choose {', '.join(SPLITS)})")
    if test and split != "files":
        raise InvalidValue("test", f"split '{split}' takes its test set from the dev file; use split 'files'")

    if train_size is not None:
        source, train_idx = parts["train"]
        if not 0 < train_size <= len(train_idx):
            raise InvalidValue("train_size", f"{train_size} (split '{split}' has {len(train_idx)} training examples)")
        strata, available = _strata(spec, [train[i] for i in train_idx])
        allocate = _allocate_proportional if spec.is_regression else _allocate_balanced
        (kept, _) = _draw(strata, [allocate(available, train_size)], rng)
        parts["train"] = (source, train_idx[kept])

    sources = {"train": train, "dev": dev, "test": test or []}
    chosen = {name: [sources[source][i] for i in idx] for name, (source, idx) in parts.items()}
    indices = {name: {"source": source, "indices": [int(i) for i in idx]} for name, (source, idx) in parts.items()}
    return Splits(spec, chosen["train"], chosen["validation"], chosen["test"], indices, split, SPLIT_VERSIONS[split])


def _validation_from_train(spec: TaskSpec) -> bool:
    """Whether ``paper-1k`` draws validation from the training set: only for SST-2, QNLI, QQP and MNLI, whose
    dev set is the paper's test set (Section 3); the small tasks and user datasets halve their dev set."""
    return spec.glue_dir is not None and spec.name in LARGE_TASKS


def _hold_out(spec: TaskSpec, train: list[Example], rng: np.random.Generator, what: str
              ) -> tuple[np.ndarray, np.ndarray]:
    """(validation, rest): :data:`DEV_AS_TEST_VALIDATION` of ``train``, stratified."""
    n_validation = max(1, round(DEV_AS_TEST_VALIDATION * len(train)))
    if n_validation < MIN_HOLD_OUT:
        need = next(n for n in range(len(train) + 1, 10 ** 6) if round(DEV_AS_TEST_VALIDATION * n) >= MIN_HOLD_OUT)
        raise DataError(f"task {spec.name}: {what} holds out {DEV_AS_TEST_VALIDATION:.0%} of the training set for "
                        f"validation, which needs at least {need} examples ({MIN_HOLD_OUT} for validation); it has "
                        f"{len(train)}: give more examples or a dev file")
    strata, available = _strata(spec, train)
    return tuple(_draw(strata, [_allocate_proportional(available, n_validation)], rng))


def _require_dev(spec: TaskSpec, dev: list[Example], split: str, role: str) -> None:
    if dev:
        return
    if spec.glue_dir is not None:
        what = f"{spec.glue_dir}/{glue_dev_file(spec)} not found (or empty)"
    else:
        what = f"task {spec.name} has no dev examples (no --dev-file?)"
    raise DataError(f"{what}: split '{split}' needs it {role}")


def _strata(spec: TaskSpec, examples: list[Example]) -> tuple[np.ndarray, np.ndarray]:
    """Stratum of each example (label, or regression score bin) and the size of every stratum 0..k-1."""
    if spec.is_regression:
        scores = np.array([ex.label for ex in examples], dtype=np.float64)
        low, high = scores.min(), scores.max()
        width = (high - low) / REGRESSION_BINS
        bins = np.zeros(len(scores), dtype=np.int64) if width == 0 else \
            np.minimum(((scores - low) / width).astype(np.int64), REGRESSION_BINS - 1)
        strata, k = bins, REGRESSION_BINS
    else:
        strata, k = np.array([ex.label for ex in examples], dtype=np.int64), spec.num_labels
    return strata, np.bincount(strata, minlength=k)


def _allocate_balanced(available: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over strata as equally as their sizes allow (water-filling).

    Strata are filled from the smallest; one too small to get an equal share gives all it has and the
    others share the rest. The remainder of an uneven division goes to the largest strata.
    """
    counts = np.zeros_like(available)
    remaining = n
    order = np.argsort(available, kind="stable")
    for j, s in enumerate(order):
        counts[s] = min(available[s], remaining // (len(order) - j))
        remaining -= counts[s]
    return counts


def _allocate_proportional(available: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over strata in proportion to their sizes (largest-remainder rounding)."""
    quota = available * (n / available.sum())
    counts = np.floor(quota).astype(np.int64)
    extra = n - counts.sum()
    order = np.argsort(-(quota - counts), kind="stable")
    counts[order[:extra]] += 1
    return np.minimum(counts, available)


def _halve(available: np.ndarray) -> np.ndarray:
    """First-half sizes of each stratum: half of it, with the spare example of odd strata alternating."""
    first = available // 2
    odd = np.flatnonzero(available % 2)
    first[odd[::2]] += 1
    return first


def _draw(strata: np.ndarray, counts: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle every stratum once and cut it into consecutive parts of the given sizes.

    Returns one sorted index array per entry of ``counts``, plus one with every index left over.
    Parts are disjoint by construction.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(len(counts) + 1)]
    for s in range(len(counts[0])):
        members = rng.permutation(np.flatnonzero(strata == s))
        start = 0
        for part, sizes in zip(parts, counts):
            part.append(members[start:start + sizes[s]])
            start += sizes[s]
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(part)) if part else np.array([], dtype=np.int64) for part in parts]

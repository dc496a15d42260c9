"""The paper's splits (Section 3, Table 3) on the real GLUE data, and their edge cases on small lists."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from stabletune.config import DATA_DIR_ENV
from stabletune.data import Example, load_task_data, make_splits
from stabletune.errors import DataError, InvalidValue
from stabletune.metrics import majority_baseline
from stabletune.tasks import TaskSpec, get_task

SHARED_GLUE = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "glue").resolve()
SMALL = ("rte", "mrpc", "sts-b", "cola")


@pytest.fixture(scope="module")
def glue():
    """Every task that has a training file, read once: name -> (spec, train, dev)."""
    env = os.environ.get(DATA_DIR_ENV)
    root = Path(env).resolve() if env else SHARED_GLUE
    if not (root / "RTE" / "train.tsv").is_file():
        pytest.skip(f"real GLUE data not found at {root} (set {DATA_DIR_ENV})")
    out = {}
    for task in (*SMALL, "sst-2", "qnli", "qqp", "mnli"):
        spec, train, dev = load_task_data(task=task, data_dir=str(root))
        out[task] = (spec, train, dev)
    return out


def _strata(spec: TaskSpec, examples: list[Example]) -> Counter:
    """Label counts, or counts of the integer part of the score (STS-B bins) for regression."""
    if spec.is_regression:
        return Counter(min(int(ex.label), 4) for ex in examples)
    return Counter(ex.label for ex in examples)


def _idx(splits, name) -> list[int]:
    return splits.indices[name]["indices"]


def _check_consistent(splits, train, dev):
    """indices are JSON-able and point at exactly the examples returned; same-source splits are disjoint."""
    assert json.loads(json.dumps(splits.indices)) == splits.indices
    sources = {"train": train, "dev": dev}
    for name in ("train", "validation", "test"):
        record = splits.indices[name]
        assert getattr(splits, name) == [sources[record["source"]][i] for i in record["indices"]]
        assert len(set(record["indices"])) == len(record["indices"])
    names = list(splits.indices)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if splits.indices[a]["source"] == splits.indices[b]["source"]:
                assert not set(_idx(splits, a)) & set(_idx(splits, b)), (a, b)


# ------------------------------------------------------------------------------------------------
# paper-small: dev halved into validation / test
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task, n_val, n_test", [("rte", 139, 138), ("mrpc", 204, 204), ("sts-b", 750, 750),
                                                 ("cola", 522, 521)])
def test_paper_small_sizes_and_stratification(glue, task, n_val, n_test):
    spec, train, dev = glue[task]
    splits = make_splits(spec, train, dev, split="paper-small", seed=0)
    assert (len(splits.validation), len(splits.test)) == (n_val, n_test)
    assert splits.train == train and _idx(splits, "train") == list(range(len(train)))
    assert sorted(_idx(splits, "validation") + _idx(splits, "test")) == list(range(len(dev)))
    val, test = _strata(spec, splits.validation), _strata(spec, splits.test)
    for stratum in set(val) | set(test):
        assert abs(val[stratum] - test[stratum]) <= 1, (stratum, val, test)
    _check_consistent(splits, train, dev)


def test_paper_small_refused_for_large_tasks(glue):
    spec, train, dev = glue["sst-2"]
    with pytest.raises(InvalidValue, match="^invalid split: .*'paper-1k'"):
        make_splits(spec, train, dev, split="paper-small", seed=0)


def test_majority_baselines_close_to_table3(glue):
    """Table 3's majority baselines come out within half a point on our halves (different draw, same sizes)."""
    for task, val_ref, test_ref in [("rte", 0.529, 0.525), ("mrpc", 0.813, 0.812)]:
        spec, train, dev = glue[task]
        splits = make_splits(spec, train, dev, split="paper-small", seed=0)
        assert majority_baseline(spec, [ex.label for ex in splits.validation]) == pytest.approx(val_ref, abs=0.005)
        assert majority_baseline(spec, [ex.label for ex in splits.test]) == pytest.approx(test_ref, abs=0.005)
    spec, train, dev = glue["qnli"]
    assert majority_baseline(spec, [ex.label for ex in dev]) == pytest.approx(0.505, abs=0.0005)  # paper-1k test


# ------------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["paper-small", "paper-1k", "dev-as-test"])
def test_determinism(glue, split):
    spec, train, dev = glue["rte"]
    first = make_splits(spec, train, dev, split=split, seed=3)
    random.seed(99)
    np.random.seed(99)  # the global random state must not matter
    np.random.random(10)
    again = make_splits(spec, train, dev, split=split, seed=3)
    other = make_splits(spec, train, dev, split=split, seed=4)
    assert again.indices == first.indices
    assert other.indices != first.indices


# ------------------------------------------------------------------------------------------------
# paper-1k (Section 3, Table 3): 1k train for every task; validation/test per task
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task, n_val, n_test", [("rte", 139, 138), ("mrpc", 204, 204), ("sts-b", 750, 750),
                                                 ("cola", 522, 521)])
def test_paper_1k_small_tasks_halve_dev(glue, task, n_val, n_test):
    """RTE/MRPC/STS-B/CoLA: 1,000 training examples, validation and test = the dev set halved (CoLA 522/521, Table 3:
    521/521), the very halves paper-small draws with the same seed."""
    spec, train, dev = glue[task]
    splits = make_splits(spec, train, dev, split="paper-1k", seed=2)
    small = make_splits(spec, train, dev, split="paper-small", seed=2)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1000, n_val, n_test)
    assert splits.indices["validation"] == small.indices["validation"]
    assert splits.indices["test"] == small.indices["test"]
    assert splits.indices["train"]["source"] == "train" and splits.indices["validation"]["source"] == "dev"
    if not spec.is_regression:
        assert _strata(spec, splits.train) == {0: 500, 1: 500}
    _check_consistent(splits, train, dev)
    assert (splits.name, splits.version) == ("paper-1k", 2)


@pytest.mark.parametrize("task", ["sst-2", "qnli"])
def test_paper_1k_large_tasks_validate_on_train(glue, task):
    """SST-2/QNLI/QQP/MNLI: 1k validation drawn from train (balanced, disjoint from the 1k training set), test = dev."""
    spec, train, dev = glue[task]
    splits = make_splits(spec, train, dev, split="paper-1k", seed=1)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1000, 1000, len(dev))
    assert splits.indices["validation"]["source"] == "train" and splits.test == dev
    assert _strata(spec, splits.train) == _strata(spec, splits.validation) == {0: 500, 1: 500}
    _check_consistent(splits, train, dev)


def test_split_record_and_majority_baselines(glue):
    """A run records its split's name and version; the majority baseline of its own test labels differs from
    Table 3's on our halves (RTE paper-small test: 73/138, Table 3: 73/139)."""
    spec, train, dev = glue["rte"]
    splits = make_splits(spec, train, dev, split="paper-small", seed=0)
    assert splits.record() == {"name": "paper-small", "version": 1}
    assert majority_baseline(spec, [ex.label for ex in splits.test]) == pytest.approx(73 / 138)
    spec, train, dev = glue["cola"]
    assert make_splits(spec, train, dev, split="paper-1k", seed=0).record() == {"name": "paper-1k", "version": 2}


def test_paper_1k_three_classes_and_regression(glue):
    spec, train, _ = glue["mnli"]
    dev = train[:5]  # MNLI dev_matched is not in the shared data; any list serves as the test set here
    splits = make_splits(spec, train, dev, split="paper-1k", seed=0)
    for part in (splits.train, splits.validation):
        counts = _strata(spec, part)
        assert sum(counts.values()) == 1000 and sorted(counts.values()) == [333, 333, 334]
    _check_consistent(splits, train, dev)
    spec, train, dev = glue["sts-b"]
    splits = make_splits(spec, train, dev, split="paper-1k", seed=0)
    assert (len(splits.train), len(splits.validation)) == (1000, 750)
    full, drawn = _strata(spec, train), _strata(spec, splits.train)
    for stratum, n in full.items():  # regression: proportional to the score bins
        assert abs(drawn[stratum] - 1000 * n / len(train)) <= 1
    _check_consistent(splits, train, dev)


def test_paper_1k_needs_dev_and_enough_train(glue):
    spec, train, dev = glue["qqp"]
    assert dev == []
    with pytest.raises(DataError, match=r"QQP/dev\.tsv not found.*'paper-1k' needs it as the test set"):
        make_splits(spec, train, dev, split="paper-1k", seed=0)
    spec, train, dev = glue["mnli"]
    with pytest.raises(DataError, match=r"MNLI/dev_matched\.tsv not found"):
        make_splits(spec, train, dev, split="dev-as-test", seed=0)
    spec, train, dev = glue["sst-2"]
    with pytest.raises(DataError, match=r"1,000 training \+ 1,000 validation.*only 1,999"):
        make_splits(spec, train[:1999], dev, split="paper-1k", seed=0)
    spec, train, dev = glue["rte"]
    with pytest.raises(DataError, match=r"draws 1,000 training examples.*only 999"):
        make_splits(spec, train[:999], dev, split="paper-1k", seed=0)
    with pytest.raises(DataError, match=r"RTE/dev\.tsv not found.*'paper-1k' needs it halved into validation and test"):
        make_splits(spec, train, [], split="paper-1k", seed=0)


def test_balance_with_a_scarce_class():
    spec = TaskSpec("mnli", ("a", "b", "c"), "acc", glue_dir="MNLI")  # a large task: validation from train
    train = [Example(f"x{i}", None, label) for i, label in enumerate([0] * 100 + [1] * 1500 + [2] * 1500)]
    splits = make_splits(spec, train, train[:3], split="paper-1k", seed=0)
    assert _strata(spec, splits.train) == {0: 100, 1: 450, 2: 450}  # class 0 gives all it has
    assert _strata(spec, splits.validation) == {1: 500, 2: 500}  # nothing of class 0 is left
    _check_consistent(splits, train, train[:3])
    user = TaskSpec("toy", ("a", "b", "c"), "acc")  # a user dataset halves its dev set, as the small tasks
    splits = make_splits(user, train, train[:100], split="paper-1k", seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1000, 50, 50)
    assert _strata(user, splits.train) == {0: 100, 1: 450, 2: 450}


# ------------------------------------------------------------------------------------------------
# dev-as-test and train_size
# ------------------------------------------------------------------------------------------------
def test_dev_as_test(glue):
    spec, train, dev = glue["cola"]
    splits = make_splits(spec, train, dev, split="dev-as-test", seed=0)
    assert len(splits.validation) == round(0.1 * len(train)) and splits.test == dev
    assert sorted(_idx(splits, "train") + _idx(splits, "validation")) == list(range(len(train)))
    full, val = _strata(spec, train), _strata(spec, splits.validation)
    for label, n in full.items():
        assert abs(val[label] - len(splits.validation) * n / len(train)) <= 1
    _check_consistent(splits, train, dev)


def test_no_test_needs_no_dev_set_and_holds_out_validation(glue, caplog):
    """Section 7.2's intermediate model (MNLI here has no dev set): validation from train, no test, said so."""
    spec, train, dev = glue["cola"]
    with caplog.at_level("WARNING"):
        splits = make_splits(spec, train, [], split="no-test", seed=0)
    assert "no test set" in caplog.text
    assert splits.test == [] and len(splits.validation) == round(0.1 * len(train))
    assert sorted(_idx(splits, "train") + _idx(splits, "validation")) == list(range(len(train)))
    assert make_splits(spec, train, dev, split="no-test", seed=0).indices == splits.indices  # dev is not read


@pytest.mark.parametrize("split", ["paper-small", "paper-1k", "dev-as-test"])
def test_train_size(glue, split):
    spec, train, dev = glue["mrpc"]
    full = make_splits(spec, train, dev, split=split, seed=5)
    small = make_splits(spec, train, dev, split=split, seed=5, train_size=64)
    assert len(small.train) == 64
    assert _strata(spec, small.train) == {0: 32, 1: 32}
    assert set(_idx(small, "train")) <= set(_idx(full, "train"))
    assert small.indices["validation"] == full.indices["validation"]  # the split does not depend on train_size
    assert small.indices["test"] == full.indices["test"]
    assert make_splits(spec, train, dev, split=split, seed=5, train_size=64).indices == small.indices
    _check_consistent(small, train, dev)
    with pytest.raises(InvalidValue, match="^invalid train_size"):
        make_splits(spec, train, dev, split=split, seed=5, train_size=len(full.train) + 1)


def test_train_size_regression_is_stratified(glue):
    spec, train, dev = glue["sts-b"]
    splits = make_splits(spec, train, dev, split="paper-small", seed=0, train_size=200)
    full, drawn = _strata(spec, train), _strata(spec, splits.train)
    assert len(splits.train) == 200
    for stratum, n in full.items():
        assert abs(drawn[stratum] - 200 * n / len(train)) <= 1


# ------------------------------------------------------------------------------------------------
# Small edge cases
# ------------------------------------------------------------------------------------------------
def test_user_dataset_and_errors():
    spec = TaskSpec("reviews", ("neg", "pos"), "acc")
    train = [Example(f"t{i}", None, i % 2) for i in range(20)]
    dev = [Example(f"d{i}", None, int(i < 3)) for i in range(7)]
    splits = make_splits(spec, train, dev, split="paper-small", seed=0)
    assert (len(splits.validation), len(splits.test)) == (4, 3)
    _check_consistent(splits, train, dev)
    with pytest.raises(DataError, match="no dev examples.*'paper-small'"):
        make_splits(spec, train, [], split="paper-small", seed=0)
    with pytest.raises(DataError, match="halves the dev set, which has 1 example"):
        make_splits(spec, train, dev[:1], split="paper-small", seed=0)
    with pytest.raises(DataError, match="training set is empty"):
        make_splits(spec, [], dev, split="paper-small", seed=0)
    with pytest.raises(InvalidValue, match="^invalid split: 'random'"):
        make_splits(spec, train, dev, split="random", seed=0)
    with pytest.raises(InvalidValue, match="^invalid train_size"):
        make_splits(spec, train, dev, split="paper-small", seed=0, train_size=0)


def test_constant_regression_scores():
    spec = get_task("sts-b")
    dev = [Example("a", "b", 2.0) for _ in range(5)]
    splits = make_splits(spec, dev, dev, split="paper-small", seed=0)
    assert (len(splits.validation), len(splits.test)) == (3, 2)


# ------------------------------------------------------------------------------------------------
# "files": the user's files as given (stabletune fit)
# ------------------------------------------------------------------------------------------------
def test_files_split_uses_dev_as_validation_and_the_test_file_as_test():
    spec = TaskSpec("mine", ("no", "yes"), "acc")
    train = [Example(f"t{i}", None, i % 2) for i in range(40)]
    dev = [Example(f"d{i}", None, i % 2) for i in range(10)]
    test = [Example(f"x{i}", None, i % 2) for i in range(6)]
    s = make_splits(spec, train, dev, split="files", seed=0, test=test)
    assert (s.train, s.validation, s.test) == (train, dev, test)
    assert s.indices["test"] == {"source": "test", "indices": list(range(6))}
    no_test = make_splits(spec, train, dev, split="files", seed=0)
    assert no_test.test == [] and no_test.validation == dev


def test_files_split_without_dev_holds_out_a_stratified_tenth():
    spec = TaskSpec("mine", ("no", "yes"), "acc")
    train = [Example(f"t{i}", None, int(i < 30)) for i in range(100)]  # 30 % "yes"
    s = make_splits(spec, train, [], split="files", seed=3)
    assert len(s.validation) == 10 and len(s.train) == 90
    assert Counter(e.label for e in s.validation) == {0: 7, 1: 3}
    assert not {e.text_a for e in s.validation} & {e.text_a for e in s.train}
    assert make_splits(spec, train, [], split="files", seed=3).indices == s.indices  # seed alone decides


def test_files_split_refuses_glue_and_test_files_elsewhere():
    with pytest.raises(InvalidValue, match="^invalid split: 'files' takes your own files"):
        make_splits(get_task("rte"), [Example("a", "b", 0)] * 4, [Example("a", "b", 0)] * 2, split="files", seed=0)
    spec = TaskSpec("mine", ("no", "yes"), "acc")
    rows = [Example(f"t{i}", None, i % 2) for i in range(10)]
    with pytest.raises(InvalidValue, match="^invalid test: split 'paper-small' takes its test set"):
        make_splits(spec, rows, rows, split="paper-small", seed=0, test=rows)

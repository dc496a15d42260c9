"""The GLUE task registry (paper Table 3; label orders of the transformers v4 GLUE processors)."""

from __future__ import annotations

import dataclasses

import pytest

from stabletune.errors import ConfigError
from stabletune.tasks import GLUE_TASKS, LARGE_TASKS, SMALL_TASKS, TaskSpec, get_task, is_glue_task

# transformers v4 `glue_processors[task]().get_labels()` (the module is gone from transformers 5).
PROCESSOR_LABELS = {
    "rte": ["entailment", "not_entailment"],
    "mrpc": ["0", "1"],
    "sts-b": [None],
    "cola": ["0", "1"],
    "sst-2": ["0", "1"],
    "qnli": ["entailment", "not_entailment"],
    "qqp": ["0", "1"],
    "mnli": ["contradiction", "entailment", "neutral"],
}
# Table 3, "Evaluation metric".
TABLE3_METRIC = {"rte": "acc", "mrpc": "f1", "sts-b": "spearman", "cola": "mcc",
                 "sst-2": "acc", "qnli": "acc", "qqp": "acc", "mnli": "acc"}


def test_registry_matches_table3_and_glue_processors():
    assert set(GLUE_TASKS) == set(TABLE3_METRIC)
    for name, spec in GLUE_TASKS.items():
        assert spec.name == name
        assert spec.metric == TABLE3_METRIC[name]
        expected = PROCESSOR_LABELS[name]
        assert (list(spec.labels) if spec.labels else [None]) == expected
        assert spec.glue_dir is not None
    assert set(SMALL_TASKS) | set(LARGE_TASKS) == set(GLUE_TASKS)
    assert not set(SMALL_TASKS) & set(LARGE_TASKS)


def test_regression_and_num_labels():
    assert get_task("sts-b").is_regression and get_task("sts-b").num_labels == 1
    assert not get_task("rte").is_regression and get_task("rte").num_labels == 2
    assert get_task("mnli").num_labels == 3


@pytest.mark.parametrize("spelling, name", [
    ("STS-B", "sts-b"), ("stsb", "sts-b"), ("sts_b", "sts-b"), ("SST2", "sst-2"), ("sst-2", "sst-2"),
    ("RTE", "rte"), ("CoLA", "cola"), ("Mnli", "mnli"), ("q_q_p", "qqp"), ("QNLI", "qnli"), ("mrpc", "mrpc"),
])
def test_get_task_spellings(spelling, name):
    assert get_task(spelling) is GLUE_TASKS[name]
    assert is_glue_task(spelling)


def test_unknown_task_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        get_task("wnli")
    message = str(info.value)
    assert "wnli" in message
    for name in GLUE_TASKS:
        assert name in message
    assert not is_glue_task("my-reviews")


def test_spec_is_frozen_and_validated():
    spec = get_task("rte")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.metric = "f1"  # type: ignore[misc]
    with pytest.raises(ValueError):
        TaskSpec("x", ("a", "b"), "auc")
    with pytest.raises(ValueError):
        TaskSpec("x", ("a",), "acc")
    user = TaskSpec("reviews", ("neg", "pos"), "acc")
    assert user.glue_dir is None and user.num_labels == 2


@pytest.mark.parametrize("spelling", ["RTE", "STS-B", "stsb", "sts_b", "sts", "SST2", "sst", "sst_2", "mnli-m",
                                      "MNLI_m", "mnli matched", "CoLA", "q_q_p"])
def test_analysis_and_training_read_task_names_alike(spelling):
    """One registry: the analysis and the training side accept the same spellings and agree on the task."""
    from stabletune.analysis.frames import canonical_task

    assert canonical_task(spelling) == get_task(spelling).name


def test_analysis_tables_come_from_the_registry():
    from stabletune.analysis.frames import MAIN_METRIC, display_task, task_order

    assert MAIN_METRIC == {name: spec.metric for name, spec in GLUE_TASKS.items()}
    assert [display_task(t) for t in task_order(["mnli", "mytask", "cola", "sts-b"])] == \
        ["STS-B", "CoLA", "MNLI", "mytask"]



# ------------------------------------------------------------------------------------------------
# --metric: which metric selects checkpoints and candidates
# ------------------------------------------------------------------------------------------------
def test_parse_metric_names_and_aliases():
    from stabletune.tasks import parse_metric

    assert parse_metric("acc") == ("acc", None) and parse_metric("Accuracy") == ("acc", None)
    assert parse_metric("f1") == ("f1", None) and parse_metric("f1:yes") == ("f1", "yes")
    assert parse_metric("macro-f1") == ("f1_macro", None) and parse_metric("spearman") == ("spearman", None)
    for bad in ("auc", "acc:yes", "f1:", ""):
        with pytest.raises(ValueError):
            parse_metric(bad)


def test_with_metric_checks_the_task():
    from stabletune.tasks import with_metric

    user = TaskSpec("mine", ("no", "yes"), "acc")
    three = TaskSpec("mine3", ("a", "b", "c"), "acc")
    reg = TaskSpec("scores", None, "spearman")
    assert with_metric(user, None) is user
    assert with_metric(user, "f1").positive_index == 1  # the second label: "yes"
    assert with_metric(user, "f1:no").positive_index == 0
    assert with_metric(three, "f1:b").positive_index == 1 and with_metric(three, "f1_macro").metric == "f1_macro"
    assert with_metric(reg, "pearson").metric == "pearson"
    assert get_task("mrpc").positive_index == 1 and get_task("rte").positive_index is None
    assert with_metric(get_task("rte"), "f1:entailment").positive_index == 0
    for spec, metric, match in ((three, "f1", "which class"), (user, "f1:maybe", "not a label"),
                                (user, "spearman", "has classes"), (reg, "acc", "regression task")):
        with pytest.raises(ValueError, match=match):
            with_metric(spec, metric)

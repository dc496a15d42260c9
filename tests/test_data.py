"""Readers: the real GLUE files (../shared/data/glue), the hub fallback, and user CSV/TSV/JSONL files."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import types
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from stabletune.config import DATA_DIR_ENV
from stabletune.data import Example, load_task_data, read_glue_tsv
from stabletune.errors import ConfigError, DataError, InvalidValue

SHARED_GLUE = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "glue").resolve()


def glue_root() -> Path:
    """$STABLETUNE_DATA_DIR, else ../shared/data/glue next to the project root."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).resolve() if env else SHARED_GLUE


@pytest.fixture(scope="module")
def glue_dir() -> Path:
    root = glue_root()
    if not (root / "RTE" / "train.tsv").is_file():
        pytest.skip(f"real GLUE data not found at {root} (set {DATA_DIR_ENV})")
    return root


@pytest.fixture(scope="module")
def sst2(glue_dir):
    """SST-2 (67k training rows) read once per module."""
    return load_task_data(task="sst-2", data_dir=str(glue_dir))


def _labels(spec, examples) -> Counter:
    return Counter(spec.labels[ex.label] for ex in examples)


# ------------------------------------------------------------------------------------------------
# Real GLUE files
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task, n_train, n_dev, labels", [
    ("rte", 2490, 277, {"entailment", "not_entailment"}),
    ("mrpc", 3668, 408, {"0", "1"}),
    ("sts-b", 5749, 1500, None),
    ("cola", 8551, 1043, {"0", "1"}),
])
def test_small_tasks_row_counts_and_labels(glue_dir, task, n_train, n_dev, labels):
    spec, train, dev = load_task_data(task=task, data_dir=str(glue_dir))
    assert (len(train), len(dev)) == (n_train, n_dev)
    if labels is None:
        scores = [ex.label for ex in train + dev]
        assert all(isinstance(s, float) for s in scores)
        assert min(scores) == 0.0 and max(scores) == 5.0
    else:
        assert set(_labels(spec, train)) == set(_labels(spec, dev)) == labels
    pair = task != "cola"
    assert all((ex.text_b is not None) == pair for ex in train + dev)
    assert all(ex.text_a for ex in train + dev)


def test_sst2(sst2):
    spec, train, dev = sst2
    assert (len(train), len(dev)) == (67349, 872)
    assert set(_labels(spec, train)) == {"0", "1"}
    assert train[0].text_a == "hide new secretions from the parental units "  # the trailing space is kept


@pytest.mark.parametrize("task, n_dev, labels", [  # label counts of the partial files: PROVENANCE.md
    ("qnli", 5463, {"entailment": 5027, "not_entailment": 4972}),
    ("qqp", 0, {"0": 6370, "1": 3629}),
    ("mnli", 0, {"contradiction": 3278, "entailment": 3408, "neutral": 3313}),
])
def test_large_tasks_fall_back_to_partial_train(glue_dir, caplog, task, n_dev, labels):
    with caplog.at_level(logging.WARNING, logger="stabletune.data"):
        spec, train, dev = load_task_data(task=task, data_dir=str(glue_dir))
    assert len(train) == 9999 and len(dev) == n_dev
    assert _labels(spec, train) == labels
    assert "PARTIAL" in caplog.text and "train_subset_9999.tsv" in caplog.text
    if n_dev == 0:
        assert "not found" in caplog.text


def test_matches_pandas_reference(glue_dir, sst2):
    """Our reader agrees with an independent pandas parse (quoting off, everything as text)."""
    cases = {"rte": ("sentence1", "sentence2", "label"), "qnli": ("question", "sentence", "label"),
             "sts-b": ("sentence1", "sentence2", "score"), "mrpc": ("#1 String", "#2 String", "Quality")}
    for task, (col_a, col_b, col_label) in cases.items():
        spec, _, dev = load_task_data(task=task, data_dir=str(glue_dir))
        frame = pd.read_csv(glue_dir / spec.glue_dir / "dev.tsv", sep="\t", quoting=csv.QUOTE_NONE, dtype=str,
                            keep_default_na=False, encoding="utf-8-sig")
        assert [ex.text_a for ex in dev] == frame[col_a].tolist()
        assert [ex.text_b for ex in dev] == frame[col_b].tolist()
        if spec.is_regression:
            assert [ex.label for ex in dev] == [float(v) for v in frame[col_label]]
        else:
            assert [spec.labels[ex.label] for ex in dev] == frame[col_label].tolist()
    spec, train, _ = sst2
    frame = pd.read_csv(glue_dir / "SST-2" / "train.tsv", sep="\t", quoting=csv.QUOTE_NONE, dtype=str,
                        keep_default_na=False)
    assert [ex.text_a for ex in train] == frame["sentence"].tolist()
    assert [spec.labels[ex.label] for ex in train] == frame["label"].tolist()


def test_mrpc_bom_header(glue_dir):
    raw = (glue_dir / "MRPC" / "train.tsv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfQuality\t")  # the BOM is really there
    spec, train, _ = load_task_data(task="mrpc", data_dir=str(glue_dir))
    assert len(train) == 3668  # the header is not read as a row
    assert train[0].text_a.startswith("Amrozi accused his brother")
    assert not any("\ufeff" in ex.text_a or "Quality" == ex.text_a for ex in train)


def test_cola_first_row_is_data(glue_dir):
    first = (glue_dir / "CoLA" / "train.tsv").read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
    _, train, _ = load_task_data(task="cola", data_dir=str(glue_dir))
    assert train[0] == Example(first[3], None, int(first[1]))
    assert len(train) == 8551


def test_rte_row_zero(glue_dir):
    _, train, dev = load_task_data(task="rte", data_dir=str(glue_dir))
    assert train[0].text_a == "No Weapons of Mass Destruction Found in Iraq Yet."
    assert dev[0].text_a.startswith("Dana Reeve, the widow of the actor Christopher Reeve")


def test_qqp_malformed_rows_skipped_and_counted(glue_dir, caplog):
    path = glue_dir / "QQP" / "partial" / "train_rows_subset_23497.noheader.tsv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with caplog.at_level(logging.WARNING, logger="stabletune.data"):
        examples, skipped = read_glue_tsv(path, "qqp")
    assert skipped == [1]  # row 0 has its label glued to question2 (PROVENANCE.md)
    assert len(examples) == 23496
    assert Counter(ex.label for ex in examples) == {0: 14749, 1: 8747}
    assert "skipped 1 malformed row" in caplog.text and path.name in caplog.text


# ------------------------------------------------------------------------------------------------
# GLUE error cases and layout quirks on small files
# ------------------------------------------------------------------------------------------------
def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def test_mnli_16_column_dev_matched(tmp_path):
    header12 = "\t".join(["index", "promptID", "pairID", "genre", "s1bp", "s2bp", "s1p", "s2p", "sentence1",
                          "sentence2", "label1", "gold_label"])
    header16 = header12.replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
    row12 = "0\t1\t2\tfiction\t\t\t\t\tA man sleeps.\tA person rests.\tentailment\tentailment"
    row16 = "0\t1\t2\tfiction\t\t\t\t\tA \"quoted\" man.\tNobody.\tneutral\tcontradiction\tneutral\tneutral\t" \
            "neutral\tneutral"
    _write(tmp_path / "MNLI" / "train.tsv", f"{header12}\n{row12}\n{row12}\n")
    _write(tmp_path / "MNLI" / "dev_matched.tsv", f"{header16}\n{row16}\n")
    spec, train, dev = load_task_data(task="MNLI", data_dir=str(tmp_path))
    assert train[0] == Example("A man sleeps.", "A person rests.", spec.labels.index("entailment"))
    assert dev == [Example('A "quoted" man.', "Nobody.", spec.labels.index("neutral"))]


def test_qqp_malformed_rows_in_small_file(tmp_path, caplog):
    path = _write(tmp_path / "train.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                  "1\t1\t2\tWhy?\tHow? 0\n"  # 5 fields
                  "2\t3\t4\tA \"quote\tB\t1\n"
                  "3\t5\t6\tC\tD\t0\textra\n"  # 7 fields
                  "4\t7\t8\tE\tF\t0\n")
    with caplog.at_level(logging.WARNING, logger="stabletune.data"):
        examples, skipped = read_glue_tsv(path, "qqp")
    assert skipped == [2, 4]
    assert examples == [Example('A "quote', "B", 1), Example("E", "F", 0)]
    assert "skipped 2 malformed row(s)" in caplog.text and "line 2, 4" in caplog.text


def test_unknown_label_names_file_and_line(tmp_path):
    path = _write(tmp_path / "RTE" / "train.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\tc\td\tmaybe\n")
    with pytest.raises(DataError, match=r"train\.tsv, line 3: unknown label 'maybe'"):
        read_glue_tsv(path, "rte")
    sts = _write(tmp_path / "sts.tsv", "\t".join(f"c{i}" for i in range(10)) + "\n"
                 + "\t".join(["0"] * 7 + ["a", "b", "high"]) + "\n")
    with pytest.raises(DataError, match=r"sts\.tsv, line 2: unknown label 'high'.*number"):
        read_glue_tsv(sts, "sts-b")


def test_empty_and_wrong_files(tmp_path):
    with pytest.raises(DataError, match=r"empty\.tsv: empty file"):
        read_glue_tsv(_write(tmp_path / "empty.tsv", ""), "rte")
    with pytest.raises(DataError, match=r"header\.tsv: empty file"):
        read_glue_tsv(_write(tmp_path / "header.tsv", RTE_HEADER), "rte")
    with pytest.raises(DataError, match=r"sst\.tsv: no row has the 4 tab-separated fields"):
        read_glue_tsv(_write(tmp_path / "sst.tsv", "sentence\tlabel\ngood\t1\n"), "rte")
    with pytest.raises(DataError, match=r"latin\.tsv.*not UTF-8"):
        read_glue_tsv(_write(tmp_path / "latin.tsv", RTE_HEADER + "0\tcaf\xe9\tb\tentailment\n", "latin-1"), "rte")
    with pytest.raises(DataError, match=r"file not found: .*nothere\.tsv"):
        read_glue_tsv(tmp_path / "nothere.tsv", "rte")


def test_missing_dir_and_train_file(tmp_path):
    with pytest.raises(DataError, match=r"data directory not found: .*nowhere"):
        load_task_data(task="rte", data_dir=str(tmp_path / "nowhere"))
    (tmp_path / "RTE").mkdir()
    with pytest.raises(DataError, match=r"training file not found: .*RTE/train\.tsv"):
        load_task_data(task="rte", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown task"):
        load_task_data(task="wnli", data_dir=str(tmp_path))


def test_missing_dev_gives_empty_list(tmp_path, caplog):
    _write(tmp_path / "RTE" / "train.tsv", RTE_HEADER + "0\ta\tb\tentailment\n")
    with caplog.at_level(logging.WARNING, logger="stabletune.data"):
        spec, train, dev = load_task_data(task="rte", data_dir=str(tmp_path))
    assert len(train) == 1 and dev == []
    assert "dev.tsv not found" in caplog.text


def test_headerless_copy_and_lowercase_folder(tmp_path):
    _write(tmp_path / "rte" / "train.tsv", "0\ta\tb\tnot_entailment\n")  # no header, folder in lower case
    _write(tmp_path / "rte" / "dev.tsv", RTE_HEADER + "0\tc\td\tentailment\n")
    spec, train, dev = load_task_data(task="rte", data_dir=str(tmp_path))
    assert train == [Example("a", "b", 1)] and dev == [Example("c", "d", 0)]


def test_data_dir_from_environment(tmp_path, monkeypatch):
    _write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\nnice\t1\nbad\t0\n")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    _, train, dev = load_task_data(task="sst2", data_dir=None)
    assert [ex.label for ex in train] == [1, 0] and dev == []


def test_hub_unavailable_is_a_data_error(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError) as info:
        load_task_data(task="rte", data_dir=None)
    message = str(info.value)
    assert "could not load GLUE task rte from the Hugging Face hub" in message
    assert "--data-dir" in message and DATA_DIR_ENV in message and "\n" not in message


class _FakeSplit:
    def __init__(self, columns: dict, names: list[str] | None):
        self.columns = columns
        self.features = {"label": types.SimpleNamespace(names=names)} if names else {"label": object()}

    def __getitem__(self, key):
        return self.columns[key]


def test_hub_label_mapping(monkeypatch):
    """Hub label ids are mapped by name (MNLI's hub order differs) or by id for 0/1 tasks."""
    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        if name == "mnli":
            return _FakeSplit({"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [0, 2]},
                              ["entailment", "neutral", "contradiction"])
        if name == "mrpc":
            return _FakeSplit({"sentence1": ["a"], "sentence2": ["b"], "label": [1]}, ["not_equivalent", "equivalent"])
        return _FakeSplit({"sentence1": ["a"], "sentence2": ["b"], "label": [3.2]}, None)

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    spec, train, dev = load_task_data(task="mnli", data_dir=None)
    assert [spec.labels[ex.label] for ex in train] == ["entailment", "contradiction"]
    assert train[0] == Example("p1", "h1", spec.labels.index("entailment"))
    assert ("nyu-mll/glue", "mnli", "validation_matched") in calls
    spec, train, _ = load_task_data(task="mrpc", data_dir=None)
    assert spec.labels[train[0].label] == "1"
    spec, train, _ = load_task_data(task="STS-B", data_dir=None)
    assert train[0].label == 3.2 and ("nyu-mll/glue", "stsb", "validation") in calls


# ------------------------------------------------------------------------------------------------
# User datasets
# ------------------------------------------------------------------------------------------------
def _user(train: Path, dev: Path | None, columns=("text",), **kw):
    return load_task_data(task=kw.pop("task", None), data_dir=None, train_file=str(train),
                          dev_file=str(dev) if dev else None, text_columns=list(columns), **kw)


def test_user_csv_pairs_with_quotes(tmp_path):
    train = _write(tmp_path / "pairs.csv", 'premise,hypothesis,label\n"a, ""quoted""\nline",b,10\nc,d,2\ne,f,2\n')
    dev = _write(tmp_path / "dev.csv", "premise,hypothesis,label\ng,h,10\n")
    spec, tr, dv = _user(train, dev, ("premise", "hypothesis"))
    assert spec.name == "pairs" and spec.glue_dir is None and spec.metric == "acc"
    assert spec.labels == ("2", "10")  # numeric labels sort as numbers
    assert tr[0] == Example('a, "quoted"\nline', "b", 1)
    assert dv == [Example("g", "h", 1)]


def test_user_jsonl_regression_auto(tmp_path):
    rows = [{"s": "a", "y": 0.5}, {"s": "b", "y": 4}, {"s": "c", "y": "3.25"}]
    train = _write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    dev = _write(tmp_path / "d.jsonl", json.dumps({"s": "d", "y": 1.0}) + "\n")
    spec, tr, dv = _user(train, dev, ("s",), label_column="y", task="sim")
    assert spec.name == "sim" and spec.is_regression and spec.metric == "spearman"
    assert [ex.label for ex in tr] == [0.5, 4.0, 3.25] and dv[0] == Example("d", None, 1.0)


def test_user_task_type(tmp_path):
    train = _write(tmp_path / "t.json", json.dumps([{"text": "a", "label": 1}, {"text": "b", "label": 5},
                                                    {"text": "c", "label": 3}]))
    spec, tr, _ = _user(train, None)
    assert spec.labels == ("1", "3", "5") and [ex.label for ex in tr] == [0, 2, 1]  # integers -> classes
    spec, tr, _ = _user(train, None, task_type="regression")
    assert spec.is_regression and [ex.label for ex in tr] == [1.0, 5.0, 3.0]
    words = _write(tmp_path / "w.tsv", "text\tlabel\na\tpos\nb\tneg\nc\t2.5\n")
    spec, _, _ = _user(words, None)
    assert spec.labels == ("2.5", "neg", "pos")
    with pytest.raises(DataError, match=r"w\.tsv, line 2: label 'pos' is not a number"):
        _user(words, None, task_type="regression")
    with pytest.raises(InvalidValue, match="^invalid task_type"):
        _user(words, None, task_type="ordinal")


def test_user_errors(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\n")
    with pytest.raises(DataError, match=r"train\.csv: column 'sentence' not found"):
        _user(train, None, ("sentence",))
    with pytest.raises(DataError, match=r"train\.csv: column 'y' not found"):
        _user(train, None, label_column="y")
    dev = _write(tmp_path / "dev.csv", "text,label\nfine,pos\nmeh,neutral\n")
    with pytest.raises(DataError, match=r"dev\.csv, line 3: label 'neutral' does not occur in the training file"):
        _user(train, dev)
    empty_text = _write(tmp_path / "empty_text.csv", "text,label\ngood,pos\n  ,neg\n")
    with pytest.raises(DataError, match=r"empty_text\.csv, line 3: empty value in column 'text'"):
        _user(empty_text, None)
    short = _write(tmp_path / "short.csv", "text,label\ngood,pos\nbad\n")
    with pytest.raises(DataError, match=r"short\.csv, line 3: empty value in column 'label'"):
        _user(short, None)
    bad_json = _write(tmp_path / "bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: invalid JSON"):
        _user(bad_json, None)
    no_key = _write(tmp_path / "nokey.jsonl", '{"text": "a", "label": "x"}\n{"label": "y"}\n')
    with pytest.raises(DataError, match=r"nokey\.jsonl, line 2: column 'text' not found"):
        _user(no_key, None)
    one_class = _write(tmp_path / "one.csv", "text,label\na,x\nb,x\n")
    with pytest.raises(DataError, match=r"one\.csv: .*single label"):
        _user(one_class, None)
    with pytest.raises(DataError, match=r"empty\.csv: empty file"):
        _user(_write(tmp_path / "empty.csv", ""), None)
    with pytest.raises(DataError, match=r"only_header\.csv: empty file"):
        _user(_write(tmp_path / "only_header.csv", "text,label\n"), None)
    with pytest.raises(DataError, match=r"data\.xlsx: unsupported file type"):
        _user(_write(tmp_path / "data.xlsx", "x"), None)
    with pytest.raises(DataError, match=r"file not found: .*missing_dev\.csv"):
        _user(train, tmp_path / "missing_dev.csv")
    with pytest.raises(InvalidValue, match="^invalid text_columns"):
        _user(train, None, ("a", "b", "c"))
    with pytest.raises(InvalidValue, match="^invalid text_columns"):
        load_task_data(task=None, data_dir=None, train_file=str(train), dev_file=None)

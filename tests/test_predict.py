"""stabletune predict: reproduces a run's own test score from the saved folder alone, agrees with plain
transformers, keeps input order and columns, and turns bad input into one line with exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from stabletune.cli import main
from stabletune.config import make_config
from stabletune.predict import predict_file
from stabletune.training import train
from tinymodel import write_user_data


def trained(tiny_model, tmp_path: Path, kind: str, fmt: str = "csv") -> tuple[Path, dict, dict]:
    """A `train --save-model` run on a tiny user dataset, validation and test given as files."""
    data = write_user_data(tmp_path / "data", kind=kind, fmt=fmt)
    label = "score" if kind == "regression" else "verdict"
    cfg = make_config({"train_file": str(data["train"]), "dev_file": str(data["val"]),
                       "test_file": str(data["test"]), "split": "files", "text_columns": ["review"],
                       "label_column": label, "model": str(tiny_model), "max_steps": 18, "num_evals": 3,
                       "batch_size": 16, "lr": 1e-2, "reinit_layers": 1, "reinit_pooler": True, "save_model": True,
                       "progress": False, "threads": 1})
    run = tmp_path / "run"
    train(cfg, str(run))
    return run, data, json.loads((run / "results.json").read_text())


@pytest.fixture(scope="module")
def cls_run(tiny_model, tmp_path_factory):
    return trained(tiny_model, tmp_path_factory.mktemp("cls"), "classification")


@pytest.fixture(scope="module")
def reg_run(tiny_model, tmp_path_factory):
    return trained(tiny_model, tmp_path_factory.mktemp("reg"), "regression", fmt="jsonl")


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_predict_reproduces_the_runs_test_score_classification(cls_run, tmp_path, capsys):
    run, data, results = cls_run
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), "--input", str(data["test"]), "--output", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["metric"] == "acc" and summary["rows"] == 24
    assert summary["metrics"] == pytest.approx(results["best"]["test"], abs=0)  # same batches: same numbers
    rows = read_csv(out)
    source = read_csv(data["test"])
    assert [r["id"] for r in rows] == [r["id"] for r in source]  # input order and the id column kept
    assert list(rows[0]) == ["id", "review", "verdict", "prediction", "prob_no", "prob_yes"]
    probs = np.array([[float(r["prob_no"]), float(r["prob_yes"])] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert [r["prediction"] for r in rows] == [("yes" if p[1] > p[0] else "no") for p in probs]


def test_predict_reproduces_the_runs_test_score_regression(reg_run, tmp_path):
    run, data, results = reg_run
    res = predict_file(run / "model", data["test"], tmp_path / "pred.jsonl", progress=False)
    assert res.metric == "spearman"
    for k in ("pearson", "spearman"):
        assert res.metrics[k] == pytest.approx(results["best"]["test"][k], abs=1e-5)
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(24)]
    assert all(isinstance(r["prediction"], float) for r in rows) and not any(k.startswith("prob_") for k in rows[0])


def _plain_transformers(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Logits of each text alone (no padding, no batching) with nothing but transformers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with torch.inference_mode():
        return np.array([model(**tok(t, truncation=True, max_length=128, return_tensors="pt")).logits[0].numpy()
                         for t in texts])


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_plain_transformers_gives_the_same_predictions(kind, cls_run, reg_run, tmp_path):
    run, data, _ = cls_run if kind == "classification" else reg_run
    res = predict_file(run, data["test"], None, progress=False)
    texts = [r["review"] for r in (read_csv(data["test"]) if data["test"].suffix == ".csv" else
                                   [json.loads(x) for x in data["test"].read_text().splitlines()])]
    logits = _plain_transformers(run / "model", texts)
    if kind == "regression":
        np.testing.assert_allclose(res.labels, logits[:, 0], atol=1e-5)
    else:
        from transformers import AutoConfig

        id2label = AutoConfig.from_pretrained(run / "model").id2label
        assert id2label == {0: "no", 1: "yes"}  # the user's names, not LABEL_0/LABEL_1
        assert res.labels == [id2label[i] for i in logits.argmax(1)]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        np.testing.assert_allclose(res.probabilities, probs, atol=1e-5)


def test_plain_hf_folder_needs_text_columns(cls_run, tmp_path, capsys):
    """A Hugging Face classifier without stabletune's metadata: say which columns hold the text."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run, data, _ = cls_run
    model = AutoModelForSequenceClassification.from_pretrained(run / "model")
    del model.config.stabletune
    hf = tmp_path / "hf"
    model.save_pretrained(hf)
    AutoTokenizer.from_pretrained(run / "model").save_pretrained(hf)
    assert main(["predict", str(hf), "--input", str(data["test"]), "--output", str(tmp_path / "p.csv")]) == 2
    assert "--text-columns" in capsys.readouterr().err
    assert main(["predict", str(hf), "--input", str(data["test"]), "--output", str(tmp_path / "p.csv"),
                 "--text-columns", "review", "--label-column", "verdict", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["acc"] >= 0.0


@pytest.mark.parametrize("case", ["not a classifier", "no config", "missing folder", "missing column", "empty file",
                                  "header only", "unknown label", "output clash", "bad output type",
                                  "too long", "no output folder", "repeated header"])
def test_predict_bad_input_one_line_exit_2(case, cls_run, tiny_model, tmp_path, capsys):
    run, data, _ = cls_run
    inp, model_dir, out = data["test"], run, tmp_path / "pred.csv"
    extra: list[str] = []
    if case == "not a classifier":
        model_dir = tiny_model  # a BertModel checkpoint: no task head
    elif case == "no config":
        model_dir = tmp_path
    elif case == "missing folder":
        model_dir = tmp_path / "nope"
    elif case == "missing column":
        extra = ["--text-columns", "body"]
    elif case == "empty file":
        inp = tmp_path / "empty.csv"
        inp.write_text("")
    elif case == "header only":
        inp = tmp_path / "header.csv"
        inp.write_text("id,review,verdict\n")
    elif case == "unknown label":
        inp = tmp_path / "odd.csv"
        inp.write_text("id,review,verdict\n1,great film,maybe\n")
    elif case == "output clash":
        inp = tmp_path / "clash.csv"
        inp.write_text("id,review,prediction\n1,great film,yes\n")
    elif case == "bad output type":
        out = tmp_path / "pred.xlsx"
    elif case == "too long":
        extra = ["--max-seq-length", "100000"]  # the tiny BERT has 512 positions
    elif case == "no output folder":
        out = tmp_path / "missing" / "pred.csv"
    elif case == "repeated header":  # csv.DictReader would read the second 'review' and drop the first
        inp = tmp_path / "twice.csv"
        inp.write_text("id,review,review\n1,great film,awful film\n")
    code = main(["predict", str(model_dir), "--input", str(inp), "--output", str(out), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("stabletune: error:") and "Traceback" not in err, err
    assert not out.exists()


def test_fit_output_predicts_its_own_test_score(tiny_model, tmp_path, capsys):
    """`stabletune predict` on fit's folder and test file gives fit.json's test score (fit reports it that way)."""
    import stabletune
    from stabletune.fitting import SearchSpace

    data = write_user_data(tmp_path / "data", kind="regression")
    out = tmp_path / "model"
    stabletune.fit(train_file=data["train"], dev_file=data["val"], test_file=data["test"], text_columns="review",
                   label_column="score", model=str(tiny_model), out=out, workers=0, progress=False, batch_size=16,
                   num_evals=3, threads=1, space=SearchSpace(lrs=(1e-2,), layers=(0, 1), updates=(9,),
                                                             anchor_lr=1e-2, anchor_layers=1))
    record = json.loads((out / "fit.json").read_text())
    assert main(["predict", str(out), "--input", str(data["test"]), "--output", str(tmp_path / "p.csv"),
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["metrics"]["spearman"] == pytest.approx(record["test"]["score"], abs=1e-5)
    assert record["metric"] == "spearman" and record["data"]["task_type"] == "regression"


def test_predict_on_a_full_disk_keeps_the_earlier_output(cls_run, tmp_path, capsys, monkeypatch):
    """Issue 23: a full disk used to end predict in an OSError traceback with a partial file."""
    import csv
    import errno

    run, data, _ = cls_run
    out = tmp_path / "pred.csv"
    out.write_text("earlier\n")
    written = []

    def writerow(self, row):
        written.append(row)
        if len(written) > 1:  # the header went out, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerow", writerow)
    code = main(["predict", str(run), "--input", str(data["test"]), "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"stabletune: error: cannot write {out}: No space left on device; nothing was " \
                                "written there"
    assert out.read_text() == "earlier\n" and sorted(p.name for p in tmp_path.iterdir() if "pred" in p.name) == \
        ["pred.csv"]

"""`stabletune train` through the CLI: options, YAML + overrides, and every user error as one line with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stabletune.cli import main
from stabletune.cli.train import parse_overrides
from stabletune.config import RunConfig, make_config
from tinymodel import glue_dir


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def base_args(model, out):
    return ["train", "--task", "rte", "--data-dir", str(glue_dir()), "--model", str(model), "--out", str(out),
            "--train-size", "16", "--batch-size", "8", "--max-steps", "2", "--num-evals", "1",
            "--max-seq-length", "32", "--no-progress", "--threads", "1"]


def test_yaml_then_cli_precedence(tmp_path):
    y = tmp_path / "run.yaml"
    # text_columns belong to a user dataset (on a GLUE task they are refused: test_bad_input)
    y.write_text("train_file: t.csv\ndev_file: d.csv\nlr: 3.0e-5\nbatch-size: 16\nreinit_pooler: true\n"
                 "text_columns: [a, b]\n")
    from stabletune.cli import build_parser

    args = build_parser().parse_args(["train", "--config", str(y), "--batch-size", "8", "max_steps=7",
                                      "--no-reinit-pooler"])
    cfg = make_config(parse_overrides(args), yaml_path=args.config)
    assert (cfg.lr, cfg.batch_size, cfg.max_steps, cfg.reinit_pooler, cfg.text_columns) == (3e-5, 8, 7, False, ["a", "b"])
    assert str(cfg.train_file).endswith("t.csv") and cfg.warmup_ratio == RunConfig().warmup_ratio


def test_train_cli_writes_run(tiny_model, tmp_path, capsys):
    code, out, err = run_cli(base_args(tiny_model, tmp_path / "r"), capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert (tmp_path / "r" / "results.json").is_file()
    # the same folder again is refused (results already stored are never lost)
    code, out, err = run_cli(base_args(tiny_model, tmp_path / "r"), capsys)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1


def _csv(path, rows, header="sentence,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("case", [
    "unknown_task", "missing_data_dir", "missing_train_file", "missing_column", "unknown_label", "empty_split",
    "missing_model", "negative_lr", "batch_zero", "num_evals_zero", "bad_yaml_key", "bad_value", "bad_choice",
    "fp16_cpu", "no_out"])
def test_user_errors_one_line_exit_2(case, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    args = base_args(tiny_model, out)
    good = [f"s{i} is fine,{'pos' if i % 2 else 'neg'}" for i in range(20)]
    expect = {}
    if case == "unknown_task":
        args[args.index("rte")] = "nope"
        expect = "nope"
    elif case == "missing_data_dir":
        args[args.index("--data-dir") + 1] = str(tmp_path / "nowhere")
        expect = "nowhere"
    elif case in ("missing_train_file", "missing_column", "unknown_label", "empty_split"):
        train = _csv(tmp_path / "train.csv", good)
        dev_rows = good
        if case == "unknown_label":
            dev_rows = good[:-1] + ["odd one,maybe"]
        if case == "empty_split":
            dev_rows = []
        dev = _csv(tmp_path / "dev.csv", dev_rows)
        if case == "missing_train_file":
            train = tmp_path / "absent.csv"
        i = args.index("--task")
        del args[i:i + 4]  # no --task/--data-dir
        args += ["--train-file", str(train), "--dev-file", str(dev),
                 "--text-columns", "text" if case == "missing_column" else "sentence"]
        expect = {"missing_train_file": "absent.csv", "missing_column": "text", "unknown_label": "dev.csv",
                  "empty_split": "dev.csv"}[case]
    elif case == "missing_model":
        args[args.index("--model") + 1] = str(tmp_path / "no-model")
        expect = "no-model"
    elif case == "negative_lr":
        args += ["--lr", "-1e-5"]
        expect = "--lr"
    elif case == "batch_zero":
        args += ["--batch-size", "0"]
        expect = "--batch-size"
    elif case == "num_evals_zero":
        args += ["--num-evals", "0"]
        expect = "--num-evals"
    elif case == "bad_yaml_key":
        y = tmp_path / "run.yaml"
        y.write_text("task: rte\nlearning_rate: 1e-5\n")
        args += ["--config", str(y)]
        expect = "learning_rate"
    elif case == "bad_value":
        args += ["--lr", "fast"]
        expect = "--lr"
    elif case == "bad_choice":
        args += ["--optimizer", "sgd"]
        expect = "--optimizer"
    elif case == "fp16_cpu":
        args += ["--precision", "fp16", "--device", "cpu"]
        expect = "--precision"
    elif case == "no_out":
        i = args.index("--out")
        del args[i:i + 2]
        expect = "--out"
    try:
        code, stdout, err = run_cli(args, capsys)
    except SystemExit as e:  # argparse-level errors
        code = e.code
        stdout, err = capsys.readouterr()
    assert code == 2, (case, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expect in lines[0], lines[0]
    assert not out.exists() and not list(tmp_path.glob("out.partial*"))


@pytest.mark.parametrize("extra, expect", [
    (["--reinit-layers", "3"], "invalid option --reinit-layers: 3 exceeds the 2 Transformer blocks"),
    (["--mixout", "0.1", "--mixout-targets", "no_such_layer"], "invalid option --mixout-targets: 'no_such_layer'"),
    (["--train-size", "100000"], "invalid option --train-size: 100000"),
])
def test_component_errors_are_worded_as_options_at_the_edge(extra, expect, tiny_model, tmp_path, capsys):
    """The techniques and splits raise plain errors naming their arguments; the run's set-up (the config edge)
    says which option set the value. These values pass config validation: only the model or data refute them."""
    code, _, err = run_cli(base_args(tiny_model, tmp_path / "out") + extra, capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and expect in lines[0], err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.partial*"))


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "stabletune", "train", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--reinit-layers" in r.stdout and "--data-seed" in r.stdout

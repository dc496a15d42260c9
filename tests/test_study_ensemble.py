"""Studies and `stabletune train` with --ensemble: runs that differ only in their seeds trained as one
vectorised model, each stored exactly as a separate run would be."""

from __future__ import annotations

import json
import subprocess
import sys

from torch.testing import assert_close

from stabletune.study import run_study
from stabletune.study.runner import GPU_ENSEMBLE, resolve_ensemble
from stabletune.study.store import Store
from tinymodel import glue_dir

STUDY = """
name: ens
data_dir: {glue}
base: {{model: {model}, train_size: 32, batch_size: 8, max_steps: 6, num_evals: 3, max_seq_length: 64,
        eval_batch_size: 64, lr: 1.0e-3, dropout: 0.0, encoder_impl: hf}}
methods:
  standard: {{}}
  mixout: {{mixout: 0.3}}
tasks: [rte]
seeds: 3
"""


def stored(db) -> dict[tuple[str, int], dict]:
    with Store.open(db, readonly=True) as s:
        return {(r["method"], r["seed"]): {"status": r["status"], "error": r["error"],
                                           "summary": json.loads(r["summary"] or "{}")} for r in s.runs()}


def test_resolve_ensemble_defaults():
    assert resolve_ensemble(None, gpu=False) == 1  # CPU: ensembles are slower than separate runs
    assert resolve_ensemble(None, gpu=True) == GPU_ENSEMBLE > 1
    assert resolve_ensemble(3, gpu=False) == 3  # asked for explicitly
    assert resolve_ensemble(None, gpu=True, early_kill=True) == 1  # early kill judges runs one by one
    assert resolve_ensemble(4, gpu=True, custom_run_fn=True) == 1


def test_study_ensemble_stores_every_member_as_its_separate_run(tiny_model, tmp_path):
    path = tmp_path / "ens.yaml"
    path.write_text(STUDY.format(glue=glue_dir(), model=tiny_model))
    sep = run_study(path, db=tmp_path / "sep.db", backend="inline", progress=False)
    ens = run_study(path, db=tmp_path / "ens.db", backend="inline", progress=False, ensemble=2)
    assert sep.ok and ens.ok and ens.counts["finished"] == 6
    assert "ensembles of up to 2 seeds" in ens.backend
    a, b = stored(tmp_path / "sep.db"), stored(tmp_path / "ens.db")
    assert a.keys() == b.keys()
    modes = {}
    for key in a:
        sa, sb = a[key]["summary"], b[key]["summary"]
        modes[key] = (sb["techniques"].get("ensemble") or {}).get("mode")
        # dropout 0: a member is the run train() makes, up to float rounding
        assert sb["seeds"] == sa["seeds"] and sb["best"]["step"] == sa["best"]["step"]
        assert_close(sb["best"]["test"], sa["best"]["test"], rtol=1e-5, atol=1e-5)
        assert_close(sb["last"]["val"], sa["last"]["val"], rtol=1e-5, atol=1e-5)
        assert "ensemble" not in sa["techniques"]
    # 3 standard seeds with K=2: one pair vectorised, one run alone; mixout is never grouped
    assert sorted(str(modes[("standard", s)]) for s in range(3)) == ["None", "vectorised", "vectorised"]
    assert all(modes[("mixout", s)] is None for s in range(3))


def test_a_failing_ensemble_fails_each_member(tiny_model, tmp_path, monkeypatch):
    import stabletune.training as train_mod

    def broken(cfgs, out_dirs=None, *, callback=None):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(train_mod, "train_ensemble", broken)
    path = tmp_path / "ens.yaml"
    path.write_text(STUDY.format(glue=glue_dir(), model=tiny_model).replace("seeds: 3", "seeds: 2")
                    .replace("  mixout: {mixout: 0.3}\n", ""))
    out = run_study(path, backend="inline", progress=False, ensemble=2)
    assert out.counts["failed"] == 2 and not out.ok
    rows = stored(tmp_path / "ens.db")
    assert {r["status"] for r in rows.values()} == {"failed"}
    assert all("out of memory (simulated)" in r["error"] for r in rows.values())
    # the study resumes them separately once the problem is gone
    monkeypatch.undo()
    out = run_study(path, backend="inline", progress=False, ensemble=1, retry_failed=True)
    assert out.ok and out.counts["finished"] == 2


def test_cli_train_ensemble_writes_one_folder_per_seed(tiny_model, tmp_path):
    cmd = [sys.executable, "-m", "stabletune", "train", "--task", "rte", "--data-dir", str(glue_dir()),
           "--model", str(tiny_model), "--train-size", "32", "--batch-size", "8", "--max-steps", "4",
           "--num-evals", "2", "--max-seq-length", "64", "--threads", "1", "--no-progress", "--seed", "5",
           "--out", str(tmp_path / "runs"), "--encoder-impl", "hf"]
    res = subprocess.run(cmd + ["--ensemble", "2"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["seed"] for x in lines] == [5, 6] and {x["ensemble"] for x in lines} == {"vectorised"}
    for seed in (5, 6):
        results = json.loads((tmp_path / "runs" / f"seed{seed}" / "results.json").read_text())
        assert results["seeds"]["seed"] == seed and results["techniques"]["ensemble"]["size"] == 2
    # the member folders exist now: refused without --overwrite, in one line, before any training
    res = subprocess.run(cmd + ["--ensemble", "2"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "already exists" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run(cmd + ["--ensemble", "0"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--ensemble" in res.stderr and "Traceback" not in res.stderr


def test_cli_study_ensemble_option_is_checked(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmethods: {a: {}}\ntasks: [rte]\nseeds: 1\n")
    res = subprocess.run([sys.executable, "-m", "stabletune", "study", "run", str(path), "--ensemble", "two"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "invalid option --ensemble" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "s.db").exists()

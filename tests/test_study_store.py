"""The SQLite study store: schema, versioning, one-transaction results, copies, locks, and the readers
(load_results / load_frames). Uses a fake run function: no training here."""

from __future__ import annotations

import math
import sqlite3

import pandas as pd
import pytest

from stabletune.errors import DataError, UserError
from stabletune.study import load_frames, load_results, parse_study, run_study
from stabletune.study.store import SCHEMA_VERSION, Store, StudyLock
from stabletune.study.tuning import Planner

STUDY = """
name: st
base: {max_steps: 6, num_evals: 3, lr: 2.0e-5}
methods:
  standard: {}
  bertadam: {optimizer: bertadam}
tasks: [rte]
seeds: 2
baseline: standard
"""


def fake_result(cfg, *, status: str = "finished", nan_test: bool = False, n_blocks: int = 2) -> dict:
    """A RunResult.to_dict()-shaped result whose numbers derive from the config."""
    total = cfg.max_steps
    base = 0.5 + 0.01 * cfg.seed + (0.05 if cfg.optimizer == "adamw" else 0.0)
    evals = [{"step": s, "epoch": s / 3, "val": {"acc": base + 0.001 * s, "f1": base / 2}, "val_loss": 1.0 / s,
              "param_distance": [0.1 * s * (b + 1) for b in range(n_blocks)]} for s in (2, 4, 6)]
    return {
        "status": status, "config": cfg.to_dict(), "seeds": {"seed": cfg.seed}, "num_steps": total,
        "task": {"name": cfg.task, "labels": ["a", "b"], "metric": "acc"},
        "best": {"step": 6, "val": evals[-1]["val"], "test": {"acc": float("nan") if nan_test else base, "f1": 0.3}},
        "last": {"step": 6, "val": evals[-1]["val"], "test": {"acc": base - 0.01, "f1": 0.2}},
        "train_log": [{"step": s, "loss": 1.0 / s, "lr": 1e-5, "grad_norm": None if s == 1 else 0.5}
                      for s in range(1, total + 1)],
        "evals": evals, "timings": {"wall_s": 1.5, "train_s": 1.0, "examples_per_s": 10.0, "peak_memory_mb": 100.0},
        "environment": {"versions": {"stabletune": "0.1.0", "torch": "x"}}, "error": None,
    }


def fake_run(cfg, out_dir=None, *, callback=None):
    return fake_result(cfg)


@pytest.fixture
def study(tmp_path):
    p = tmp_path / "st.yaml"
    p.write_text(STUDY)
    return p


@pytest.fixture
def store(tmp_path, study):
    from stabletune.study import load_study

    spec = load_study(study)
    s = Store.open(tmp_path / "st.db", create=True)
    s.save_spec(spec.name, spec.text, str(study))
    runs = Planner(spec).plan(None).runs
    s.add_planned(runs)
    yield s, runs
    s.close()


def count(store: Store, table: str, run_id: str | None = None) -> int:
    if run_id is None:
        return store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return store.conn.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", (run_id,)).fetchone()[0]


def test_schema_wal_and_version(store):
    s, runs = store
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.conn.execute("SELECT version FROM schema_version").fetchall()[0][0] == SCHEMA_VERSION
    tables = {r[0] for r in s.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"schema_version", "study", "runs", "evals", "train_loss", "test_metrics", "param_distance"} <= tables
    assert count(s, "runs") == len(runs) == 4
    assert {r["status"] for r in s.runs()} == {"pending"}
    assert s.add_planned(runs) == 0  # planning twice adds nothing


def test_newer_schema_is_refused_clearly(tmp_path, store):
    s, _ = store
    with s.transaction() as c:
        c.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(DataError, match="newer than this stabletune supports"):
        Store.open(s.path)
    with pytest.raises(DataError, match="newer"):
        Store.open(s.path, readonly=True)


def test_not_a_database(tmp_path):
    p = tmp_path / "x.db"
    p.write_text("hello, I am not SQLite" * 100)
    with pytest.raises(DataError, match="not a usable study database"):
        Store.open(p)
    with pytest.raises(DataError, match="not found"):
        Store.open(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_other_study_database_is_refused(store):
    s, _ = store
    with pytest.raises(UserError, match="holds study 'st', not 'other'"):
        s.save_spec("other", "name: other", None)


def test_record_result_writes_every_curve_once(store):
    s, runs = store
    run = runs[0]
    res = fake_result(run.config)
    assert s.record_result(run.run_id, res, started_at="2020-01-01T00:00:00+00:00", host="h")
    row = s.runs([run.run_id])[0]
    assert row["status"] == "finished" and row["main_metric"] == "acc"
    assert row["best_val"] == pytest.approx(res["best"]["val"]["acc"])
    assert (row["best_step"], row["last_step"], row["num_steps"], row["wall_s"]) == (6, 6, 6, 1.5)
    assert row["started_at"] == "2020-01-01T00:00:00+00:00" and row["finished_at"] > row["started_at"]
    assert count(s, "train_loss", run.run_id) == 6
    assert count(s, "evals", run.run_id) == 3 * 3  # acc, f1, loss at 3 evaluations
    assert count(s, "param_distance", run.run_id) == 3 * 2
    assert count(s, "test_metrics", run.run_id) == 2 * 2 * 2  # best/last x val/test x acc/f1
    finished_at = row["finished_at"]
    # a second result for the same run is refused and changes nothing
    assert not s.record_result(run.run_id, res)
    assert not s.record_failure(run.run_id, "boom")
    assert s.runs([run.run_id])[0]["finished_at"] == finished_at
    assert count(s, "train_loss", run.run_id) == 6


def test_result_is_one_transaction(store):
    """A result that fails half-way through its inserts leaves nothing behind."""
    s, runs = store
    run = runs[0]
    res = fake_result(run.config)
    res["evals"].append(dict(res["evals"][0]))  # a duplicate (step, metric): the PRIMARY KEY rejects it
    with pytest.raises(sqlite3.IntegrityError):
        s.record_result(run.run_id, res)
    assert s.runs([run.run_id])[0]["status"] == "pending"
    for table in ("train_loss", "evals", "test_metrics", "param_distance"):
        assert count(s, table) == 0
    assert not s.conn.in_transaction
    assert s.record_result(run.run_id, fake_result(run.config))  # and the store is usable afterwards


def test_nan_is_stored_as_null(store):
    s, runs = store
    s.record_result(runs[0].run_id, fake_result(runs[0].config, nan_test=True))
    v = s.conn.execute("SELECT value FROM test_metrics WHERE checkpoint='best' AND split='test' AND metric='acc'"
                       ).fetchone()[0]
    assert v is None


def test_failure_and_reset(store):
    s, runs = store
    s.mark_running(runs[0].run_id)
    assert s.runs([runs[0].run_id])[0]["attempts"] == 1
    s.record_failure(runs[0].run_id, "RuntimeError: boom")
    row = s.runs([runs[0].run_id])[0]
    assert (row["status"], row["error"]) == ("failed", "RuntimeError: boom")
    assert s.reset([runs[0].run_id]) == 0  # only running runs by default
    assert s.reset([runs[0].run_id], from_status=("failed",)) == 1
    assert s.runs([runs[0].run_id])[0]["status"] == "pending"


def test_copy_run_duplicates_row_and_curves(store):
    s, runs = store
    src = runs[0]
    s.record_result(src.run_id, fake_result(src.config))
    spec = parse_study(STUDY)
    dst = spec.make_run(src.method, src.task, src.seeds, "search")
    s.add_planned([dst])
    assert s.copy_run(src.run_id, dst)
    row = s.runs([dst.run_id])[0]
    assert (row["status"], row["phase"], row["copied_from"]) == ("finished", "search", src.run_id)
    for table in ("train_loss", "evals", "test_metrics", "param_distance"):
        assert count(s, table, dst.run_id) == count(s, table, src.run_id) > 0
    assert not s.copy_run(src.run_id, dst)  # already holds a result


def test_lock_is_exclusive_and_released(tmp_path):
    db = tmp_path / "x.db"
    assert not StudyLock.held(db)
    with StudyLock(db):
        assert StudyLock.held(db)
        with pytest.raises(UserError, match="in use by another"):
            StudyLock(db).acquire()
    assert not StudyLock.held(db)


# ------------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------------
def test_load_results_one_row_per_run(study, tmp_path):
    out = run_study(study, backend="inline", run_fn=fake_run, progress=False)
    assert out.ok and out.counts["finished"] == 4
    df = load_results(study)
    assert len(df) == 4 and df["run_id"].is_unique
    assert list(df["method"]) == ["standard", "bertadam", "standard", "bertadam"]  # plan order
    for col in ("best_test_acc", "last_test_acc", "best_val_acc", "best_test_f1", "wall_s", "status", "seed"):
        assert col in df.columns
    row = df[(df.method == "bertadam") & (df.seed == 1)].iloc[0]
    assert row["best_test_acc"] == pytest.approx(0.51) and row["last_test_acc"] == pytest.approx(0.50)
    same = load_results(tmp_path / "st.db")  # from the database alone (its stored study text)
    pd.testing.assert_frame_equal(df, same)
    assert (load_results(study, phase="search")).empty


def test_load_frames_contract(study):
    run_study(study, backend="inline", run_fn=fake_run, progress=False)
    from stabletune.analysis.frames import METRICS_COLUMNS, ResultsFrames

    f = load_frames(study)
    assert isinstance(f, ResultsFrames)
    m = f.metrics
    assert set(METRICS_COLUMNS) <= set(m.columns)
    assert {"init_seed", "data_seed", "run_id", "status", "max_steps"} <= set(m.columns)
    assert set(m["checkpoint"]) == {"best", "last"} and set(m["split"]) == {"val", "test"}
    assert len(m) == 4 * 2 * 2 * 2
    one = m[(m.method == "standard") & (m.seed == 0) & (m.checkpoint == "best") & (m.split == "test")
            & (m.metric == "acc")]
    assert one["value"].tolist() == [pytest.approx(0.55)]
    assert set(f.train_loss.columns) >= {"method", "task", "seed", "step", "loss"} and len(f.train_loss) == 4 * 6
    assert set(f.evals.columns) >= {"method", "task", "seed", "step", "metric", "value"}
    assert set(f.param_distance.columns) >= {"method", "task", "seed", "step", "block", "distance"}
    assert len(f.param_distance) == 4 * 3 * 2
    assert set(f.runs.columns) >= {"method", "task", "seed", "status"} and len(f.runs) == 4
    assert f.meta["config"] == STUDY and f.meta["n_runs"] == 4 and f.meta["baseline"] == "standard"
    assert f.meta["versions"]["stabletune"] == "0.1.0"


def test_results_follow_the_current_study_file(study):
    """Runs of an earlier version of the file (another lr) never mix into the results."""
    run_study(study, backend="inline", run_fn=fake_run, progress=False)
    study.write_text(STUDY.replace("lr: 2.0e-5", "lr: 3.0e-5").replace("seeds: 2", "seeds: 1"))
    assert load_results(study).empty  # the new file's runs are not stored yet
    assert len(load_results(study, all_runs=True)) == 4
    out = run_study(study, backend="inline", run_fn=fake_run, progress=False)
    assert out.ran == 2
    f = load_frames(study)
    assert f.meta["n_runs"] == 2 and len(f.runs) == 2
    with Store.open(study.parent / "st.db", readonly=True) as s:
        assert s.conn.execute("SELECT count(*) FROM study").fetchone()[0] == 2  # both texts kept


def test_export_csv_and_parquet(study, tmp_path):
    run_study(study, backend="inline", run_fn=fake_run, progress=False)
    from stabletune.study import export_results

    csv = export_results(study, fmt="csv")
    assert csv == tmp_path / "st.csv"
    df = pd.read_csv(csv)
    assert len(df) == 4 and not df["best_test_acc"].isna().any()
    pytest.importorskip("pyarrow")
    pq = export_results(study, fmt="parquet", out=tmp_path / "o" / "r.parquet")
    assert len(pd.read_parquet(pq)) == 4
    assert not math.isnan(pd.read_parquet(pq)["best_val"].iloc[0])


def test_predictions_are_stored_per_checkpoint(store):
    s, runs = store
    run = runs[0]
    res = {**fake_result(run.config), "predictions": {"best": "c:0110", "last": "c:0100"}}
    assert s.record_result(run.run_id, res)
    rows = s.conn.execute("SELECT checkpoint, split, n, data FROM predictions WHERE run_id = ? ORDER BY checkpoint",
                          (run.run_id,)).fetchall()
    assert [tuple(r) for r in rows] == [("best", "test", 4, "c:0110"), ("last", "test", 4, "c:0100")]


def test_version_1_database_is_read_as_is_and_upgraded_by_a_writer(store):
    s, runs = store
    s.record_result(runs[0].run_id, fake_result(runs[0].config))
    with s.transaction() as c:  # make it what stabletune 0.1 wrote: version 1, no predictions table
        c.execute("DROP TABLE predictions")
        c.execute("UPDATE schema_version SET version = 1")
    path = s.path
    s.close()
    reader = Store.open(path, readonly=True)
    assert not reader.has_table("predictions") and len(reader.runs()) == 4
    reader.close()
    writer = Store.open(path, create=True)
    assert writer.has_table("predictions")
    assert writer.conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert writer.runs([runs[0].run_id])[0]["status"] == "finished"  # nothing lost
    writer.close()


def test_a_full_database_is_reported_as_cannot_write(store):
    """SQLITE_FULL (here: PRAGMA max_page_count caps the file at its current size, as a full disk does) is said as
    "cannot write", not "cannot read" (issue 23), and the run stays without a result (redone on resume)."""
    s, runs = store
    pages = s.conn.execute("PRAGMA page_count").fetchone()[0]
    s.conn.execute(f"PRAGMA max_page_count = {pages}")
    res = fake_result(runs[0].config)
    res["train_log"] = res["train_log"] * 200  # more rows than the free pages hold
    res["train_log"] = [{**r, "step": i + 1} for i, r in enumerate(res["train_log"])]
    with pytest.raises(DataError, match=r"st.db: cannot write the study database \(database or disk is full\)"):
        with s:
            s.record_result(runs[0].run_id, res)
    reader = Store.open(s.path, readonly=True)
    assert reader.runs([runs[0].run_id])[0]["status"] == "pending"
    reader.close()

"""Scheduling, search, early kill and resume of studies.

Most tests inject a fake run function (cheap); ``test_sigkill_smoke_study_resumes_exactly`` kills the real
smoke study (embedded MiniLM) with SIGKILL at several points and checks that nothing is lost, duplicated or
recomputed, and that the database stays intact.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from stabletune.engine.events import Event
from stabletune.errors import DataError, UserError
from stabletune.study import EarlyKill, load_frames, load_results, run_study, study_status
from stabletune.study.store import Store, utcnow

ROOT = Path(__file__).resolve().parents[1]
GLUE = Path(os.environ.get("STABLETUNE_DATA_DIR") or ROOT.parent / "shared" / "data" / "glue")

STUDY = """
name: rs
base: {max_steps: 6, num_evals: 3}
methods:
  standard: {}
  bertadam: {optimizer: bertadam}
tasks: [rte]
seeds: 3
"""

SEARCH = """
name: sr
base: {max_steps: 6, num_evals: 3}
methods:
  standard: {}
  mixout:
    search: {mixout: [0.1, 0.3, 0.5]}
    search_seeds: 2
tasks: [rte]
seeds: 3
"""


def fake_result(cfg, score: float, *, status: str = "finished", killed_at: int | None = None) -> dict:
    evals = [{"step": s, "epoch": s / 6, "val": {"acc": score + 0.001 * s}, "val_loss": 0.5} for s in (2, 4, 6)]
    if killed_at is not None:
        evals = evals[:killed_at]
    best = max(evals, key=lambda e: e["val"]["acc"])
    return {"status": status, "config": cfg.to_dict(), "seeds": {"seed": cfg.seed}, "num_steps": cfg.max_steps,
            "task": {"name": cfg.task, "labels": ["a", "b"], "metric": "acc"},
            "best": {"step": best["step"], "val": best["val"], "test": {"acc": score}},
            "last": {"step": evals[-1]["step"], "val": evals[-1]["val"], "test": {"acc": score}},
            "train_log": [{"step": s, "loss": 0.1, "lr": 1e-5, "grad_norm": 1.0} for s in range(1, 7)],
            "evals": evals, "timings": {"wall_s": 0.1}, "environment": {}, "error": None}


def score_of(cfg) -> float:
    """A deterministic validation score: better with more mixout, varies with the seed."""
    return 0.5 + cfg.mixout / 2 + 0.01 * cfg.seed


class Recorder:
    """A fake run function that records its calls and can misbehave on chosen calls."""

    def __init__(self, fail_on: dict[int, BaseException] | None = None, diverge: set[int] | None = None):
        self.calls: list = []
        self.fail_on = fail_on or {}
        self.diverge = diverge or set()

    def __call__(self, cfg, out_dir=None, *, callback=None):
        n = len(self.calls)
        self.calls.append(cfg)
        if n in self.fail_on:
            raise self.fail_on[n]
        score = score_of(cfg)
        if callback is not None:
            for i, s in enumerate((2, 4, 6)):
                callback(Event("step", s, 6, loss=0.1))
                if callback(Event("eval", s, 6, score=score + 0.001 * s, val={"acc": score})):
                    return fake_result(cfg, score, status="killed", killed_at=i + 1)
        if n in self.diverge:
            return {**fake_result(cfg, score, status="diverged"), "error": "non-finite training loss nan at step 3"}
        return fake_result(cfg, score)


def pool_fake_run(cfg, out_dir=None, *, callback=None):
    """A picklable fake run for the process-pool backend (reports the worker's pid and torch threads).

    With $CRASH_MARKER set, the first run of seed 1 / bertadam kills its worker process (as the OOM killer would).
    """
    import torch

    marker = os.environ.get("CRASH_MARKER")
    if marker and cfg.seed == 1 and cfg.optimizer == "bertadam" and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    if callback is not None:
        callback(Event("step", 1, 6, loss=0.1))
    res = fake_result(cfg, score_of(cfg))
    res["environment"] = {"pid": os.getpid(), "threads": torch.get_num_threads()}
    return res


@pytest.fixture
def study(tmp_path):
    def make(text: str = STUDY, name: str = "study.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return make


def statuses(db: Path) -> dict[str, str]:
    with Store.open(db, readonly=True) as s:
        return s.statuses()


# ------------------------------------------------------------------------------------------------
# Resume, failures, retries (fake runs, in process)
# ------------------------------------------------------------------------------------------------
def test_interrupted_study_resumes_without_recomputing(study, tmp_path):
    path = study()
    first = Recorder(fail_on={3: KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        run_study(path, backend="inline", run_fn=first, progress=False)
    db = tmp_path / "rs.db"
    st = statuses(db)
    assert sorted(st.values()) == ["finished"] * 3 + ["pending"] * 3  # the interrupted run is pending again
    with Store.open(db, readonly=True) as s:
        done_before = {r["run_id"]: r["finished_at"] for r in s.runs() if r["status"] == "finished"}
    second = Recorder()
    out = run_study(path, backend="inline", run_fn=second, progress=False)
    assert out.ok and out.ran == 3 and len(second.calls) == 3
    with Store.open(db, readonly=True) as s:
        rows = {r["run_id"]: r for r in s.runs()}
    assert len(rows) == 6 and {r["status"] for r in rows.values()} == {"finished"}
    for run_id, finished_at in done_before.items():
        assert rows[run_id]["finished_at"] == finished_at and rows[run_id]["attempts"] == 1
    assert run_study(path, backend="inline", run_fn=Recorder(), progress=False).ran == 0


def test_failed_runs_are_recorded_and_retried_only_when_asked(study, tmp_path):
    path = study()
    rec = Recorder(fail_on={1: RuntimeError("CUDA out of memory")}, diverge={2})
    out = run_study(path, backend="inline", run_fn=rec, progress=False)
    assert len(rec.calls) == 6 and not out.ok
    assert out.counts["failed"] == 1 and out.counts["diverged"] == 1 and out.counts["finished"] == 4
    assert out.failures[0][1] == "RuntimeError: CUDA out of memory"
    df = load_results(path)
    failed = df[df.status == "failed"].iloc[0]
    assert failed["error"] == "RuntimeError: CUDA out of memory" and pd.isna(failed["best_test_acc"])
    assert "non-finite" in df[df.status == "diverged"].iloc[0]["error"]
    again = Recorder()
    assert run_study(path, backend="inline", run_fn=again, progress=False).ran == 0 and not again.calls
    out = run_study(path, backend="inline", run_fn=again, progress=False, retry_failed=True)
    assert len(again.calls) == 1 and out.counts["finished"] == 5 and out.counts["diverged"] == 1 and out.ok
    assert load_results(path).set_index("run_id").loc[failed["run_id"], "attempts"] == 2


def test_user_error_stops_the_study_and_keeps_the_run_pending(study, tmp_path):
    path = study()
    rec = Recorder(fail_on={0: DataError("RTE/train.tsv: row 3 has 2 columns, expected 4")})
    with pytest.raises(UserError, match="row 3 has 2 columns"):
        run_study(path, backend="inline", run_fn=rec, progress=False)
    assert len(rec.calls) == 1
    assert set(statuses(tmp_path / "rs.db").values()) == {"pending"}


def test_status_reports_interrupted_runs(study, tmp_path):
    path = study()
    with pytest.raises(KeyboardInterrupt):
        run_study(path, backend="inline", run_fn=Recorder(fail_on={2: KeyboardInterrupt()}), progress=False)
    with Store.open(tmp_path / "rs.db") as s:  # what a SIGKILLed driver leaves: a run marked running
        s.mark_running(s.runs()[4]["run_id"])
    st = study_status(path)
    assert st["counts"]["finished"] == 2 and st["counts"]["interrupted"] == 1 and st["counts"]["pending"] == 3
    assert not st["live"] and st["mean_run_s"] == pytest.approx(0.1)
    assert st["unplanned"] == 0


def test_status_counts_stored_runs_the_edited_study_no_longer_plans(study, tmp_path):
    path = study()
    assert run_study(path, backend="inline", run_fn=Recorder(), progress=False).ok
    path.write_text(STUDY.replace("base: {max_steps: 6, num_evals: 3}", "base: {max_steps: 8, num_evals: 3}"))
    st = study_status(path)
    assert st["unplanned"] == 6 and st["counts"]["pending"] == 6 and st["counts"]["finished"] == 0


# ------------------------------------------------------------------------------------------------
# Hyperparameter search (Appendix H)
# ------------------------------------------------------------------------------------------------
def test_search_picks_best_mean_validation_and_reuses_search_runs(study, tmp_path):
    path = study(SEARCH)
    rec = Recorder()
    out = run_study(path, backend="inline", run_fn=rec, progress=False)
    assert out.ok and out.total == 3 * 2 + 2 * 3
    # search: 3 candidates x 2 seeds; final: standard 3 seeds + mixout 3 seeds, 2 of them copies
    assert len(rec.calls) == 6 + 3 + 1 and out.copied == 2
    assert out.choices and "mixout=0.5" in out.choices[0]
    df = load_results(path)
    search = df[df.phase == "search"]
    assert len(search) == 6 and set(search.method) == {"mixout"}
    final = df[(df.phase == "final") & (df.method == "mixout")]
    assert len(final) == 3 and set(final.candidate) == {'{"mixout":0.5}'}
    assert final["copied_from"].notna().sum() == 2
    assert all(c.mixout == 0.5 for c in rec.calls[6:] if c.mixout)
    f = load_frames(path)
    assert set(f.runs["method"]) == {"standard", "mixout"} and len(f.runs) == 6
    assert len(load_frames(path, phase="search").runs) == 6


def test_search_ties_go_to_the_first_candidate(study):
    text = SEARCH.replace("search: {mixout: [0.1, 0.3, 0.5]}", "search: {lr: [3.0e-5, 1.0e-5]}")
    out = run_study(study(text), backend="inline", run_fn=Recorder(), progress=False)
    assert "lr=3e-05" in out.choices[0]


def test_search_counts_collapsed_seeds_as_worst(study, tmp_path):
    """A candidate whose seeds collapse (NaN validation score: a constant predictor) must not win the search
    because its collapsed seeds were dropped: they count as 0 (the one NaN rule)."""
    def run(cfg, out_dir=None, *, callback=None):
        res = fake_result(cfg, score_of(cfg))
        if cfg.mixout == 0.5 and cfg.seed == 1:  # the best candidate on seed 0, collapsed on seed 1
            nan = {"acc": float("nan")}
            res["best"] = {**res["best"], "val": nan}
            res["evals"] = [{**e, "val": nan} for e in res["evals"]]
        return res

    out = run_study(study(SEARCH), backend="inline", run_fn=run, progress=False)
    assert out.ok and "mixout=0.3" in out.choices[0], out.choices
    st = study_status(study(SEARCH))
    assert "1 without a score counted as 0" not in st["choices"][0]  # mixout=0.3 had no NaN
    from stabletune.study.spec import load_study
    from stabletune.study.tuning import Planner, candidate_scores

    spec = load_study(tmp_path / "study.yaml")
    with Store.open(tmp_path / "sr.db", readonly=True) as store:
        runs = Planner(spec).search_runs
        scores = candidate_scores(runs, {r["run_id"]: r for r in store.runs(r.run_id for r in runs)})
    collapsed = next(c for c in scores if c.candidate == {"mixout": 0.5})
    assert collapsed.n_nan == 1 and collapsed.mean_val == pytest.approx((0.756 + 0.0) / 2)


def test_frames_carry_each_runs_majority_baseline(study, tmp_path):
    """The baseline a run stored (from its own labels) reaches the analysis, split by split; a run stored without
    one (older stabletune) has NaN there, and the analysis falls back to Table 3."""
    def run(cfg, out_dir=None, *, callback=None):
        res = fake_result(cfg, score_of(cfg))
        if cfg.seed != 2:
            res["data"] = {"split": {"name": "paper-small", "version": 1},
                           "majority_baseline": {"validation": 0.529, "test": 0.5 + 0.01 * cfg.seed}}
        for ck in ("best", "last"):  # a second metric: the stored baseline (main metric, acc) is no threshold for it
            res[ck]["test"]["f1"] = 0.4
        return res

    path = study()
    assert run_study(path, backend="inline", run_fn=run, progress=False).ok
    m = load_frames(path).metrics
    assert m.loc[m.metric == "f1", "majority_baseline"].isna().all() and (m.metric == "f1").sum() == 12
    m = m[m.metric == "acc"]
    test = m[(m.split == "test") & (m.checkpoint == "best")].set_index(["method", "seed"])["majority_baseline"]
    assert test[("standard", 0)] == 0.5 and test[("bertadam", 1)] == 0.51 and pd.isna(test[("standard", 2)])
    assert set(m.loc[(m.split == "val") & (m.seed < 2), "majority_baseline"]) == {0.529}


def test_status_names_runs_of_an_older_split_or_batching_default(study, tmp_path, monkeypatch):
    """Runs stored under paper-1k v1 with grouped batches (the defaults before 2026-12-01) are not reused, and
    `study status` says why."""
    import stabletune.data.splits as splits

    text = STUDY.replace("tasks: [rte]", "tasks: [{task: rte, split: paper-1k}]")
    old = text.replace("num_evals: 3}", "num_evals: 3, group_by_length: true}")
    path = study(old)
    monkeypatch.setitem(splits.SPLIT_VERSIONS, "paper-1k", 1)
    assert run_study(path, backend="inline", run_fn=Recorder(), progress=False).ok
    monkeypatch.setitem(splits.SPLIT_VERSIONS, "paper-1k", 2)
    st = study_status(path)
    assert st["unplanned"] == 6 and st["counts"]["pending"] == 6
    assert st["outdated"] == {"split": {"paper-1k v1 (now v2)": 6}, "grouped": 0}
    path.write_text(text)  # the file as it is now: random batches by default
    st = study_status(path)
    assert st["outdated"] == {"split": {"paper-1k v1 (now v2)": 6}, "grouped": 6}
    from stabletune.cli import main

    assert main(["study", "status", str(path)]) == 0


def test_search_with_no_score_blocks_its_final_runs(study, tmp_path):
    path = study(SEARCH)
    rec = Recorder(fail_on={i: RuntimeError("boom") for i in range(6)})
    out = run_study(path, backend="inline", run_fn=rec, progress=False)
    assert out.blocked == [("mixout", "rte")] and not out.ok
    assert len(rec.calls) == 6 + 3  # the search, then standard's final runs
    st = study_status(path)
    assert st["blocked"] == [("mixout", "rte")] and st["counts"]["pending"] == 3
    out = run_study(path, backend="inline", run_fn=Recorder(), progress=False, retry_failed=True)
    assert out.ok and not out.blocked


# ------------------------------------------------------------------------------------------------
# Early kill (Dodge et al., 2020)
# ------------------------------------------------------------------------------------------------
def test_early_kill_stops_runs_below_their_peers(study, tmp_path):
    text = STUDY.replace("seeds: 3", "seeds: 6").replace("  bertadam: {optimizer: bertadam}\n", "")
    path = study(text)

    def run_fn(cfg, out_dir=None, *, callback=None):  # seeds 2 and 4 are bad
        score = 0.3 if cfg.seed in (2, 4) else 0.6 + 0.01 * cfg.seed
        for i, s in enumerate((2, 4, 6)):
            if callback(Event("eval", s, 6, score=score, val={"acc": score})):
                return fake_result(cfg, score, status="killed", killed_at=i + 1)
        return {**fake_result(cfg, score), "evals": [{"step": s, "epoch": 1, "val": {"acc": score}} for s in (2, 4, 6)]}

    out = run_study(path, backend="inline", run_fn=run_fn, progress=False,
                    early_kill=EarlyKill(at_eval=2, quantile=0.25, min_peers=2))
    df = load_results(path).set_index("seed")
    assert list(df["status"]) == ["finished", "finished", "killed", "finished", "killed", "finished"]
    assert df.loc[2, "last_step"] == 4 and out.ok
    # the default: no early kill
    path2 = study(text.replace("name: rs", "name: rs2"), "b.yaml")
    run_study(path2, backend="inline", run_fn=run_fn, progress=False)
    assert set(load_results(path2)["status"]) == {"finished"}


def test_early_kill_threshold():
    ek = EarlyKill(quantile=None, threshold=0.55)
    assert ek.threshold_for([]) == 0.55
    ek = EarlyKill(quantile=0.5, threshold=0.1, min_peers=3)
    assert ek.threshold_for([0.2, 0.4]) == 0.1
    assert ek.threshold_for([0.2, 0.4, 0.6]) == pytest.approx(0.4)
    with pytest.raises(Exception, match="quantile"):
        EarlyKill(quantile=1.5)


# ------------------------------------------------------------------------------------------------
# The process pool
# ------------------------------------------------------------------------------------------------
def test_local_backend_runs_in_spawned_workers(study, tmp_path, monkeypatch):
    path = study()
    monkeypatch.setenv("CRASH_MARKER", str(tmp_path / "crashed"))
    out = run_study(path, backend="local", workers=2, run_fn=pool_fake_run, quiet=True)
    assert "2 concurrent run(s) x 1 thread(s)" in out.backend
    # a dead worker fails its run (and the pool's other run in flight); the study goes on with a fresh pool
    assert 1 <= out.counts["failed"] <= 2 and out.counts["finished"] == 6 - out.counts["failed"]
    assert all("worker process died" in err for _, err in out.failures)
    out = run_study(path, backend="local", workers=2, run_fn=pool_fake_run, quiet=True, retry_failed=True)
    assert out.ok and out.counts["finished"] == 6
    with Store.open(tmp_path / "rs.db", readonly=True) as s:
        envs = [__import__("json").loads(r["environment"]) for r in s.runs()]
    assert {e["pid"] for e in envs} - {os.getpid()}, "runs happen in worker processes"
    assert os.getpid() not in {e["pid"] for e in envs}
    assert {e["threads"] for e in envs} == {max(1, (len(os.sched_getaffinity(0))) // 2)}


def test_local_backend_survives_a_worker_dying_before_the_next_submit(tmp_path, monkeypatch):
    """A worker killed between wait() and submit() (the OOM killer) fails its run; the next submit goes to a
    fresh pool instead of raising BrokenProcessPool out of the study driver."""
    import concurrent.futures as cf

    from stabletune.config import make_config
    from stabletune.study.backends import LocalBackend

    monkeypatch.setenv("CRASH_MARKER", str(tmp_path / "crashed"))
    doomed = make_config({"task": "rte", "seed": 1, "optimizer": "bertadam"}).to_dict()
    fine = make_config({"task": "rte", "seed": 2, "optimizer": "bertadam"}).to_dict()
    backend = LocalBackend(1, 1, pool_fake_run)
    try:
        backend.submit({"run_id": "doomed", "config": doomed})
        cf.wait(list(backend._futures))  # the worker has died and the pool knows it: the race, made certain
        backend.submit({"run_id": "fine", "config": fine})
        outcomes = {}
        while len(outcomes) < 2:
            outcomes.update({o["run_id"]: o for o in backend.wait(timeout=60)})
    finally:
        backend.close()
    assert not outcomes["doomed"]["ok"] and "worker process died" in outcomes["doomed"]["error"]
    assert outcomes["fine"]["ok"], outcomes["fine"]


def test_default_workers_and_gpu_assignment():
    import multiprocessing as mp

    from stabletune.study.backends import WORKERS_PER_GPU, assign_gpu, default_workers, threads_per_worker

    assert [default_workers(c, gpus=0) for c in (1, 2, 4, 8, 16)] == [1, 2, 4, 2, 4]
    assert default_workers(16, gpus=2) == 2 * WORKERS_PER_GPU == 4
    assert threads_per_worker(2, 2) == 1 and threads_per_worker(4, 16) == 4 and threads_per_worker(8, 2) == 1
    counter = mp.get_context("spawn").Value("i", 0)
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        assert [assign_gpu(counter, ["3", "5"]) for _ in range(3)] == ["3", "5", "3"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        assert assign_gpu(counter, []) is None
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old

# ------------------------------------------------------------------------------------------------
# SIGKILL at known points, and at random points on top (fake runs with large curves)
# ------------------------------------------------------------------------------------------------
# The study runs in a child process whose hooks report where it is (a file in SYNC_DIR) and, at the point named
# by STOP_AT, block until the test kills them: the kill lands exactly there, however fast the machine is.
BIG_FAKE = textwrap.dedent('''
    import contextlib
    import os
    import time
    from pathlib import Path

    from stabletune.study.store import Store, utcnow

    SYNC = Path(os.environ["SYNC_DIR"])
    STOP_AT = os.environ.get("STOP_AT", "")
    counts = {}


    def reached(point):
        """Count this point; say so once the count is reached; block there if it is STOP_AT."""
        counts[point] = counts.get(point, 0) + 1
        name = f"{point}:{counts[point]}"
        (SYNC / name).touch()
        if name == STOP_AT:
            while True:  # until SIGKILL
                time.sleep(60)


    def big_run(cfg, out_dir=None, *, callback=None):
        reached("start")  # the run has begun, its result is not stored yet
        n = 40000
        ev = [{"step": s, "epoch": 1.0, "val": {"acc": 0.5 + s / 1e6}, "val_loss": 0.5,
               "param_distance": [0.1] * 8} for s in range(100, n + 1, 100)]
        return {"status": "finished", "config": cfg.to_dict(), "seeds": {}, "num_steps": n,
                "task": {"name": "rte", "labels": ["a", "b"], "metric": "acc"},
                "best": {"step": n, "val": ev[-1]["val"], "test": {"acc": 0.5}},
                "last": {"step": n, "val": ev[-1]["val"], "test": {"acc": 0.5}},
                "train_log": [{"step": s, "loss": 0.1, "lr": 1e-5, "grad_norm": 1.0} for s in range(1, n + 1)],
                "evals": ev, "timings": {"wall_s": 0.01}, "environment": {}, "error": None}


    class _Conn:
        """The store's connection, reporting 'write' once a result's training curve is inserted (uncommitted)."""

        def __init__(self, conn):
            self._conn = conn

        def __getattr__(self, name):
            return getattr(self._conn, name)

        def executemany(self, sql, rows):
            out = self._conn.executemany(sql, rows)
            if sql.startswith("INSERT INTO train_loss"):
                reached("write")
            return out


    _transaction = Store.transaction
    _record = Store.record_result


    @contextlib.contextmanager
    def transaction(self):
        with _transaction(self) as c:
            yield _Conn(c)


    def record_result(self, *args, **kwargs):
        ok = _record(self, *args, **kwargs)
        reached("stored")  # committed; the next run has not begun
        return ok


    Store.transaction = transaction
    Store.record_result = record_result
''')


def check_db(db: Path, expect_steps: int | None = None) -> dict[str, sqlite3.Row]:
    """integrity_check ok; every run once; a run holds curves exactly when it holds a result."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT * FROM runs").fetchall()
        assert len({r["run_id"] for r in rows}) == len(rows)
        for r in rows:
            n = conn.execute("SELECT count(*) FROM train_loss WHERE run_id = ?", (r["run_id"],)).fetchone()[0]
            m = conn.execute("SELECT count(*) FROM test_metrics WHERE run_id = ?", (r["run_id"],)).fetchone()[0]
            if r["status"] == "finished":
                assert n == (expect_steps or r["num_steps"]) and m > 0, dict(r)
            else:
                assert n == 0 and m == 0, dict(r)
        return {r["run_id"]: r for r in rows}
    finally:
        conn.close()


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 300.0) -> None:
    """Wait until the child reports ``path`` (an event). The limit only turns a hang into a failure."""
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"study ended before {path.name}: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, f"no {path.name} after {limit:.0f} s"
        time.sleep(0.01)


def test_sigkill_at_known_and_random_points_never_corrupts(tmp_path):
    (tmp_path / "bigfake.py").write_text(BIG_FAKE)
    path = tmp_path / "k.yaml"
    path.write_text(STUDY.replace("name: rs", "name: k").replace("seeds: 3", "seeds: 8"))
    script = (f"import bigfake\nfrom stabletune.study import run_study\n"
              f"run_study({str(path)!r}, backend='inline', run_fn=bigfake.big_run, progress=False)\n")
    db = tmp_path / "k.db"
    finished: dict[str, str] = {}
    syncs = iter(range(1000))

    def study_env(stop_at: str) -> dict:
        sync = tmp_path / f"sync-{next(syncs)}"
        sync.mkdir()
        return {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "SYNC_DIR": str(sync), "STOP_AT": stop_at}

    def kill_at(point: str, *, extra_s: float | None = None) -> tuple[dict, int]:
        """Start the study, SIGKILL it at ``point`` (or ``extra_s`` seconds after it: a random moment)."""
        env = study_env("" if extra_s is not None else point)
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for(Path(env["SYNC_DIR"]) / point, proc)
            if extra_s is not None:
                time.sleep(extra_s)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stderr.close()
        rows = check_db(db, expect_steps=40000)
        for run_id, at in finished.items():  # results, once written, never change
            assert rows[run_id]["status"] == "finished" and rows[run_id]["finished_at"] == at
        now_done = {k: r["finished_at"] for k, r in rows.items() if r["status"] == "finished"}
        new = len(now_done) - len(finished)
        finished.update(now_done)
        return rows, new

    rows, new = kill_at("start:1")  # before any run is stored: the first run has begun
    assert len(rows) == 16 and new == 0
    rows, new = kill_at("write:2")  # during a write: the 2nd result's curves inserted, not committed
    assert new == 1  # ... rolled back: only the 1st result is there, nothing half-written
    rows, new = kill_at("stored:3")  # between runs: the 3rd result committed, the next run not begun
    assert new == 3
    rows, new = kill_at("start:2")  # mid-run: the 2nd run of this process has begun
    assert new == 1 and len(finished) == 5
    rng = random.Random(0)  # and at random moments on top, once the study is under way
    for _ in range(3):
        if len(finished) < 16:
            kill_at("start:1", extra_s=rng.uniform(0.0, 1.5))
    proc = subprocess.run([sys.executable, "-c", script], env=study_env(""), cwd=tmp_path, capture_output=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    rows = check_db(db, expect_steps=40000)
    assert len(rows) == 16 and {r["status"] for r in rows.values()} == {"finished"}
    for run_id, at in finished.items():
        assert rows[run_id]["finished_at"] == at


# ------------------------------------------------------------------------------------------------
# The real thing: SIGKILL the smoke study (embedded MiniLM) at several points, then finish it
# ------------------------------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids |= {int(x) for x in f.read().split()}
    except OSError:
        pass
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def _poll(db: Path) -> list[sqlite3.Row]:
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute("SELECT run_id, status, started_at, finished_at FROM runs").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # schema not created yet
        return []


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not (GLUE / "RTE" / "train.tsv").is_file(), reason="GLUE data (../shared/data/glue) missing")
def test_sigkill_smoke_study_resumes_exactly(tmp_path):
    study = tmp_path / "smoke.yaml"
    study.write_text((ROOT / "studies" / "smoke.yaml").read_text())
    db = tmp_path / "smoke.db"
    cmd = [sys.executable, "-m", "stabletune", "study", "run", str(study), "--db", str(db), "--data-dir", str(GLUE),
           "--workers", "2", "--quiet"]
    kept: dict[str, tuple] = {}  # run_id -> (finished_at, attempts) of every run seen finished

    def kill_when(cond, what: str, limit: float = 240.0) -> None:
        kill_when.started = utcnow()
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        workers: set[int] = set()
        while True:
            rows = _poll(db)
            workers |= _children(proc.pid)
            if cond(rows):
                break
            assert proc.poll() is None, f"study ended before {what}: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() - t0 < limit, f"timed out waiting for {what}"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
        deadline = time.monotonic() + 15  # the workers notice their driver is gone and exit
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "worker processes outlived their killed driver"
        rows = check_db(db)
        assert len(rows) == 6
        for run_id, (at, attempts) in kept.items():
            assert rows[run_id]["status"] == "finished", what
            assert (rows[run_id]["finished_at"], rows[run_id]["attempts"]) == (at, attempts), what
        kept.update({k: (r["finished_at"], r["attempts"]) for k, r in rows.items() if r["status"] == "finished"})

    def n_done(rows) -> int:
        return sum(r["status"] == "finished" for r in rows)

    kill_when(lambda rows: n_done(rows) >= 1, "1 finished run")
    kill_when(lambda rows: n_done(rows) >= 3, "3 finished runs")
    before = len(kept)

    kill_when(lambda rows: any(r["status"] == "running" and r["started_at"] > kill_when.started for r in rows),
              "a run in progress")  # one this driver started: stale 'running' rows of the killed one don't count
    assert len(kept) < 6 and len(kept) >= before

    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = check_db(db)
    assert len(rows) == 6 and {r["status"] for r in rows.values()} == {"finished"}
    for run_id, (at, attempts) in kept.items():  # not recomputed
        assert (rows[run_id]["finished_at"], rows[run_id]["attempts"]) == (at, attempts)
    assert sum(r["attempts"] > 1 for r in rows.values()) >= 1  # interrupted runs were redone

    out = tmp_path / "smoke.csv"
    exp = subprocess.run([sys.executable, "-m", "stabletune", "study", "export", str(study), "--db", str(db),
                          "--format", "csv", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert exp.returncode == 0, exp.stderr
    df = pd.read_csv(out)
    assert len(df) == 6 and df["run_id"].is_unique and set(df["status"]) == {"finished"}
    assert df["best_test_acc"].between(0, 1).all() and df["last_test_acc"].between(0, 1).all()
    assert set(df["method"]) == {"bertadam", "adamw"} and sorted(df["seed"]) == [0, 0, 1, 1, 2, 2]
    st = subprocess.run([sys.executable, "-m", "stabletune", "study", "status", str(study), "--db", str(db)],
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0 and "6/6 done" in st.stdout

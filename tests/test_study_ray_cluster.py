"""A study on a local two-node Ray cluster that loses a node mid-study; joining a cluster that is not there or
refuses the driver's token.

Every cluster here runs on loopback only: its nodes are started with ``node_ip_address 127.0.0.1`` and
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which keeps Ray from replacing 127.0.0.1 by the machine's own network
address when it resolves one; ``RAY_TMPDIR`` and ``HOME`` point into the test's folder (sessions, sockets,
``~/.ray/auth_token``), so nothing outside it is read or written. Runs are fake (no training): the test is about
scheduling, retries and storage, not models. Synchronisation is on events (files the runs create, the exit of the
study process), never on sleeps.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from stabletune.errors import UserError

HAVE_RAY = importlib.util.find_spec("ray") is not None
#: Skipped only where Ray is not installed AND this is not CI (``CI`` unset): in CI they must run.
needs_ray = pytest.mark.skipif(not HAVE_RAY and not os.environ.get("CI"), reason="ray not installed (pip install ray)")

STUDY = """
name: tn
base: {max_steps: 6, num_evals: 3}
methods:
  standard: {}
  bertadam: {optimizer: bertadam}
tasks: [rte]
seeds: 3
"""

# The run function, imported by the Ray workers of both nodes (PYTHONPATH): a result from the config alone; on the
# node named in SYNC_DIR/victim it says so (a file) and blocks until the test kills that node.
FAKE = textwrap.dedent('''
    import os
    import time
    import uuid
    from pathlib import Path


    def result(cfg):
        score = 0.5 + 0.01 * cfg.seed + (0.05 if cfg.optimizer == "adamw" else 0.0)
        evals = [{"step": s, "epoch": s / 6, "val": {"acc": score}, "val_loss": 0.5} for s in (2, 4, 6)]
        point = {"step": 6, "val": {"acc": score}, "test": {"acc": score}}
        return {"status": "finished", "config": cfg.to_dict(), "seeds": {"seed": cfg.seed}, "num_steps": 6,
                "task": {"name": cfg.task, "labels": ["entailment", "not_entailment"], "metric": "acc"},
                "best": point, "last": point, "evals": evals, "error": None, "environment": {},
                "train_log": [{"step": s, "loss": 0.1, "lr": 1e-5, "grad_norm": 1.0} for s in range(1, 7)],
                "timings": {"wall_s": 0.1}}


    def run(cfg, out_dir=None, *, callback=None):
        sync = Path(os.environ["SYNC_DIR"])
        victim = sync / "victim"
        if victim.exists():
            import ray

            if ray.get_runtime_context().get_node_id() == victim.read_text():
                (sync / f"on-victim-{uuid.uuid4().hex}").touch()
                while True:  # until the node is killed
                    time.sleep(60)
        return result(cfg)
''')

# The study process: a head (1 CPU) and a second node (2 CPUs) on 127.0.0.1, the study on both (3 runs at once);
# once a run blocks on node 2, node 2 is killed (raylet and workers, SIGKILL).
DRIVER = textwrap.dedent('''
    import json
    import os
    import sys
    import time
    from pathlib import Path

    from ray.cluster_utils import Cluster

    import fake
    from stabletune.study import run_study

    sync = Path(os.environ["SYNC_DIR"])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                             "include_dashboard": False})
    node2 = cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    (sync / "victim").write_text(node2.node_id)


    def kill_node2_once_a_run_blocks_there():
        while not any(p.name.startswith("on-victim-") for p in sync.iterdir()):
            time.sleep(0.01)  # polls for the event (a file), no timing window
        cluster.remove_node(node2, allow_graceful=False)
        (sync / "killed").touch()


    import threading

    threading.Thread(target=kill_node2_once_a_run_blocks_there, daemon=True).start()
    out = run_study(sys.argv[1], db=sys.argv[2], backend="ray", ray_address=cluster.address, run_fn=fake.run,
                    workers=3, quiet=True)
    print(json.dumps({"counts": out.counts, "failures": out.failures, "ran": out.ran, "ok": out.ok}), flush=True)
    cluster.shutdown()
''')

HOST = textwrap.dedent('''
    import sys

    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                             "include_dashboard": False})
    print(cluster.address, flush=True)
    sys.stdin.readline()  # until the test says stop
    cluster.shutdown()
''')


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_tmp():
    """A short folder for Ray's sessions and sockets (Unix socket paths are limited to ~107 bytes), removed after."""
    path = tempfile.mkdtemp(prefix="st-ray-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ray_env(tmp: Path, ray_tmp: str, **extra: str) -> dict:
    """An environment whose Ray stays on 127.0.0.1, in ``tmp`` (HOME) and ``ray_tmp`` (RAY_TMPDIR)."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"HOME": str(home), "RAY_TMPDIR": ray_tmp,
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **extra})
    return env


def study_cli(study: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stabletune", "study", "run", str(study), "--backend", "ray",
                           "--quiet", *args], cwd=study.parent, capture_output=True, text=True, timeout=180, env=env)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------
# Joining a cluster (no cluster needed for most)
# ------------------------------------------------------------------------------------------------
@pytest.mark.ray
@needs_ray
def test_unreachable_ray_address_is_one_line_and_writes_nothing(tmp_path, ray_tmp):
    """Nothing listens there: refused in one line (exit 2) before the study writes anything; Ray is never asked
    (so no other address is tried)."""
    study = tmp_path / "tn.yaml"
    study.write_text(STUDY)
    address = f"127.0.0.1:{free_port()}"
    proc = study_cli(study, "--ray-address", address, "--db", str(tmp_path / "tn.db"), env=ray_env(tmp_path, ray_tmp))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = stderr_lines(proc)
    assert len(lines) == 1 and address in lines[0] and "refused" in lines[0].lower(), lines
    assert not (tmp_path / "tn.db").exists()


def test_ray_address_must_be_host_and_port():
    from stabletune.study.backends import check_ray_address, split_ray_address

    assert split_ray_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert split_ray_address("ray://head:10001") == ("head", 10001)
    assert split_ray_address("[::1]:6379") == ("::1", 6379)
    assert split_ray_address("auto") is None
    for bad in ("10.0.0.5", "head:port", ":6379", "head:0", "head:70000"):
        with pytest.raises(UserError, match="expected HOST:PORT"):
            check_ray_address(bad)


class _FakeRay:
    """Stands for the ray module in join_ray_cluster: init() writes Ray-like noise to fd 2, then blocks until
    ``release`` or raises ``error``."""

    def __init__(self, error: BaseException | None = None):
        self.error = error
        self.release = threading.Event()

    def init(self, **kwargs):
        os.write(2, b"[W gcs_client.cc:210] Failed to get cluster ID from GCS server\n" * 20)
        if self.error is not None:
            raise self.error
        self.release.wait()


@pytest.fixture
def listener():
    """A TCP port on 127.0.0.1 that accepts connections (the TCP check passes; what Ray does next is faked)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def test_a_cluster_that_never_lets_the_driver_join_times_out_in_one_line(listener, capfd):
    from stabletune.study.backends import join_ray_cluster

    ray = _FakeRay()
    try:
        with pytest.raises(UserError, match=r"did not connect within 0\.2 s") as e:
            join_ray_cluster(ray, listener, {}, timeout=0.2)  # init() blocks until released: the bound decides
    finally:
        ray.release.set()
    assert listener in str(e.value) and "\n" not in str(e.value)
    assert "gcs_client" not in capfd.readouterr().err  # Ray's noise is held back


def test_refused_token_is_one_line_with_the_fix(listener, capfd):
    from stabletune.study.backends import join_ray_cluster

    try:
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: Unauthenticated: RPC error: "
                               "InvalidAuthToken: Authentication token is missing or incorrect")
        except RuntimeError as cause:
            raise ConnectionError(f"Failed to connect to Ray cluster at {listener}") from cause
    except ConnectionError as err:
        error = err
    with pytest.raises(UserError, match="RAY_AUTH_MODE=token") as e:
        join_ray_cluster(_FakeRay(error), listener, {}, timeout=30)
    assert listener in str(e.value) and "\n" not in str(e.value)
    assert "gcs_client" not in capfd.readouterr().err


@pytest.mark.ray
@needs_ray
def test_cluster_with_token_auth_refuses_a_driver_without_token_in_one_line(tmp_path, ray_tmp):
    """Ray 2.60: `ray start --head` turns token auth on where ~/.ray/auth_token exists; a driver given an explicit
    address does not send it. The real refusal (about 20 Ray warnings over 20 s) becomes one line with the fix."""
    env = ray_env(tmp_path, ray_tmp)
    token = Path(env["HOME"]) / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("st-test-token-0123456789abcdef")
    (tmp_path / "host.py").write_text(HOST)
    host = subprocess.Popen([sys.executable, str(tmp_path / "host.py")], env={**env, "RAY_AUTH_MODE": "token"},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = host.stdout.readline().strip()  # the event: the head is up
        assert address.startswith("127.0.0.1:"), address
        study = tmp_path / "tn.yaml"
        study.write_text(STUDY)
        proc = study_cli(study, "--ray-address", address, "--db", str(tmp_path / "tn.db"), env=env)
    finally:
        host.stdin.write("stop\n")
        host.stdin.close()
        host.wait(timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = stderr_lines(proc)
    assert len(lines) == 1 and address in lines[0] and "RAY_AUTH_MODE=token" in lines[0], lines


# ------------------------------------------------------------------------------------------------
# Losing a node mid-study
# ------------------------------------------------------------------------------------------------
def _rows(db: Path) -> tuple[list[sqlite3.Row], dict[str, int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
        curves = dict(conn.execute("SELECT run_id, count(*) FROM train_loss GROUP BY run_id").fetchall())
        return rows, curves
    finally:
        conn.close()


@pytest.mark.ray
@needs_ray
def test_study_survives_losing_a_ray_node(tmp_path, ray_tmp):
    (tmp_path / "fake.py").write_text(FAKE)
    (tmp_path / "driver.py").write_text(DRIVER)
    study = tmp_path / "tn.yaml"
    study.write_text(STUDY)
    sync = tmp_path / "sync"
    sync.mkdir()
    db = tmp_path / "tn.db"
    env = ray_env(tmp_path, ray_tmp, SYNC_DIR=str(sync), RAY_AUTH_MODE="disabled")
    proc = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(study), str(db)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (sync / "killed").exists(), "node 2 was never killed"
    lost = len(list(sync.glob("on-victim-*")))
    assert lost >= 1
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"] and not out["failures"] and out["counts"]["finished"] == 6 and out["counts"]["failed"] == 0
    retried = [line for line in proc.stderr.splitlines() if "lost with its node or worker (" in line]
    # one line per run lost: those that had begun on node 2, and any leased there whose worker had not begun yet
    assert lost <= len(retried) == len(set(retried)), proc.stderr[-4000:]
    assert all("(NodeDiedError): retrying (1/2)" in line for line in retried), retried
    # every run stored exactly once, each with one training curve
    rows, curves = _rows(db)
    assert len(rows) == 6 and len({r["run_id"] for r in rows}) == 6
    assert {r["status"] for r in rows} == {"finished"} and all(curves[r["run_id"]] == 6 for r in rows)
    # ... and the results of an uninterrupted run (inline, the same run function)
    sys.path.insert(0, str(tmp_path))
    try:
        import fake

        from stabletune.study import load_results, run_study

        os.environ["SYNC_DIR"] = str(tmp_path / "no-victim")
        ref_db = tmp_path / "ref.db"
        run_study(study, db=ref_db, backend="inline", run_fn=fake.run, progress=False)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fake", None)
        os.environ.pop("SYNC_DIR", None)
    cols = ["run_id", "method", "seed", "status", "best_val_acc", "best_test_acc", "last_test_acc"]
    got = load_results(study, db=db)[cols].sort_values("run_id").reset_index(drop=True)
    want = load_results(study, db=ref_db)[cols].sort_values("run_id").reset_index(drop=True)
    assert got.equals(want), (got, want)


# ------------------------------------------------------------------------------------------------
# A second driver on the same study (any backend; here inline, in threads: the lock is an flock, per open file)
# ------------------------------------------------------------------------------------------------
def test_a_second_driver_is_refused_and_stores_nothing_twice(tmp_path):
    from stabletune.study import run_study

    (tmp_path / "fake.py").write_text(FAKE)
    sys.path.insert(0, str(tmp_path))
    try:
        import fake
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fake", None)
    study = tmp_path / "tn.yaml"
    study.write_text(STUDY)
    db = tmp_path / "tn.db"
    started, release = threading.Event(), threading.Event()

    def first_run(cfg, out_dir=None, *, callback=None):
        started.set()
        release.wait()  # holds the first driver inside its first run until the second one has been refused
        return fake.result(cfg)

    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(out=run_study(study, db=db, backend="inline",
                                                                        run_fn=first_run, progress=False)))
    thread.start()
    try:
        assert started.wait(120)
        with pytest.raises(UserError, match="in use"):
            run_study(study, db=db, backend="inline", run_fn=first_run, progress=False)
    finally:
        release.set()
        thread.join(120)
    assert first["out"].ok and first["out"].ran == 6
    rows, curves = _rows(db)
    assert len(rows) == 6 and len({r["run_id"] for r in rows}) == 6 and all(curves[r["run_id"]] == 6 for r in rows)

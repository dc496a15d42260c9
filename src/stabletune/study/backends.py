"""Where a study's runs execute: in the driver (``inline``), a local process pool (``local``) or Ray (``ray``).

Every backend runs :func:`execute` on a job ``{"run_id", "config" (RunConfig dict), "kill"}`` and hands back
an outcome dict (``RunResult.to_dict()`` or the error). Backends never touch the study database: only the
driver writes SQLite.

Threads: on this project's 2-core machine, 2 processes x 1 torch thread gave 20-27 % more throughput than
1 process x 2 threads, so :func:`default_workers` prefers processes (one per core up to 4 cores, then
4-thread workers) and each worker sets ``torch.set_num_threads(cores // workers)``. With NVIDIA GPUs the local
pool runs :data:`WORKERS_PER_GPU` workers per GPU, each seeing only its own (``CUDA_VISIBLE_DEVICES``): one
MiniLM-sized run leaves an H200 mostly idle, and on one H200 (8 CoLA seeds, benchmarks/gpu_study.py) 2 workers
ran the study 1.45x faster than 1 worker, and 2 workers x ensembles of 4 seeds 1.75-2.1x (docs/performance.md).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import queue as _queue
import socket
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable

from stabletune.engine.events import Event
from stabletune.errors import UserError

RunFn = Callable[..., Any]
Sink = Callable[[tuple], None]

#: Seconds between progress messages of one run (evaluations are always sent).
PROGRESS_INTERVAL = 1.0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """NVIDIA GPUs this process may use (CUDA_VISIBLE_DEVICES, else /proc/driver/nvidia), without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


#: Concurrent jobs per GPU (measured on an H200, docs/performance.md).
WORKERS_PER_GPU = 2


def default_workers(cores: int | None = None, gpus: int | None = None) -> int:
    """Concurrent jobs for the local backend: :data:`WORKERS_PER_GPU` per GPU if there are GPUs; else one per
    core up to 4 cores, then one per 4 cores."""
    gpus = len(visible_gpus()) if gpus is None else gpus
    if gpus:
        return gpus * WORKERS_PER_GPU
    cores = cores or available_cores()
    return cores if cores <= 4 else max(1, cores // 4)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or available_cores()) // max(1, workers))


# ------------------------------------------------------------------------------------------------
# The worker side
# ------------------------------------------------------------------------------------------------
def execute(job: dict, run_fn: RunFn | None = None, sink: Sink | None = None) -> dict:
    """Run one job and return its outcome (never raises for a failing run).

    Args:
        job: ``{"run_id", "config": RunConfig dict, "kill": {"at_eval", "threshold"} | None}``; a job with
            ``"members": [{"run_id", "config"}, ...]`` trains those runs at once (see :func:`execute_group`).
        run_fn: ``train(cfg, out_dir, *, callback)``, calling back with :class:`~stabletune.engine.events.Event`;
            default :func:`stabletune.training.train`.
        sink: receives ``(run_id, step, total, score)`` progress tuples.

    Returns:
        ``{"run_id", "ok", "result" | "error", "user_error", "started_at", "host", "pid"}``.
    """
    if job.get("members"):
        return execute_group(job, sink)
    from stabletune.config import RunConfig

    run_id = job["run_id"]
    base = _outcome_base(run_id)
    kill = job.get("kill")
    state = {"evals": 0, "sent": 0.0}

    def callback(event: Event) -> bool:
        now = time.monotonic()
        if event.kind == "eval":
            state["evals"] += 1
            score = event.score
            if sink:
                sink((run_id, event.step, event.total, score))
            if kill and state["evals"] == kill["at_eval"]:
                return not (score is not None and score >= kill["threshold"])  # NaN counts as below
        elif sink and now - state["sent"] >= PROGRESS_INTERVAL:
            state["sent"] = now
            sink((run_id, event.step, event.total, None))
        return False

    try:
        if run_fn is None:
            from stabletune.training import train as run_fn
        cfg = RunConfig(**job["config"]).validate()
        result = run_fn(cfg, None, callback=callback)
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        return {**base, "ok": True, "result": data}
    except Exception as e:  # a failed run is a result of the study, not a crash of it
        return {**base, **_failure(e)}


def execute_group(job: dict, sink: Sink | None = None) -> dict:
    """Train a job's member runs as one vectorised ensemble (:func:`stabletune.training.train_ensemble`).

    Returns ``{"run_id": job id, "group": [one outcome per member, as :func:`execute` returns it]}``; when the
    ensemble fails, every member carries the failure.
    """
    from stabletune.config import RunConfig

    ids = [m["run_id"] for m in job["members"]]
    bases = [_outcome_base(i) for i in ids]
    sent = [0.0] * len(ids)

    def callback(event: Event) -> bool:
        if sink is None:
            return False
        run_id = ids[event.member]
        if event.kind == "eval":
            sink((run_id, event.step, event.total, event.score))
        elif time.monotonic() - sent[event.member] >= PROGRESS_INTERVAL:
            sent[event.member] = time.monotonic()
            sink((run_id, event.step, event.total, None))
        return False

    try:
        from stabletune.training import train_ensemble

        cfgs = [RunConfig(**m["config"]).validate() for m in job["members"]]
        results = train_ensemble(cfgs, [None] * len(cfgs), callback=callback)
        return {"run_id": job["run_id"],
                "group": [{**b, "ok": True, "result": r.to_dict()} for b, r in zip(bases, results)]}
    except Exception as e:  # every member fails with the ensemble
        fail = _failure(e)
        return {"run_id": job["run_id"], "group": [{**b, **fail} for b in bases]}


def _outcome_base(run_id: str) -> dict:
    from stabletune.study.store import utcnow

    return {"run_id": run_id, "started_at": utcnow(), "host": socket.gethostname(), "pid": os.getpid()}


def _failure(e: Exception) -> dict:
    from stabletune.errors import UserError as _UserError

    return {"ok": False, "error": f"{type(e).__name__}: {e}", "user_error": isinstance(e, _UserError),
            "traceback": traceback.format_exc()}


# --- local process pool ---------------------------------------------------------------------------
_worker_sink: Any = None


def assign_gpu(counter: Any, gpu_ids: list[str]) -> str | None:
    """Give this worker the next GPU of ``gpu_ids`` round-robin (CUDA_VISIBLE_DEVICES, before torch loads)."""
    if not gpu_ids:
        return None
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    gpu = gpu_ids[index % len(gpu_ids)]
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def _init_worker(progress_queue: Any, threads: int, parent_pid: int, counter: Any = None,
                 gpu_ids: list[str] | None = None) -> None:
    """Pool initializer: a GPU of its own, torch threads, the progress queue, and exit when the driver dies
    (even by SIGKILL)."""
    global _worker_sink
    _worker_sink = progress_queue
    if counter is not None:
        assign_gpu(counter, gpu_ids or [])
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass

    def watchdog() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watchdog, daemon=True, name="stabletune-watchdog").start()


def _pool_execute(job: dict, run_fn: RunFn | None) -> dict:
    def sink(msg: tuple) -> None:
        try:
            _worker_sink.put_nowait(msg)
        except Exception:  # progress is best effort
            pass
    return execute(job, run_fn, sink if _worker_sink is not None else None)


# ------------------------------------------------------------------------------------------------
# The driver side
# ------------------------------------------------------------------------------------------------
class Backend:
    """Submit jobs, collect outcomes. ``capacity`` = runs in flight at once."""

    name = "backend"
    capacity = 1
    threads = 1

    @property
    def uses_gpu(self) -> bool:
        """Whether runs execute on a GPU (decides the study's default ensemble size)."""
        return False

    def start(self) -> None:  # pragma: no cover - interface
        pass

    def submit(self, job: dict) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def wait(self, timeout: float) -> list[dict]:  # pragma: no cover - interface
        raise NotImplementedError

    def progress(self) -> list[tuple]:
        return []

    def notices(self) -> list[tuple[str, str]]:
        """``(job run_id, text)`` for the driver to print, e.g. a run resubmitted after its node was lost."""
        return []

    def close(self, cancel: bool = False) -> None:
        pass

    def describe(self) -> str:
        return f"{self.name}: {self.capacity} concurrent run(s) x {self.threads} thread(s)"


class InlineBackend(Backend):
    """Runs each job in the driver process, one at a time (``--workers 0``: debugging, tests)."""

    name = "inline"

    def __init__(self, run_fn: RunFn | None = None, threads: int | None = None, sink: Sink | None = None):
        self.run_fn = run_fn
        self.threads = threads or available_cores()
        self.sink = sink
        self._done: list[dict] = []

    @property
    def uses_gpu(self) -> bool:
        return bool(visible_gpus())

    def submit(self, job: dict) -> None:
        self._done.append(execute(job, self.run_fn, self.sink))

    def wait(self, timeout: float) -> list[dict]:
        done, self._done = self._done, []
        return done


class LocalBackend(Backend):
    """A ``ProcessPoolExecutor`` of ``workers`` spawned processes, each with ``threads`` torch threads."""

    name = "local"

    def __init__(self, workers: int, threads: int, run_fn: RunFn | None = None, context: str = "spawn",
                 gpu_ids: list[str] | None = None):
        self.capacity = workers
        self.threads = threads
        self.run_fn = run_fn
        self.context = context
        self.gpu_ids = list(gpu_ids or [])
        self._pool: cf.ProcessPoolExecutor | None = None
        self._queue: Any = None
        self._futures: dict[cf.Future, str] = {}

    def start(self) -> None:
        ctx = mp.get_context(self.context)
        if self._queue is None:
            self._queue = ctx.Queue()
        counter = ctx.Value("i", 0) if self.gpu_ids else None
        self._pool = cf.ProcessPoolExecutor(max_workers=self.capacity, mp_context=ctx, initializer=_init_worker,
                                            initargs=(self._queue, self.threads, os.getpid(), counter,
                                                      self.gpu_ids))

    def submit(self, job: dict) -> None:
        if self._pool is None:
            self.start()
        try:
            fut = self._pool.submit(_pool_execute, job, self.run_fn)
        except cf.process.BrokenProcessPool:
            # A worker died since the last wait() (killed, out of memory): the pool refuses new work. Its runs
            # in flight fail with BrokenProcessPool in wait(); this job goes to a fresh pool.
            self._replace_pool()
            fut = self._pool.submit(_pool_execute, job, self.run_fn)
        self._futures[fut] = job["run_id"]

    def _replace_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.start()

    def wait(self, timeout: float) -> list[dict]:
        if not self._futures:
            return []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out = []
        for fut in done:
            run_id = self._futures.pop(fut)
            try:
                out.append(fut.result())
            except cf.process.BrokenProcessPool:
                # The executor fails every run in flight on a broken pool, each through its own future; the
                # next submit() starts a fresh pool.
                out.append({"run_id": run_id, "ok": False, "user_error": False,
                            "error": "worker process died (killed, or out of memory?)"})
            except Exception as e:  # e.g. an unpicklable result
                out.append({"run_id": run_id, "ok": False, "user_error": False,
                            "error": f"{type(e).__name__}: {e}"})
        return out

    @property
    def uses_gpu(self) -> bool:
        return bool(self.gpu_ids)

    def describe(self) -> str:
        gpus = f", GPU {'/'.join(self.gpu_ids)} (shared round-robin by the workers)" if self.gpu_ids else ""
        return f"{self.name}: {self.capacity} concurrent run(s) x {self.threads} thread(s){gpus}"

    def progress(self) -> list[tuple]:
        msgs = []
        while self._queue is not None:
            try:
                msgs.append(self._queue.get_nowait())
            except (_queue.Empty, OSError, EOFError):
                break
        return msgs

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None
        if self._queue is not None:
            self._queue.close()
            self._queue.cancel_join_thread()
            self._queue = None


def _ray_execute(job: dict, run_fn: RunFn | None, progress_queue: Any) -> dict:
    """Ray task body: ``execute`` with progress sent to a ``ray.util.queue.Queue``."""
    def sink(msg: tuple) -> None:
        try:
            progress_queue.put_nowait(msg)
        except Exception:  # progress is best effort
            pass
    threads = job["config"].get("threads")
    if threads:
        import torch

        torch.set_num_threads(threads)
    return execute(job, run_fn, sink if progress_queue is not None else None)


#: Seconds a ``--ray-address`` gets to accept the driver (a TCP connection, then Ray's own handshake) before the
#: study stops with one line (exit 2). A local Ray instance is not bounded: starting one is not a network wait.
RAY_CONNECT_TIMEOUT = 30.0

#: Times a run lost with its node or worker process is resubmitted before it counts as a failed run.
RAY_RETRIES = 2

#: Ray's errors for a run lost with its machine or process, not by its own code: the only ones retried. A run
#: function's exception comes back as a RayTaskError and fails the run as before.
RAY_LOST_ERRORS = ("NodeDiedError", "WorkerCrashedError", "ActorDiedError", "OwnerDiedError")

_AUTH_MARKERS = ("InvalidAuthToken", "Unauthenticated", "authentication token", "AuthenticationError")


def split_ray_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto``/``local`` (Ray resolves those).

    Raises:
        UserError: no port, or not a number.
    """
    if address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"invalid option --ray-address: expected HOST:PORT (e.g. 10.0.0.5:6379), got {address!r}")
    return host, int(port)


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Fail in one line, within ``timeout`` seconds, when nothing accepts a TCP connection at ``address``."""
    where = split_ray_address(address)
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=timeout).close()
    except socket.timeout:
        raise UserError(f"cannot reach the Ray cluster at {address}: no answer within {timeout:g} s "
                        "(is a Ray head running there, and is the port its GCS port, default 6379?)") from None
    except OSError as e:
        cause = e.strerror or str(e) or type(e).__name__
        raise UserError(f"cannot reach the Ray cluster at {address}: {cause} "
                        "(is a Ray head running there, and is the port its GCS port, default 6379?)") from None


def _error_text(e: BaseException) -> str:
    parts, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


def join_ray_cluster(ray: Any, address: str, kwargs: dict, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """``ray.init(address=address, **kwargs)`` within ``timeout`` seconds, or one :class:`UserError` line.

    Ray prints a warning line per failed attempt on the process's stderr (about 20 over 20 s on a refused token);
    they are held back while it connects, shown as they were on success, and replaced by one line on failure:
    an authentication refusal names the fix.
    """
    check_ray_address(address, timeout)
    box: dict[str, BaseException] = {}

    def connect() -> None:
        try:
            ray.init(address=address, **kwargs)
        except BaseException as e:  # handed to the caller
            box["error"] = e

    _flush_stderr()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            thread = threading.Thread(target=connect, daemon=True, name="stabletune-ray-init")
            thread.start()
            thread.join(timeout)
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        said = held.read().decode(errors="replace")
    if thread.is_alive():
        raise UserError(f"cannot join the Ray cluster at {address}: Ray did not connect within {timeout:g} s "
                        "(is the port the head's GCS port, default 6379?)")
    error = box.get("error")
    if error is None:
        if said.strip():
            os.write(2, said.encode())
        return
    text = _error_text(error) + "\n" + said
    if any(m in text for m in _AUTH_MARKERS):
        raise UserError(f"the Ray cluster at {address} refused this driver: it has token authentication on "
                        "(`ray start --head` turns it on where ~/.ray/auth_token exists) and this driver sent no "
                        "token or another one; rerun with RAY_AUTH_MODE=token and the cluster's token in "
                        "RAY_AUTH_TOKEN or ~/.ray/auth_token, or restart the cluster with RAY_AUTH_MODE=disabled"
                        ) from None
    first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    raise UserError(f"cannot join the Ray cluster at {address}: {first}") from None


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


class RayBackend(Backend):
    """Each run a ``ray.remote(num_cpus=threads, num_gpus=gpus)`` task; results flow back to the driver.

    Starts a local Ray instance (``ray.init()``) unless ``address`` names a cluster (``--ray-address``, joined
    within :data:`RAY_CONNECT_TIMEOUT` seconds or refused in one line). A run lost with its node or worker
    process (:data:`RAY_LOST_ERRORS`) is resubmitted up to ``retries`` times, each said in one notice; then it
    fails as any run does.
    """

    name = "ray"

    def __init__(self, workers: int | None, run_fn: RunFn | None = None, address: str | None = None,
                 cpus_per_run: int | None = None, gpus_per_run: float | None = None,
                 retries: int = RAY_RETRIES, connect_timeout: float = RAY_CONNECT_TIMEOUT):
        self._workers = workers
        self.run_fn = run_fn
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.retries = retries
        self.connect_timeout = connect_timeout
        self._refs: dict[Any, dict] = {}  # task ref -> its job
        self._retried: dict[str, int] = {}  # job run_id -> resubmissions so far
        self._notices: list[tuple[str, str]] = []
        self._lost: tuple[type, ...] = ()
        self._started_ray = False
        self._queue = None

    @staticmethod
    def import_ray():
        try:
            import ray
        except ImportError:
            raise UserError("--backend ray needs Ray: pip install 'stabletune[ray]' (or pip install ray)") from None
        return ray

    def start(self) -> None:
        ray = self.import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": "ERROR"}
            if self.address:
                join_ray_cluster(ray, self.address, kwargs, self.connect_timeout)
            else:
                kwargs["num_cpus"] = available_cores()
                # Ray runs its workers at nice 15 by default; on a local instance they ARE the study, and at
                # nice 15 any other busy process on the machine starves them (measured: ~4 % of a core each
                # beside two busy processes). Give them the driver's priority unless the user set it.
                os.environ.setdefault("RAY_worker_niceness", "0")
                try:
                    ray.init(**kwargs)
                except (ConnectionError, ValueError, RuntimeError) as e:
                    raise UserError(f"cannot start a local Ray instance: {str(e).splitlines()[0]}") from None
            self._started_ray = True
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 1))
        gpus = resources.get("GPU", 0)
        if self.gpus_per_run is None:
            self.gpus_per_run = 1 / WORKERS_PER_GPU if gpus >= 1 else 0
        if self.cpus_per_run is None:
            workers = self._workers or (int(gpus / self.gpus_per_run) if self.gpus_per_run
                                        else default_workers(cpus, gpus=0))
            self.cpus_per_run = threads_per_worker(max(1, workers), cpus)
        self.threads = self.cpus_per_run
        if self._workers:
            self.capacity = self._workers
        elif self.gpus_per_run:
            self.capacity = max(1, int(gpus // self.gpus_per_run))
        else:
            self.capacity = max(1, cpus // self.cpus_per_run)
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # The progress queue lives on the driver's node, so that losing another node loses no progress.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self._queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        # Ray's own retries stay off: the driver retries lost runs itself (wait()), bounded and said.
        self._remote = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                                  max_retries=0)(_ray_execute)
        self._lost = tuple(getattr(ray.exceptions, n) for n in RAY_LOST_ERRORS if hasattr(ray.exceptions, n))

    @property
    def uses_gpu(self) -> bool:
        return bool(self.gpus_per_run)

    def submit(self, job: dict) -> None:
        self._refs[self._remote.remote(job, self.run_fn, self._queue)] = job

    def wait(self, timeout: float) -> list[dict]:
        if not self._refs:
            return []
        ray = self.import_ray()
        ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        out = []
        for ref in ready:
            job = self._refs.pop(ref)
            run_id = job["run_id"]
            try:
                out.append(ray.get(ref))
            except Exception as e:  # a lost node or worker, a run function's crash, an object lost ...
                error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                tries = self._retried.get(run_id, 0)
                if isinstance(e, self._lost) and tries < self.retries:
                    self._retried[run_id] = tries + 1
                    self._notices.append((run_id, f"lost with its node or worker ({type(e).__name__}): "
                                                  f"retrying ({tries + 1}/{self.retries})"))
                    self.submit(job)
                    continue
                if tries:
                    error += f" (after {tries} retr{'y' if tries == 1 else 'ies'})"
                out.append({"run_id": run_id, "ok": False, "user_error": False, "error": error})
        return out

    def notices(self) -> list[tuple[str, str]]:
        out, self._notices = self._notices, []
        return out

    def progress(self) -> list[tuple]:
        if self._queue is None:
            return []
        try:
            n = self._queue.qsize()
            return self._queue.get_nowait_batch(n) if n else []
        except Exception:
            return []

    def close(self, cancel: bool = False) -> None:
        ray = self.import_ray()
        if cancel:
            for ref in list(self._refs):
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
        self._refs.clear()
        if self._queue is not None:
            try:
                self._queue.shutdown()
            except Exception:
                pass
            self._queue = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def describe(self) -> str:
        where = self.address or "local Ray"
        return (f"ray ({where}): {self.capacity} concurrent run(s) x {self.cpus_per_run} CPU"
                + (f" x {self.gpus_per_run} GPU" if self.gpus_per_run else ""))


def make_backend(name: str, *, workers: int | None = None, run_fn: RunFn | None = None,
                 ray_address: str | None = None, sink: Sink | None = None) -> Backend:
    """``inline`` (or ``local`` with ``workers=0``), ``local`` or ``ray``."""
    if workers is not None and workers < 0:
        raise UserError(f"invalid option --workers: must be >= 0, got {workers}")
    if name == "inline" or (name == "local" and workers == 0):
        return InlineBackend(run_fn, sink=sink)
    if name == "local":
        gpus = visible_gpus()
        n = workers or default_workers(gpus=len(gpus))
        return LocalBackend(n, threads_per_worker(n), run_fn, gpu_ids=gpus)
    if name == "ray":
        RayBackend.import_ray()
        if ray_address:
            check_ray_address(ray_address)  # before the study writes anything: nothing there is one line
        return RayBackend(workers or None, run_fn, ray_address)
    raise UserError(f"unknown backend {name!r}: choose local or ray")

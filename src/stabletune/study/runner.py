"""Run a study: plan its runs, schedule them on a backend, store every result, resume after any crash.

The driver is the only writer of the study database. Before a run starts its row says ``running``; its result
(or error) lands in one transaction. A rerun first turns every ``running`` row (left by a killed driver) back
into ``pending``, skips finished runs and redoes the rest; failed runs are retried only with
``retry_failed``. Early kill (Dodge et al., 2020) is optional and never used by the paper's study files.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabletune.errors import ConfigError, UserError
from stabletune.study.backends import Backend, RunFn, make_backend
from stabletune.study.spec import RunSpec, StudySpec, load_study
from stabletune.study.store import RESULT_STATUSES, STATUSES, StudyLock, Store
from stabletune.study.tuning import Planner, describe_choice

log = logging.getLogger(__name__)


@dataclass
class EarlyKill:
    """Stop a run whose validation score at its ``at_eval``-th evaluation is below ``threshold`` or below the
    ``quantile`` of its peers' scores at that evaluation (peers: finished runs of the same method, task, phase
    and search candidate, at least ``min_peers`` of them). Dodge et al. (2020) stop the worse half early.
    """

    at_eval: int = 2
    quantile: float | None = 0.5
    threshold: float | None = None
    min_peers: int = 3

    def __post_init__(self) -> None:
        if self.at_eval < 1:
            raise ConfigError(f"invalid option --early-kill-eval: must be >= 1, got {self.at_eval}")
        if self.quantile is not None and not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"invalid option --early-kill-quantile: must be in (0, 1), got {self.quantile}")
        if self.quantile is None and self.threshold is None:
            raise ConfigError("early kill needs --early-kill-quantile or --early-kill-threshold")
        if self.min_peers < 1:
            raise ConfigError(f"invalid option --early-kill-min-peers: must be >= 1, got {self.min_peers}")

    def threshold_for(self, peers: list[float]) -> float | None:
        """The score a run must reach at ``at_eval``; None: do not kill (no rule applies yet)."""
        limits = []
        if self.threshold is not None:
            limits.append(self.threshold)
        if self.quantile is not None and len(peers) >= self.min_peers:
            import numpy as np

            limits.append(float(np.quantile(np.asarray(peers, dtype=float), self.quantile)))
        return max(limits) if limits else None


@dataclass
class StudyOutcome:
    """What :func:`run_study` did."""

    name: str
    db: Path
    backend: str
    total: int
    counts: dict[str, int]
    ran: int = 0
    copied: int = 0
    wall_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every planned run holds a result (finished, diverged or killed) and none is blocked."""
        return not self.blocked and sum(self.counts.get(s, 0) for s in RESULT_STATUSES) == self.total


def format_seconds(seconds: float | None) -> str:
    """12s, 3m05s, 2h10m; ? when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Display:
    """One progress display for the study: a tqdm bar on stderr, or (quiet) one line per finished run."""

    def __init__(self, name: str, total: int, done: int, failed: int, capacity: int, *, mode: str):
        self.name, self.total, self.done, self.failed = name, total, done, failed
        self.capacity = max(1, capacity)
        self.mode = mode  # "bar" | "lines" | "off"
        self.mean_s: float | None = None
        self.current: dict[str, tuple[str, int, int, float]] = {}  # run_id -> (label, step, total, t0)
        self.bar = None
        if mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=f"study {name}", unit="run", file=sys.stderr,
                            dynamic_ncols=True, mininterval=0.5,
                            bar_format="{desc}: {n_fmt}/{total_fmt} |{bar:16}| {elapsed}{postfix}")
            self._refresh()

    def eta(self) -> float | None:
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        per_run = self.mean_s
        if per_run is None:  # nothing finished yet: extrapolate the running runs' steps
            rates = [(time.monotonic() - t0) * tot / step for _, step, tot, t0 in self.current.values()
                     if tot and step >= 0.1 * tot]
            per_run = sum(rates) / len(rates) if rates else None
        return None if per_run is None else per_run * remaining / self.capacity

    def _refresh(self) -> None:
        if self.bar is None:
            return
        running = " ".join(f"{label} {step}/{tot}" for label, step, tot, _ in list(self.current.values())[:3])
        self.bar.set_postfix_str(f"failed {self.failed} | eta {format_seconds(self.eta())}" + (f" | {running}" if running else ""),
                                 refresh=True)

    def start(self, run: RunSpec) -> None:
        self.current[run.run_id] = (run.label(), 0, 0, time.monotonic())
        self._refresh()

    def step(self, run_id: str, step: int, total: int) -> None:
        if run_id in self.current:
            label, _, _, t0 = self.current[run_id]
            self.current[run_id] = (label, step, total, t0)

    def tick(self) -> None:
        self._refresh()

    def finish(self, run: RunSpec, status: str, detail: str) -> None:
        self.current.pop(run.run_id, None)
        self.done += 1
        if status == "failed":
            self.failed += 1
        if self.bar is not None:
            self.bar.update(1)
            self._refresh()
        elif self.mode == "lines":
            self.line(f"[{self.done}/{self.total}] {status} {run.label()}{detail} | eta {format_seconds(self.eta())}")

    def add_done(self, n: int) -> None:
        """Runs done without running (final runs reused from the search)."""
        if n:
            self.done += n
            if self.bar is not None:
                self.bar.update(n)

    def line(self, text: str) -> None:
        if self.mode == "off":
            return
        msg = f"study {self.name}: {text}"
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _detail(outcome: dict) -> str:
    if not outcome.get("ok"):
        return f": {outcome.get('error')}"
    res = outcome["result"]
    metric = (res.get("task") or {}).get("metric")
    best = res.get("best") or {}
    parts = []
    for split in ("val", "test"):
        v = (best.get(split) or {}).get(metric)
        if v is not None:
            parts.append(f"{split} {metric} {v:.4f}")
    wall = (res.get("timings") or {}).get("wall_s")
    if wall is not None:
        parts.append(f"{wall:.1f} s")
    return f" ({', '.join(parts)})" if parts else ""


def preflight(spec: StudySpec, runs: list[RunSpec]) -> None:
    """Checks that need no training: GLUE task names and that data folders/files exist (ConfigError)."""
    from stabletune.tasks import get_task

    seen = set()
    for r in runs:
        cfg = r.config
        key = (cfg.task, cfg.data_dir, cfg.train_file, cfg.dev_file)
        if key in seen:
            continue
        seen.add(key)
        where = f"{spec.where}: task {r.task!r}"
        if cfg.train_file is None:
            try:
                task = get_task(cfg.task)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            if cfg.data_dir is not None and not (Path(cfg.data_dir) / task.glue_dir).is_dir():
                raise ConfigError(f"{where}: data folder not found: {Path(cfg.data_dir) / task.glue_dir} "
                                  "(set data_dir in the study file or pass --data-dir)")
        else:
            for f in (cfg.train_file, cfg.dev_file):
                if f is not None and not Path(f).is_file():
                    raise ConfigError(f"{where}: data file not found: {f}")


def run_study(study: StudySpec | str | Path, *, db: str | Path | None = None, backend: str = "local",
              workers: int | None = None, ray_address: str | None = None, quiet: bool = False,
              progress: bool = True, early_kill: EarlyKill | None = None, retry_failed: bool = False,
              data_dir: str | None = None, run_fn: RunFn | None = None,
              ensemble: int | None = None) -> StudyOutcome:
    """Run (or resume) every run of a study and store the results.

    Args:
        study: a :class:`StudySpec` or the path of a study YAML.
        db: the SQLite file; default ``<name>.db`` next to the study file.
        backend: ``local`` (process pool), ``ray``, or ``inline`` (in this process).
        workers: concurrent runs; ``local`` default: one per core up to 4 cores; 0 = inline.
        ray_address: a Ray cluster to join instead of starting a local instance.
        quiet: one log line per finished run instead of the progress bar.
        progress: False shows nothing at all.
        early_kill: stop runs that fall behind their peers at an early evaluation (off by default).
        retry_failed: also redo runs recorded as failed.
        data_dir: GLUE folder for every run (overrides the study file).
        run_fn: the run function (default :func:`stabletune.training.train`); must be picklable for
            ``local``/``ray``.
        ensemble: train up to this many runs that differ only in their seeds at once, as one vectorised model
            (:func:`stabletune.training.train_ensemble`); None (auto): :data:`GPU_ENSEMBLE` on a GPU backend,
            1 on CPU, where it is slower than separate runs (docs/performance.md). Not combined with early kill.

    Returns:
        A :class:`StudyOutcome` (counts by status over the planned runs, failures, search choices).

    Raises:
        ConfigError: an invalid study file (nothing is written then).
        UserError: the database belongs to another study, is in use, or a run failed on a user error
            (e.g. a missing data file): the study stops and that run stays pending.
    """
    t_start = time.perf_counter()
    spec = study if isinstance(study, StudySpec) else load_study(study)
    spec = spec.with_data_dir(data_dir)
    planner = Planner(spec)
    preflight(spec, planner.search_runs + planner.fixed_finals)
    db_path = Path(db) if db is not None else spec.default_db
    mode = "off" if not progress else ("lines" if quiet else "bar")
    holder: dict[str, Display] = {}

    def inline_sink(msg: tuple) -> None:  # the inline backend reports progress synchronously
        if "display" in holder:
            holder["display"].step(msg[0], msg[1], msg[2])
            holder["display"].tick()

    if ensemble is not None and ensemble < 1:
        raise ConfigError(f"invalid option --ensemble: must be >= 1, got {ensemble}")
    if ensemble is not None and ensemble > 1 and run_fn is not None:
        raise ConfigError("--ensemble needs stabletune's own train function (run_fn must be None)")
    backend_ = make_backend(backend, workers=workers, run_fn=run_fn, ray_address=ray_address, sink=inline_sink)
    with StudyLock(db_path), Store.open(db_path, create=True) as store:
        store.save_spec(spec.name, spec.text, str(spec.path) if spec.path else None)
        store.add_planned(planner.plan(store).runs)
        store.reset([r["run_id"] for r in store.runs() if r["status"] == "running"])  # left by a killed driver
        if retry_failed and store.reset(planner.plan(store).ids, from_status=("failed",)):
            planner = Planner(spec)  # retried search runs may change a search's choice: decide afresh
        driver = _Driver(spec, planner, store, backend_, early_kill, mode, ensemble=ensemble,
                         custom_run_fn=run_fn is not None)
        try:
            driver.run(holder)
        finally:
            if driver.display is not None:
                driver.display.close()
        outcome = driver.outcome
        final_plan = planner.plan(store)
        statuses = store.statuses()
        outcome.counts = {s: 0 for s in STATUSES}
        for i in final_plan.ids:
            outcome.counts[statuses.get(i, "pending")] += 1
        outcome.blocked = list(final_plan.blocked)
        outcome.wall_s = time.perf_counter() - t_start
    if driver.user_error is not None:
        raise UserError(driver.user_error)
    return outcome


class _Driver:
    """The scheduling loop of one `run_study` call: keeps the backend busy, stores each outcome, and adds the
    final runs of a search as soon as its search runs are all done."""

    def __init__(self, spec: StudySpec, planner: Planner, store: Store, backend: Backend,
                 early_kill: EarlyKill | None, mode: str, *, ensemble: int | None = None,
                 custom_run_fn: bool = False):
        self.spec, self.planner, self.store, self.backend = spec, planner, store, backend
        self.early_kill, self.mode = early_kill, mode
        self.requested_ensemble, self.custom_run_fn = ensemble, custom_run_fn
        self.ensemble = 1
        self.jobs: dict[str, list[RunSpec]] = {}  # job id -> the runs it trains (several for an ensemble)
        self.outcome = StudyOutcome(spec.name, store.path, "nothing to run", spec.num_runs(), {})
        self.display: Display | None = None
        self.in_flight: dict[str, RunSpec] = {}
        self.queue: list[RunSpec] = []
        self.known: set[str] = set()
        self.user_error: str | None = None

    def run(self, holder: dict) -> None:
        plan = self.planner.plan(self.store)
        self.known = set(plan.ids)
        self.queue = self._copy_or_queue(plan.runs)
        if self.queue:  # start workers (or a Ray instance) only when there is something to run
            self.backend.start()
            self.ensemble = resolve_ensemble(self.requested_ensemble, gpu=self.backend.uses_gpu,
                                             early_kill=self.early_kill is not None,
                                             custom_run_fn=self.custom_run_fn)
            self.outcome.backend = self.backend.describe() + (
                f", ensembles of up to {self.ensemble} seeds" if self.ensemble > 1 else "")
        statuses = self.store.statuses()
        done = sum(statuses.get(i) in (*RESULT_STATUSES, "failed") for i in plan.ids)
        failed = sum(statuses.get(i) == "failed" for i in plan.ids)
        self.display = holder["display"] = Display(self.spec.name, self.outcome.total, done, failed,
                                                   self.backend.capacity, mode=self.mode)
        self.display.mean_s = self.store.mean_run_seconds()
        self.display.line(f"{self.outcome.total} runs, {done} done, {len(self.queue)} to run on "
                          f"{self.outcome.backend}; database {self.store.path}")
        self._note_choices(plan)
        try:
            while self.queue or self.in_flight:
                self._fill()
                finished = self.backend.wait(timeout=0.5)
                for msg in self.backend.progress():
                    self.display.step(msg[0], msg[1], msg[2])
                for run_id, text in self.backend.notices():  # e.g. a run resubmitted after its node was lost
                    run = self.in_flight.get(run_id)
                    self.display.line(f"run {run.label() if run else run_id} {text}")
                for out in finished:
                    self._handle(out)
                self.display.tick()
        except BaseException:
            if self.in_flight:  # interrupted (Ctrl-C): the runs in flight will be redone
                self.store.reset(list(self.in_flight))
            self.backend.close(cancel=True)
            raise
        self.backend.close()

    def _fill(self) -> None:
        while self.queue and len(self.jobs) < self.backend.capacity and self.user_error is None:
            group = [self.queue.pop(0)]
            group += self._companions(group[0])
            for run in group:
                self.store.mark_running(run.run_id)
                self.in_flight[run.run_id] = run
                self.display.start(run)
            self.jobs[group[0].run_id] = group
            job = _job(group[0], self.store, self.early_kill, self.backend)
            if len(group) > 1:
                job["members"] = [{"run_id": r.run_id, "config": _run_config(r, self.backend, self.store.path)}
                                  for r in group]
            self.backend.submit(job)

    def _companions(self, run: RunSpec) -> list[RunSpec]:
        """Queued runs to train together with ``run`` as one ensemble: the same config up to the seeds."""
        if self.ensemble <= 1 or run.config.report_to != "none":  # TensorBoard logs one run at a time
            return []
        from stabletune.training import member_key, sequential_reason  # imports torch: only when needed

        if sequential_reason(run.config) is not None:
            return []
        key = member_key(run.config)
        picked = [r for r in self.queue if member_key(r.config) == key][:self.ensemble - 1]
        if picked:
            ids = {r.run_id for r in picked}
            self.queue = [r for r in self.queue if r.run_id not in ids]
        return picked

    def _handle(self, out: dict) -> None:
        """One job's outcome: an ensemble's per-member outcomes, or a single run's (a job that failed as a
        whole, e.g. its worker died, fails each of its runs)."""
        group = self.jobs.pop(out["run_id"])
        if "group" not in out:
            for run in group:
                self._handle_run({**out, "run_id": run.run_id})
            return
        outcomes = {o["run_id"]: o for o in out["group"]}
        for run in group:
            self._handle_run(outcomes.get(run.run_id) or {
                "run_id": run.run_id, "ok": False, "user_error": False,
                "error": "the ensemble returned no outcome for this run"})

    def _handle_run(self, out: dict) -> None:
        run = self.in_flight.pop(out["run_id"])
        if out.get("user_error"):  # the same mistake would fail every run: stop, and keep this one pending
            self.store.reset([run.run_id])
            self.user_error = self.user_error or f"run {run.label()} failed: {out['error']}"
            self.queue.clear()
            self.display.current.pop(run.run_id, None)
            return
        if out.get("ok"):
            self.store.record_result(run.run_id, out["result"], started_at=out.get("started_at"),
                                     host=out.get("host"))
            status = out["result"].get("status", "finished")
        else:
            self.store.record_failure(run.run_id, out["error"], started_at=out.get("started_at"),
                                      host=out.get("host"))
            if out.get("traceback"):
                log.debug("run %s failed:\n%s", run.label(), out["traceback"])
            status = "failed"
            self.outcome.failures.append((run.label(), out["error"]))
        self.outcome.ran += 1
        self.display.mean_s = self.store.mean_run_seconds()
        self.display.finish(run, status, _detail(out))
        if self.user_error is None and self.planner.by_group:
            self._extend_plan()

    def _extend_plan(self) -> None:
        """Queue the final runs of searches decided by the last result."""
        plan = self.planner.plan(self.store)
        self._note_choices(plan)
        fresh = [r for r in plan.runs if r.run_id not in self.known]
        if fresh:
            self.known.update(r.run_id for r in fresh)
            copied = self.outcome.copied
            self.queue = sorted(self.queue + self._copy_or_queue(fresh), key=lambda r: r.order)
            self.display.add_done(self.outcome.copied - copied)

    def _note_choices(self, plan) -> None:
        for group, choice in plan.choices.items():
            text = describe_choice(group, choice)
            if text not in self.outcome.choices:
                self.outcome.choices.append(text)
                if self.display is not None:
                    self.display.line(text)

    def _copy_or_queue(self, runs: list[RunSpec]) -> list[RunSpec]:
        """Add runs to the store; a final run equal to a search run with a result is copied from it (no
        recomputation). Returns the runs still to do, in scheduling order."""
        statuses = self.store.statuses()
        for r in runs:
            src = self.planner.source_of(r) if r.phase == "final" else None
            if (src is not None and statuses.get(r.run_id) not in RESULT_STATUSES
                    and statuses.get(src.run_id) in RESULT_STATUSES and self.store.copy_run(src.run_id, r)):
                self.outcome.copied += 1
                if r.config.report_to == "tensorboard":  # the copy is a run too: it gets the search run's logs
                    _copy_tree(tensorboard_dir(src, self.store.path), tensorboard_dir(r, self.store.path))
        self.store.add_planned(runs)
        statuses = self.store.statuses()
        return sorted((r for r in runs if statuses.get(r.run_id) == "pending"), key=lambda r: r.order)


#: Ensemble size of ``--ensemble auto`` on a GPU (measured with benchmarks/gpu_check.sh, docs/performance.md).
GPU_ENSEMBLE = 4


def resolve_ensemble(requested: int | None, *, gpu: bool, early_kill: bool = False,
                     custom_run_fn: bool = False) -> int:
    """The ensemble size a study uses: ``requested``, or (None) :data:`GPU_ENSEMBLE` on a GPU and 1 on CPU.
    Early kill judges each run on its own and stops it alone, so it keeps runs separate (1)."""
    if early_kill or custom_run_fn:
        return 1
    if requested is not None:
        return requested
    return GPU_ENSEMBLE if gpu else 1


def tensorboard_dir(run: RunSpec, db: Path) -> Path:
    """A run's TensorBoard folder: ``<logging_dir or <db name>-tensorboard beside the db>/method/task/seed``
    (search runs: ``method/task/search-<option=value,...>/seed``), so ``tensorboard --logdir`` on the root shows
    one run per stabletune run, named by what it is. Not part of the run's id."""
    root = Path(run.config.logging_dir) if run.config.logging_dir else db.parent / f"{db.stem}-tensorboard"
    parts = [run.method, run.task]
    if run.phase == "search":
        parts.append("search-" + ",".join(f"{k}={v}" for k, v in sorted(run.candidate.items())))
    return root.joinpath(*parts, run.seeds.label())


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a folder unless it is missing or ``dst`` exists (a resumed study copied it already)."""
    if src.is_dir() and not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst)


def _run_config(run: RunSpec, backend: Backend, db: Path | None = None) -> dict:
    """The run's config as a worker gets it: the backend's thread count unless the study fixes one, and with
    ``report_to: tensorboard`` the run's own TensorBoard folder."""
    config = run.config.to_dict()
    if config.get("threads") is None and backend.name in ("local", "ray"):
        config["threads"] = backend.threads
    if config.get("report_to") == "tensorboard" and db is not None:
        config["logging_dir"] = str(tensorboard_dir(run, db))
    return config


def _job(run: RunSpec, store: Store, early_kill: EarlyKill | None, backend: Backend) -> dict:
    config = _run_config(run, backend, store.path)
    kill = None
    if early_kill is not None:
        peers = store.eval_scores(*run.group, at_eval=early_kill.at_eval)
        threshold = early_kill.threshold_for(peers)
        if threshold is not None:
            kill = {"at_eval": early_kill.at_eval, "threshold": threshold}
    return {"run_id": run.run_id, "config": config, "kill": kill}


# ------------------------------------------------------------------------------------------------
# status
# ------------------------------------------------------------------------------------------------
def study_status(study: StudySpec | str | Path, *, db: str | Path | None = None,
                 workers: int | None = None) -> dict[str, Any]:
    """Counts by status over the planned runs, per (method, task), mean run time and ETA. Writes nothing.

    ``running`` rows whose driver is gone (killed) are reported as ``interrupted``; ``unplanned`` counts stored
    runs that the study file no longer plans (it was edited, or a stabletune upgrade changed the run ids): they are
    kept, but they are not part of the study's results. ``outdated`` says why, where an upgrade is the reason
    (:func:`outdated_runs`): runs drawn with an older definition of their split, runs that grouped batches by
    length under the old default.
    """
    from stabletune.study.backends import default_workers

    spec = study if isinstance(study, StudySpec) else load_study(study)
    db_path = Path(db) if db is not None else spec.default_db
    planner = Planner(spec)
    total = spec.num_runs()
    counts = {s: 0 for s in (*STATUSES, "interrupted")}
    groups: dict[tuple[str, str], dict[str, int]] = {}
    mean_s = None
    live = StudyLock.held(db_path)
    choices: list[str] = []
    blocked: list[tuple[str, str]] = []
    unplanned = 0
    outdated: dict[str, Any] = {"split": {}, "grouped": 0}
    if db_path.exists():
        with Store.open(db_path, readonly=True) as store:
            plan = planner.plan(store)
            rows = {r["run_id"]: r for r in store.runs(plan.ids)}
            unplanned_ids = set(store.statuses()) - set(plan.ids)
            unplanned = len(unplanned_ids)
            if unplanned_ids:
                outdated = outdated_runs(store.runs(unplanned_ids), plan.runs)
            mean_s = store.mean_run_seconds()
            choices = [describe_choice(g, c) for g, c in plan.choices.items()]
            blocked = plan.blocked
    else:
        plan = planner.plan(None)
        rows = {}
    for r in plan.runs:
        status = rows[r.run_id]["status"] if r.run_id in rows else "pending"
        if status == "running" and not live:
            status = "interrupted"
        counts[status] += 1
        g = groups.setdefault((r.method, r.task), {})
        g[status] = g.get(status, 0) + 1
    counts["pending"] += total - len(plan.runs)  # final runs of searches not decided yet
    remaining = counts["pending"] + counts["running"] + counts["interrupted"]
    n = workers or default_workers()
    return {"name": spec.name, "db": str(db_path), "exists": db_path.exists(), "live": live, "total": total,
            "counts": counts, "groups": groups, "mean_run_s": mean_s,
            "eta_s": None if mean_s is None else mean_s * remaining / n, "workers": n,
            "choices": choices, "blocked": blocked, "unplanned": unplanned, "outdated": outdated}


def outdated_runs(rows: list[Any], planned: list[RunSpec]) -> dict[str, Any]:
    """Which stored runs a stabletune upgrade made obsolete (they are kept, never reused).

    Args:
        rows: stored runs the study does not plan (``runs`` rows).
        planned: the runs the study plans now.

    Returns:
        ``{"split": {"<split> v<old> (now v<new>)": n}, "grouped": n}``: runs whose id is the id of their config
        under an older version of their split's definition (:data:`stabletune.data.splits.SPLIT_VERSIONS`), and
        runs that grouped batches by length (the default until 2026-12-01) where the study now plans the same
        run (same method, task, phase, seeds, candidate) with random batches.
    """
    import json

    from stabletune.config import FIELDS, RunConfig
    from stabletune.data.splits import SPLIT_VERSIONS
    from stabletune.study.spec import canonical_json, run_id_for

    twins = {(r.method, r.task, r.phase, r.seeds.seed, canonical_json(r.candidate)): r for r in planned}
    split_counts: dict[str, int] = {}
    grouped = 0
    for row in rows:
        try:
            stored = json.loads(row["config"])
            if "encoder_impl" in FIELDS:  # runs stored before the unpadded encoder all ran the Hugging Face forward
                stored.setdefault("encoder_impl", "hf")
            cfg = RunConfig(**{k: v for k, v in stored.items() if k in FIELDS})
            candidate = canonical_json(json.loads(row["candidate"] or "{}"))
        except (TypeError, ValueError):
            continue  # a config this stabletune cannot read: nothing to say about it
        now = SPLIT_VERSIONS.get(cfg.split, 1)
        for old in range(1, now):
            if run_id_for(row["method"], row["task"], row["phase"], cfg, split_version=old) == row["run_id"]:
                label = f"{cfg.split} v{old} (now v{now})"
                split_counts[label] = split_counts.get(label, 0) + 1
        twin = twins.get((row["method"], row["task"], row["phase"], row["seed"], candidate))
        if twin is not None and cfg.group_by_length and not twin.config.group_by_length:
            grouped += 1
    return {"split": split_counts, "grouped": grouped}

"""The driver of ``fit``'s search: keeps the workers busy with the plan's runs, stores results, trims to the budget, shows progress; and the guard against a script re-run by its own workers."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from stabletune.config import RunConfig
from stabletune.errors import UserError
from stabletune.fitting import clock
from stabletune.fitting.budget import Budget, FINALIZE_RESERVE_S
from stabletune.fitting.planner import FitPlanner, Limits, PlanView, Run, SeedResult, TRIMS


FAIL_FAST = 3
"""A fit whose first runs all fail stops (the same error would fail every run)."""


UNGUARDED = ("stabletune.fit() was called again inside one of its worker processes: worker processes import "
             "your script again, so a script that calls stabletune.fit() must call it under "
             "`if __name__ == \"__main__\":` (docs/fit.md)")


def main_is_a_script() -> bool:
    """The main module is a user's script (not the stabletune command line, not an interactive session)."""
    main = sys.modules.get("__main__")
    path, spec = getattr(main, "__file__", None), getattr(main, "__spec__", None)
    ours = Path(path or "").name == "stabletune" or (spec is not None and spec.name.startswith("stabletune"))
    return path is not None and not ours


def refuse_in_a_spawned_worker() -> None:
    """A script that calls fit() at top level (no ``__main__`` guard) is re-run by every worker process it spawns
    (they import the main module as ``__mp_main__``); there fit() would start a fit of its own. Say why, once per
    worker, and end the worker: the fit in the parent then fails fast with :data:`UNGUARDED` as the hint."""
    import multiprocessing

    if multiprocessing.parent_process() is not None and getattr(sys.modules.get("__main__"), "__name__", None) \
            == "__mp_main__":
        sys.stderr.write(f"stabletune: error: {UNGUARDED}\n")
        sys.stderr.flush()
        os._exit(2)


# ------------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar over the planned runs, with the stage, the best recipe so far and an ETA within the budget."""

    def __init__(self, enabled: bool, budget: Budget):
        self.budget = budget
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, desc="fit", unit="run", file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                            bar_format="{desc}: {n_fmt}/{total_fmt} runs |{bar:16}| {elapsed}{postfix}")

    def update(self, done: int, total: int, stage: str, best: str, eta: float | None) -> None:
        if self.bar is None:
            return
        from stabletune.study.runner import format_seconds

        self.bar.total = max(total, done)
        self.bar.n = done
        if self.budget.resolve() is None:
            left = "budget: auto, set when a run has finished"
        else:
            left = f"budget left {format_seconds(max(0.0, self.budget.seconds - self.budget.elapsed()))}"
        self.bar.set_postfix_str(f"{stage} | best {best} | eta {format_seconds(eta)} ({left})", refresh=True)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(f"fit: {text}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Search:
    """The driver: keeps the workers busy with the plan's needed runs, stores results, trims to the budget."""

    def __init__(self, *, planner: FitPlanner, store, backend, budget: Budget, limits: Limits, base_cfg: RunConfig,
                 task_name: str, runs_dir: Path, progress: bool):
        self.planner, self.store, self.backend, self.budget = planner, store, backend, budget
        self.limits, self.base_cfg, self.task_name, self.runs_dir = limits, base_cfg, task_name, runs_dir
        self.specs: dict[Run, Any] = {}
        self.by_id: dict[str, Run] = {}
        self.results: dict[Run, SeedResult] = {}
        self.in_flight: dict[str, tuple[Run, float]] = {}
        self.ran = 0
        self.failures = 0
        self.display = Progress(progress, budget)
        self.undo: dict[str, dict[str, Any]] = {}  # per trim taken: the limits it lowered, with their old values
        self.user_error: str | None = None
        if self.limits.screen is None:
            self.limits.screen = len(planner.screen_list())

    # --- runs <-> store ------------------------------------------------------------------------------
    def spec_of(self, run: Run):
        if run not in self.specs:
            from stabletune.study.spec import RunSpec, Seeds, run_id_for

            cand, seed = run
            cfg = replace(self.base_cfg, **cand.overrides(), seed=seed, save_model=True,
                          out=None, overwrite=True).validate()
            run_id = run_id_for(cand.key, self.task_name, "final", cfg)
            spec = RunSpec(run_id=run_id, method=cand.key, task=self.task_name, phase="final", seeds=Seeds(seed),
                           candidate=cand.overrides(), config=cfg, order=(cand.updates, seed))
            self.specs[run] = spec
            self.by_id[run_id] = run
        return self.specs[run]

    def folder_of(self, run: Run) -> Path:
        cand, seed = run
        return self.runs_dir / f"{cand.slug}-s{seed}"

    def _load_results(self) -> None:
        """Results stored by earlier (killed) invocations of this fit. Failed runs are tried again."""
        grid = self.planner.space.grid()
        runs = [(c, s) for c in grid for s in self.planner.seeds]
        ids = {self.spec_of(r).run_id: r for r in runs}
        for row in self.store.runs(ids):
            if row["status"] in ("finished", "diverged", "killed"):
                self.results[ids[row["run_id"]]] = self._seed_result(row)
                if row["status"] != "failed" and row["timings"]:
                    self.budget.observe(json.loads(row["timings"]), row["num_steps"])

    @staticmethod
    def _seed_result(row) -> SeedResult:
        summary = json.loads(row["summary"]) if row["summary"] else {}
        baseline = ((summary.get("data") or {}).get("majority_baseline") or {}).get("validation")
        val = row["best_val"]
        degenerate = val is None or (baseline is not None and val <= baseline + 1e-12)
        return SeedResult(row["status"], val, degenerate, row["wall_s"], row["run_id"], row["best_step"])

    # --- the loop ------------------------------------------------------------------------------------
    def run(self) -> PlanView:
        self._load_results()
        resumed = len(self.results)
        view = self._view()
        if resumed or self.budget.earlier:
            from stabletune.study.runner import format_seconds

            total = self.budget.resolve()
            self.display.line(f"resuming: {resumed} run(s) already done in {self.store.path}; earlier calls spent "
                              f"{format_seconds(self.budget.earlier)} of the "
                              f"{'automatic' if total is None else format_seconds(total)} "
                              "budget (a larger --budget extends it)")
        started_backend = False
        try:
            while True:
                view = self._view()
                if view.finished and not self.in_flight:
                    break
                todo = [r for r in view.needed if self.spec_of(r).run_id not in self.in_flight]
                if todo and len(self.in_flight) < self.backend.capacity and self.user_error is None:
                    if not started_backend:
                        self.backend.start()
                        started_backend = True
                    for run in todo[:self.backend.capacity - len(self.in_flight)]:
                        self._submit(run)
                    continue
                if not self.in_flight:
                    if self.user_error:
                        break
                    raise RuntimeError(f"fit: plan stalled at stage {view.stage}")  # pragma: no cover
                for msg in self.backend.progress():
                    self._live(msg)
                for out in self.backend.wait(timeout=0.5):
                    self._handle(out)
                self._refresh(view)
        except BaseException:
            if self.in_flight:
                self.store.reset(list(self.in_flight))
            self.backend.close(cancel=True)
            self.display.close()
            raise
        self.backend.close()
        self.display.close()
        if self.user_error:
            raise UserError(self.user_error)
        return view

    def _view(self) -> PlanView:
        """The plan now, trimmed until the estimated work left fits the budget."""
        started = set(self.results) | {run for run, _ in self.in_flight.values()}
        view = self.planner.plan(self.results, started, self.limits)
        if not self.budget.known():
            return view
        n_lrs = len(self.planner.space.lrs)
        while not self._fits(view):
            before = asdict(self.limits)
            name = next((name for name, trim in TRIMS if trim(self.limits, n_lrs)), None)
            if name is None:
                break  # the smallest plan: one recipe with every seed; it runs even past the budget
            if name not in self.budget.trimmed:
                self.budget.trimmed.append(name)
                self.display.line(f"budget: {name}")
            self.undo.setdefault(name, {k: v for k, v in before.items() if getattr(self.limits, k) != v})
            view = self.planner.plan(self.results, started, self.limits)
        return self._restore(view, started)

    def _restore(self, view: PlanView, started: set) -> PlanView:
        """Undo trims the plan has room for again, the most valuable first. Trims are taken greedily in
        :data:`TRIMS` order, so the one that makes the plan fit (e.g. no longer training, which frees a lot) can
        leave room for an earlier, cheaper one (e.g. screening the other L), and runs can come in under their
        estimate: without this a fit may end with much of its budget unused."""
        for name, _ in reversed(TRIMS):
            if name not in self.budget.trimmed:
                continue
            values = self.undo.get(name, {})
            trial = replace(self.limits, **values)
            trial_view = self.planner.plan(self.results, started, trial)
            if not self.budget.fits(*self._work_left(trial_view)):
                continue
            for k, v in values.items():
                setattr(self.limits, k, v)
            self.budget.trimmed.remove(name)
            if self._planned(trial_view) != self._planned(view):
                self.display.line(f"budget: room again, undone: {name}")
            view = trial_view
        return view

    def _planned(self, view: PlanView) -> int:
        """Runs the plan still needs (certain ones and placeholders), for telling whether an undo changes it."""
        return len(view.needed) + sum(len(stage) for stage in view.stages)

    def _fits(self, view: PlanView) -> bool:
        return self.budget.fits(*self._work_left(view))

    def _submit(self, run: Run) -> None:
        spec = self.spec_of(run)
        self.store.add_planned([spec])
        self.store.mark_running(spec.run_id)
        config = spec.config.to_dict()
        config.update(out=str(self.folder_of(run)), overwrite=True, save_model=True, progress=False)
        if config.get("threads") is None and self.backend.name in ("local", "ray"):
            config["threads"] = self.backend.threads
        self.in_flight[spec.run_id] = (run, clock.now())
        self.backend.submit({"run_id": spec.run_id, "config": config, "kill": None})

    def _live(self, msg: tuple) -> None:
        run_id, step, total, _score = msg
        if run_id in self.in_flight:
            self.budget.observe_live(run_id, step, total, clock.now() - self.in_flight[run_id][1])

    def _handle(self, out: dict) -> None:
        run_id = out["run_id"]
        run, _ = self.in_flight.pop(run_id)
        self.budget.forget_live(run_id)
        if out.get("user_error"):  # the same mistake would fail every run: stop, keep this one pending
            self.store.reset([run_id])
            self.user_error = self.user_error or f"run {run[0].key} seed {run[1]} failed: {out['error']}"
            return
        if out.get("ok"):
            self.store.record_result(run_id, out["result"], started_at=out.get("started_at"), host=out.get("host"))
            res = out["result"]
            self.budget.observe(res.get("timings") or {}, res.get("num_steps"))
        else:
            self.store.record_failure(run_id, out["error"], started_at=out.get("started_at"), host=out.get("host"))
            self.display.line(f"run {run[0].key} seed {run[1]} failed: {out['error']}")
            self.failures += 1
            if self.failures >= FAIL_FAST and self.failures == self.ran + 1:  # nothing has worked: a bug, not bad luck
                hint = (f"; if you called stabletune.fit() from a script: {UNGUARDED}"
                        if "worker process died" in str(out["error"]) and main_is_a_script() else "")
                self.user_error = (f"fit: the first {self.failures} runs all failed (last: {out['error']}); "
                                   f"see {self.store.path}{hint}")
        row = self.store.runs([run_id])[0]
        self.results[run] = self._seed_result(row)
        self.budget.save_spent()
        self.ran += 1
        self._collect_garbage()

    def _refresh(self, view: PlanView) -> None:
        done = len(self.results)
        total = done + len({r for r in view.needed}) + sum(isinstance(x, int) for st in view.stages for x in st)
        best = "-" if view.choice is None else f"{view.choice.candidate.key} ({view.choice.mean:.4f})"
        eta = None
        if self.budget.cost(1) is not None:
            eta = self.budget.makespan(*self._work_left(view)) + FINALIZE_RESERVE_S
        self.display.update(done, total, view.stage, best, eta)

    def _work_left(self, view: PlanView) -> tuple[list[float], list[list[int]]]:
        now = clock.now()
        in_flight = [max(1.0, (self.budget.cost(run[0].updates) or 0.0) - (now - t))
                     for run, t in self.in_flight.values()]
        stages = [[(x if isinstance(x, int) else x[0].updates) for x in st
                   if isinstance(x, int) or self.spec_of(x).run_id not in self.in_flight] for st in view.stages]
        return in_flight, stages

    def _collect_garbage(self) -> None:
        """Delete the saved models of screened recipes that were not confirmed: they never get every seed, so
        they cannot be chosen (the database keeps their results)."""
        started = set(self.results) | {run for run, _ in self.in_flight.values()}
        view = self.planner.plan(self.results, started, self.limits)
        if view.stage == "screen":
            return
        s0, u0 = self.planner.seeds[0], self.planner.space.updates[0]
        alive = {c for c, _ in view.needed} | {c for c, s in started if s != s0 or c.updates != u0}
        for c, s in self.results:
            if c not in alive and self.folder_of((c, s)).exists():
                shutil.rmtree(self.folder_of((c, s)), ignore_errors=True)


def cleanup_runs(runs_dir: Path) -> None:
    """The chosen model has been copied out: drop every run's saved model (the database keeps the results)."""
    shutil.rmtree(runs_dir, ignore_errors=True)

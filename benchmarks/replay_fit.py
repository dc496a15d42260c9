#!/usr/bin/env python
"""What would `stabletune fit` choose with another budget or plan? Replayed on the exhaustive grids' runs.

    python benchmarks/replay_fit.py                     # fit's automatic budget, then 10-60 min; both grids
    python benchmarks/replay_fit.py --budgets auto,20,40

``benchmarks/bench_fit.py`` runs, on sentiment and similarity, every cell of fit's grid with fit's seeds, and a
grid run is the run fit makes for that recipe and seed (same configuration and seed: the same scores to every
digit; ``report.json`` -> ``shipped_test_equals_grid_twin``). So fit's decisions can be replayed without training:
this script drives fit's own search loop (:class:`stabletune.fitting.search.Search`: the planner, the budget's estimates,
trims and undos) with a backend that answers each run with its grid result after its measured wall time on a
simulated clock (2 workers, as the grid ran). It prints, per budget, the runs fit would make, the simulated wall
time, the trims, the chosen recipe with its mean validation score and its mean test score over seeds (the grid
cell's), and the distance to the grid's best-validation cell, the benchmark's target.

What it does not model: the time between runs (loading a worker, writing the store; a few seconds), and a run's
wall time on a busier or quieter machine (each run takes the time it took in the grid). It reads only
``report.json`` (committed), so it runs anywhere in seconds and never imports torch's training code.
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import sys
import tempfile
from pathlib import Path

import stabletune.fitting.clock as fit_clock
from stabletune.config import make_config
from stabletune.fitting import Budget, FitPlanner, Limits, SearchSpace, model_shape, search_space
from stabletune.fitting.search import Search
from stabletune.metrics import NAN_SCORE
from stabletune.study.store import Store

ROOT = Path(__file__).resolve().parents[1]


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class MissingRun(Exception):
    """fit would make a run the grid has not made (yet)."""


class ReplayBackend:
    """A backend whose runs take their grid run's measured wall time on a simulated clock and return its score."""

    name = "replay"
    threads = 1

    def __init__(self, capacity: int, runs: dict[tuple[str, int], dict], metric: str, fixed_s: float,
                 clock: _Clock):
        self.capacity, self.runs, self.metric, self.fixed_s, self.clock = capacity, runs, metric, fixed_s, clock
        self.search: Search | None = None
        self.queue: list[tuple[float, int, str]] = []
        self.n = 0

    def start(self) -> None:
        pass

    def submit(self, job: dict) -> None:
        cand, seed = self.search.by_id[job["run_id"]]
        grid_run = self.runs.get((cand.slug, seed))
        if grid_run is None:
            raise MissingRun(f"{cand.key} seed {seed}")
        self.n += 1
        heapq.heappush(self.queue, (self.clock.t + grid_run["wall_s"], self.n, job["run_id"]))

    def progress(self) -> list:
        return []

    def wait(self, timeout: float) -> list[dict]:
        if not self.queue:
            return []
        end, _, run_id = heapq.heappop(self.queue)
        self.clock.t = end
        cand, seed = self.search.by_id[run_id]
        r = self.runs[(cand.slug, seed)]
        wall = r["wall_s"]
        # the grid keeps each run's wall time; its training part is that minus the rung-independent part
        timings = {"wall_s": wall, "train_s": max(0.1 * wall, wall - self.fixed_s)}
        result = {"status": "finished" if r["status"] == "finished" else r["status"],
                  "task": {"metric": self.metric}, "best": {"val": {self.metric: r["best_val"]}, "step": 1},
                  "last": {}, "num_steps": cand.updates, "timings": timings}
        return [{"run_id": run_id, "ok": True, "result": result}]

    def close(self, cancel: bool = False) -> None:
        self.queue.clear()


def fixed_part(runs: list[dict], updates: list[int]) -> float:
    """The part of a run's wall time that does not grow with its updates (loading, the 10 evaluations): the
    intercept of the least-squares line through the rungs' median wall times (0 with one rung: no line)."""
    if len(set(updates)) < 2:
        return 0.0
    xs = list(updates)
    ys = [statistics.median(r["wall_s"] for r in runs if r["updates"] == u) for u in updates]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return max(0.0, my - slope * mx)


def replay(grid: dict, space: SearchSpace, metric: str, budget_s: float | None, limits: Limits,
           workers: int = 2) -> dict:
    """fit's search (``space``: fit's for this model and data) on the grid's runs with ``budget_s`` seconds
    (None: fit's automatic budget)."""
    g = grid["grid"]
    if (list(space.lrs), list(space.layers), list(space.updates)) != (g["lrs"], g["layers"], g["updates"]):
        raise SystemExit(f"fit's grid for this model and data {space.to_dict()} is not the benchmark's {g}")
    runs = {}
    flat = []
    for u, rung in grid["rungs"].items():
        for r in rung["runs"]:
            runs[(r["method"], r["seed"])] = r
            flat.append({**r, "updates": int(u)})
    clock = _Clock()
    backend = ReplayBackend(workers, runs, metric, fixed_part(flat, [int(u) for u in grid["rungs"]]), clock)
    real_now = fit_clock.now
    fit_clock.now = clock  # the budget and the search read the simulated clock
    try:
        with tempfile.TemporaryDirectory() as tmp:
            budget = Budget(budget_s, workers, start=0.0, grid=[c.updates for c in space.grid() for _ in range(3)])
            with Store.open(Path(tmp) / "fit.db", create=True) as store:
                search = Search(planner=FitPlanner(space, [0, 1, 2], NAN_SCORE), store=store, backend=backend,
                                budget=budget, limits=limits, base_cfg=make_config({"model": "minilm-l6", "task": "sst2"}),
                                task_name="replay", runs_dir=Path(tmp) / "runs", progress=False)
                backend.search = search
                view = search.run()
    finally:
        fit_clock.now = real_now
    choice = view.choice
    cell = grid["cells"][choice.candidate.key]
    return {"runs": len(search.results), "wall_s": clock.t, "trimmed": list(budget.trimmed),
            "budget_s": budget.resolve(), "grid_estimate_s": budget.grid_estimate,
            "choice": choice.candidate.key, "val": choice.mean, "test": cell["mean_test"],
            "gap": grid["best_val_cell_mean_test"] - cell["mean_test"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "results" / "fit" / "report.json"))
    p.add_argument("--datasets", default="sentiment,similarity")
    p.add_argument("--budgets", default="auto,10,15,20,25,30,40,50,60",
                   help="minutes or auto (fit's default), comma-separated")
    args = p.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    for name in args.datasets.split(","):
        d = report["datasets"][name]
        grid = d.get("grid")
        if not grid or not grid.get("rungs"):
            print(f"{name}: no grid in {args.report}; run bench_fit.py --parts grid first")
            continue
        metric = "spearman" if name == "similarity" else "acc"
        depth, hidden = model_shape(report["model"])
        space = search_space(depth=depth, hidden=hidden, n_train=d["sizes"]["train"], batch_size=32)
        print(f"\n{name}: grid {grid['wall_s'] / 60:.1f} min; best-validation cell {grid['best_val_cell']} "
              f"(mean test {grid['best_val_cell_mean_test']:.4f})")
        print("| budget | runs | wall (sim.) | trimmed | choice | mean val | mean test | best cell - choice |")
        print("|---:|---:|---:|---|---|---:|---:|---:|")
        for text in args.budgets.split(","):
            seconds = None if text.strip() == "auto" else float(text) * 60
            try:
                r = replay(grid, space, metric, seconds, Limits())
            except MissingRun as e:  # a grid still running: budgets whose plan stays within its finished rungs
                print(f"| {text} | fit would run {e}, not in the grid yet | | | | | | |")
                continue
            label = (f"auto: {r['budget_s'] / 60:.1f} min (grid est. {r['grid_estimate_s'] / 60:.0f})"
                     if seconds is None else f"{text} min")
            print(f"| {label} | {r['runs']} | {r['wall_s'] / 60:.1f} min | {', '.join(r['trimmed']) or '-'} "
                  f"| {r['choice']} | {r['val']:.4f} | {r['test']:.4f} | {r['gap']:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The time budget of ``fit``: parsing ``--budget``, estimating run costs from the runs so far, and what a resumed fit has already spent."""

from __future__ import annotations

import json
import math
from pathlib import Path

from stabletune.errors import ConfigError
from stabletune.fitting import clock


DEFAULT_BUDGET = "auto"
"""Default time budget of a fit: :data:`AUTO_BUDGET_FRACTION` of the exhaustive grid's estimated wall time
(:class:`Budget`); docs/fit.md says what it is and buys on a 2-core machine."""
AUTO_BUDGET_FRACTION = 0.2
"""The automatic budget: a fifth of what running every cell of the grid with every seed would take here. The
whole plan is ~16 % of the grid in run-time units (docs/fit.md), so it fits with room for idle workers; a budget
in minutes would buy the whole plan on short texts and a third of it on sentence pairs (issue 10's benchmark)."""

FINALIZE_RESERVE_S = 15.0
"""Budget kept back for writing the output folder (model copy, test scoring, card, figure)."""
SPENT_FILE = "spent.json"
"""In ``OUT/search/``: the budget seconds spent by the calls so far, updated after each stored run."""


def read_spent(spent_file: Path, key: str = "spent_s") -> float:
    """Budget seconds spent by earlier calls of a resumed fit (0 for a new fit); ``key="budget_s"``: the
    automatic budget they fixed (0: none yet)."""
    try:
        return max(0.0, float(json.loads(spent_file.read_text(encoding="utf-8"))[key]))
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or torn by a kill: count nothing
        return 0.0


def parse_budget(text: str | float | None) -> float | None:
    """Seconds of a budget: ``900``, ``90s``, ``20m``, ``1.5h``; ``auto`` (or None): None, the automatic budget.
    Raises ConfigError."""
    units = {"s": 1, "m": 60, "min": 60, "h": 3600}
    raw = str(text).strip().lower()
    if text is None or raw == "auto":
        return None
    number, unit = raw, "s"
    for suffix in sorted(units, key=len, reverse=True):
        if raw.endswith(suffix):
            number, unit = raw[:-len(suffix)].strip(), suffix
            break
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ConfigError(f"invalid option --budget: {text!r} (use auto, seconds, or 90s, 20m, 1.5h)") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"invalid option --budget: must be > 0, got {text!r}")
    return seconds


# ------------------------------------------------------------------------------------------------
# The budget
# ------------------------------------------------------------------------------------------------
class Budget:
    """Estimates run cost from the runs so far and trims the plan (:data:`TRIMS`) to end within the budget.

    A run costs ``fixed + per_update * updates`` seconds: ``per_update`` from the finished runs' training time
    per update (or, before any finishes, the running runs' time per step), ``fixed`` (loading, evaluations,
    writing) from their wall time minus training time. Work left is laid out on the workers stage by stage
    (a stage starts when the previous one ends), longest run first.

    ``seconds=None`` is the automatic budget: once the first run has finished, it is fixed at
    :data:`AUTO_BUDGET_FRACTION` of the estimated wall time of ``grid`` (the numbers of updates of every run of
    the exhaustive grid) on the workers, so it scales with the data, the model and the machine.

    ``spent_file`` (``OUT/search/spent.json``) is where the spending is kept after each stored run; a Budget made
    on an existing one belongs to a resumed fit and starts from it.
    """

    def __init__(self, seconds: float | None, workers: int, *, start: float | None = None,
                 spent_file: Path | None = None, grid: list[int] | None = None):
        self.auto = seconds is None
        self.seconds, self.workers = (None if seconds is None else float(seconds)), max(1, workers)
        self.grid = list(grid or [])
        self.grid_estimate: float | None = None
        self.spent_file = spent_file
        # a resumed fit: its earlier calls' spending counts (up to their last stored run; work killed in flight is
        # redone and counted again), so kill + rerun cannot double the budget; an automatic budget they fixed stays
        self.earlier = read_spent(spent_file) if spent_file is not None else 0.0
        if self.auto and spent_file is not None:  # 0 (none fixed yet) stays None
            self.seconds = read_spent(spent_file, "budget_s") or None
            self.grid_estimate = read_spent(spent_file, "grid_estimate_s") or None
        self.start = (clock.now() if start is None else start) - self.earlier
        self.fixed: list[float] = []
        self.per_update: list[float] = []
        self.live_rate: dict[str, float] = {}
        self.trimmed: list[str] = []

    def elapsed(self) -> float:
        """Seconds of the budget spent: this call's, plus the earlier calls' of a resumed fit."""
        return clock.now() - self.start

    def save_spent(self) -> None:
        """Record the budget spent so far (after each stored run), for a later call that resumes this fit."""
        if self.spent_file is not None:
            from stabletune.engine.runlog import write_json

            write_json(self.spent_file, {"spent_s": self.elapsed(),
                                         **({"budget_s": self.seconds, "grid_estimate_s": self.grid_estimate}
                                            if self.auto and self.seconds else {})})

    def resolve(self) -> float | None:
        """The budget in seconds; an automatic one is fixed here once a run has finished (None before)."""
        if self.seconds is None and self.known():
            if not self.grid:
                raise ValueError("an automatic budget needs the grid's runs")
            self.grid_estimate = self.makespan([], [self.grid])
            self.seconds = AUTO_BUDGET_FRACTION * self.grid_estimate
        return self.seconds

    def observe(self, timings: dict, steps: int | None) -> None:
        wall, train_s = timings.get("wall_s"), timings.get("train_s")
        if wall is None or train_s is None or not steps:
            return
        self.per_update.append(train_s / steps)
        self.fixed.append(max(0.0, wall - train_s))

    def observe_live(self, run_id: str, step: int, total: int, seconds: float) -> None:
        if total and step >= 0.1 * total:  # the first steps carry the run's start-up
            self.live_rate[run_id] = seconds / step

    def forget_live(self, run_id: str) -> None:
        self.live_rate.pop(run_id, None)

    def known(self) -> bool:
        """Whether a run has finished: trims wait for one (a running run's early steps include its start-up)."""
        return bool(self.per_update)

    def cost(self, updates: int) -> float | None:
        """Estimated wall seconds of one run of ``updates`` updates (None: nothing measured yet)."""
        import statistics

        if self.per_update:
            return statistics.median(self.fixed) + statistics.median(self.per_update) * updates
        if self.live_rate:  # before any run has finished: the slowest running run's seconds per step so far
            return max(self.live_rate.values()) * updates
        return None

    def makespan(self, in_flight: list[float], stages: list[list[int]]) -> float:
        """Seconds until the work left is done: runs in flight (their remaining seconds), then each stage (the
        updates of its runs) laid out on the workers longest first; a stage after the first waits for all work
        before it (conservative: the plan starts some runs of the next stage early)."""
        n = max(self.workers, len(in_flight))
        free = sorted(in_flight) + [0.0] * (n - len(in_flight))
        for i, stage in enumerate(stages):
            if i > 0 and stage:
                free = [max(free)] * n
            for u in sorted(stage, reverse=True):
                j = min(range(n), key=free.__getitem__)
                free[j] += self.cost(u) or 0.0
        return max(free) if free else 0.0

    def left(self) -> float:
        if self.resolve() is None:  # automatic, nothing measured yet: nothing is trimmed before a run finishes
            return math.inf
        return self.seconds - FINALIZE_RESERVE_S - self.elapsed()

    def fits(self, in_flight: list[float], stages: list[list[int]]) -> bool:
        return self.makespan(in_flight, stages) <= self.left()

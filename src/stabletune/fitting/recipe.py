"""`stabletune fit`: the paper's conclusions as one command (Zhang et al., ICLR 2021, Sections 4-6).

The paper's advice to practitioners is a recipe: debiased Adam (Section 4), re-initialise the pooler and the top
``L`` blocks (Section 5), train longer than three epochs (Section 6), and judge a recipe by several seeds, never
one. :func:`fit` searches those levers on the validation set within a time budget and ships the best model.

The search (documented with its grid in ``docs/fit.md``):

- **Grid** (:func:`search_space`), adapted to the model: three learning rates by hidden size (the embedded
  6-layer MiniLM needs ~1e-4, docs/LOG.md 2026-11-26), ``L`` in {0, ceil(depth/6), ceil(depth/3)}, and the
  number of updates in {3 epochs, then the next two of Section 6's {200, 400, 800, 1600, 3200} that are at least
  1.5x as long}. Debiased Adam always.
- **Successive halving with seeds and updates as the resources** (:class:`FitPlanner`): a *screen* trains one
  seed, for three epochs, of the learning rates (at the anchor ``L``) and of the ``L`` values (at the anchor
  learning rate), then their best combination; the best ``confirm`` recipes get every seed at the first longer
  rung (three epochs only triage: their seed spread can exceed the differences between recipes); the best of
  those climbs the length ladder, one rung at a time while a longer rung improves the mean. A recipe is judged by
  its **mean** validation score over all seeds; a failed seed or an undefined score counts as 0
  (:data:`stabletune.metrics.NAN_SCORE`), it is not dropped. Every chosen recipe has all seeds.
- **Budget** (:class:`Budget`): run cost is estimated from the runs so far (fixed part + per-update part, from
  their timings); when the remaining plan would overrun, the plan is trimmed in a fixed order (:data:`TRIMS`).
  The default budget is automatic: a fifth of the exhaustive grid's estimated wall time.
- **Store**: a study database (``OUT/search/fit.db``, :class:`stabletune.study.store.Store`): every run is
  stored in one transaction; a killed fit resumes without recomputing finished runs.

Why not Optuna: its pruners judge one trial (one run) against other trials at the same step; our unit of
judgement is a recipe's mean over seeds with failed seeds counted, and our rungs are seeds and schedule lengths
(a run's early evaluations are not a shorter run: the learning rate decays to zero at the run's own end). The
whole plan is a small deterministic function of the stored scores (:class:`FitPlanner`), which is also what
makes resuming exact; an Optuna study would be a second store to keep in step with this one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from stabletune.outputs import staged_file, staged_folder
from stabletune.config import FIELDS, RunConfig, make_config
from stabletune.errors import ConfigError, UserError
from stabletune.metrics import NAN_SCORE

log = logging.getLogger(__name__)

DEFAULT_BUDGET = "auto"
"""Default time budget of a fit: :data:`AUTO_BUDGET_FRACTION` of the exhaustive grid's estimated wall time
(:class:`Budget`); docs/fit.md says what it is and buys on a 2-core machine."""
AUTO_BUDGET_FRACTION = 0.2
"""The automatic budget: a fifth of what running every cell of the grid with every seed would take here. The
whole plan is ~16 % of the grid in run-time units (docs/fit.md), so it fits with room for idle workers; a budget
in minutes would buy the whole plan on short texts and a third of it on sentence pairs (issue 10's benchmark)."""
DEFAULT_SEEDS = 3
LENGTH_LADDER = (200, 400, 800, 1600, 3200)
"""Section 6: numbers of updates tried beyond three epochs."""
LONGER_FACTOR = 1.5
"""A longer rung must be at least this many times three epochs (else it is hardly longer)."""
FAIL_FAST = 3
"""A fit whose first runs all fail stops (the same error would fail every run)."""
FINALIZE_RESERVE_S = 15.0
"""Budget kept back for writing the output folder (model copy, test scoring, card, figure)."""
SPENT_FILE = "spent.json"
"""In ``OUT/search/``: the budget seconds spent by the calls so far, updated after each stored run."""


def _now() -> float:
    """The clock of the budget (a function of its own so that tests can drive it)."""
    return time.monotonic()


def _read_spent(spent_file: Path, key: str = "spent_s") -> float:
    """Budget seconds spent by earlier calls of a resumed fit (0 for a new fit); ``key="budget_s"``: the
    automatic budget they fixed (0: none yet)."""
    try:
        return max(0.0, float(json.loads(spent_file.read_text(encoding="utf-8"))[key]))
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or torn by a kill: count nothing
        return 0.0


#: Options fit decides itself (the rest of RunConfig can be passed through).
DECIDED = {
    "lr": "the learning rate is searched", "reinit_layers": "L is searched", "reinit_pooler": "tied to L",
    "max_steps": "the number of updates is searched", "epochs": "the number of updates is searched",
    "optimizer": "fit always uses debiased Adam (Section 4)", "seed": "fit trains seeds 0..N-1 (--seeds)",
    "init_seed": "fit trains seeds 0..N-1 (--seeds)", "data_seed": "fit trains seeds 0..N-1 (--seeds)",
    "out": "fit writes OUT", "save_model": "fit saves the chosen model", "overwrite": "use fit's --overwrite",
    "progress": "fit shows its own progress", "test_file": "give fit's --test-file",
    "warmup_steps": "warm-up is 10 % of each candidate's updates",
}


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
# The grid
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Candidate:
    """One recipe: peak learning rate, re-initialised top blocks (``layers`` > 0 also re-initialises the
    pooler, Section 5) and number of updates."""

    lr: float
    layers: int
    updates: int

    @property
    def key(self) -> str:
        return f"lr={self.lr:g} L={self.layers} updates={self.updates}"

    @property
    def slug(self) -> str:
        return f"lr{self.lr:g}-L{self.layers}-u{self.updates}"

    def overrides(self) -> dict[str, Any]:
        return {"lr": self.lr, "reinit_layers": self.layers, "reinit_pooler": self.layers > 0,
                "max_steps": self.updates}

    def words(self) -> str:
        reinit = ("no re-initialisation" if self.layers == 0 else
                  f"the pooler and the top {self.layers} block{'s' if self.layers > 1 else ''} re-initialised")
        return f"peak learning rate {self.lr:g}, {reinit}, {self.updates} updates"


@dataclass(frozen=True)
class SearchSpace:
    """The levers fit searches. ``lrs``/``layers``/``updates`` ascending; anchors are the screen's fixed points."""

    lrs: tuple[float, ...]
    layers: tuple[int, ...]
    updates: tuple[int, ...]
    anchor_lr: float
    anchor_layers: int

    def __post_init__(self) -> None:
        if not self.lrs or not self.layers or not self.updates:
            raise ValueError("a search space needs at least one learning rate, L and number of updates")
        if self.anchor_lr not in self.lrs or self.anchor_layers not in self.layers:
            raise ValueError("the anchors must be values of the grid")
        if any(u <= 0 for u in self.updates) or any(v <= 0 for v in self.lrs) or any(v < 0 for v in self.layers):
            raise ValueError("learning rates and updates must be > 0, L >= 0")

    def grid(self) -> list[Candidate]:
        """Every cell (the exhaustive grid benchmarks/bench_fit.py compares with)."""
        return [Candidate(lr, n, u) for u in self.updates for lr in self.lrs for n in self.layers]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_grid(hidden: int) -> tuple[float, ...]:
    """Three peak learning rates by model width: small models need larger steps (MiniLM, hidden 384: 2e-5
    barely moves it in 96 updates, 1e-4 works, docs/LOG.md); BERT-Large (1024) is tuned around 2e-5 (Section 3)."""
    if hidden < 768:
        return (5e-5, 1e-4, 2e-4)
    if hidden < 1024:
        return (2e-5, 5e-5, 1e-4)
    return (1e-5, 2e-5, 5e-5)


def layer_grid(depth: int) -> tuple[int, ...]:
    """Re-initialised top blocks: 0 and about a sixth and a third of the depth (6 layers: 0, 1, 2; 12: 0, 2, 4;
    24: 0, 4, 8; the paper's best L for BERT-Large lies in that range, Section 5), below the full depth."""
    return tuple(sorted({n for n in (0, math.ceil(depth / 6), math.ceil(depth / 3)) if n < max(depth, 1)}))


def update_grid(n_train: int, batch_size: int) -> tuple[int, ...]:
    """Three epochs, then the next two of Section 6's ladder at least :data:`LONGER_FACTOR` x longer."""
    three = 3 * math.ceil(n_train / batch_size)
    longer = [u for u in LENGTH_LADDER if u >= LONGER_FACTOR * three][:2]
    return (three, *longer)


def search_space(*, depth: int, hidden: int, n_train: int, batch_size: int) -> SearchSpace:
    """The grid for a model of ``depth`` blocks and width ``hidden`` on ``n_train`` training examples."""
    lrs, layers = lr_grid(hidden), layer_grid(depth)
    anchor_layers = layers[1] if len(layers) > 1 else layers[0]
    return SearchSpace(lrs=lrs, layers=layers, updates=update_grid(n_train, batch_size),
                       anchor_lr=lrs[len(lrs) // 2], anchor_layers=anchor_layers)


def model_shape(model: str) -> tuple[int, int]:
    """``(depth, hidden)`` of a model from its config alone (no weights loaded)."""
    from transformers import AutoConfig

    from stabletune.model import _hub_error, resolve_model

    source = resolve_model(model)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise _hub_error(source, e) from None
    depth = next((getattr(config, a) for a in ("num_hidden_layers", "n_layer", "encoder_layers", "num_layers")
                  if isinstance(getattr(config, a, None), int)), None)
    hidden = next((getattr(config, a) for a in ("hidden_size", "d_model", "dim")
                   if isinstance(getattr(config, a, None), int)), None)
    if depth is None or hidden is None:
        raise UserError(f"model {model}: cannot tell its depth and width from its config ({config.model_type})")
    return depth, hidden


# ------------------------------------------------------------------------------------------------
# Scores
# ------------------------------------------------------------------------------------------------


@dataclass
class SeedResult:
    """One finished run of a candidate: its best-checkpoint validation score (None: failed or undefined)."""

    status: str
    val: float | None
    degenerate: bool
    wall_s: float | None = None
    run_id: str | None = None
    best_step: int | None = None


@dataclass
class CandidateSummary:
    candidate: Candidate
    seeds: dict[int, SeedResult]
    mean: float | None
    std: float | None
    degenerate: int
    complete: bool


def summarise(candidate: Candidate, results: dict[int, SeedResult], seeds: list[int], floor: float
              ) -> CandidateSummary:
    """Mean and std of the validation score over the seeds run so far; failed/NaN seeds count as ``floor``."""
    import numpy as np

    done = {s: r for s, r in results.items() if s in seeds}
    values = [floor if r.val is None or not math.isfinite(r.val) else r.val for r in done.values()]
    mean = float(np.mean(values)) if values else None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)
    return CandidateSummary(candidate, done, mean, std, sum(r.degenerate for r in done.values()),
                            complete=all(s in done for s in seeds))


# ------------------------------------------------------------------------------------------------
# The plan: successive halving over seeds, then longer training
# ------------------------------------------------------------------------------------------------
@dataclass
class Limits:
    """How much of the plan to run; :class:`Budget` lowers them (:data:`TRIMS`) when time runs short."""

    screen: int | None = None
    """Screen candidates to start, in priority order (None: all; the combination comes on top)."""
    combo: bool = True
    """Screen the best learning rate with the best L when that pair was not screened."""
    confirm: int = 2
    """Screened recipes that get every seed."""
    longer: bool = True
    """Confirm (give every seed) at the first longer rung, not at three epochs (Section 6)."""
    ladder: int = 1
    """Rungs beyond the confirmation rung that the best confirmed recipe may climb (each only if the previous
    one improved its mean)."""


#: Trim order (first = least harmful): (description, trim): ``trim(limits, n_lrs)`` lowers one limit and returns
#: whether it could. ``n_lrs``: the screen's learning-rate part (the other L come after it). Screening other L
#: values goes before the second confirmed recipe: the anchor L already re-initialises the top block (Section 5),
#: and a second recipe confirmed on longer training is what catches a screen misranked by three-epoch seed noise
#: (docs/fit.md, the similarity grid). Longer training goes last but one: three epochs are what Section 6 finds
#: too short on small data.
TRIMS: list[tuple[str, Callable[[Limits, int], bool]]] = [
    ("no second longer rung", lambda l, n: l.ladder > 0 and not setattr(l, "ladder", 0)),
    ("no combination screen", lambda l, n: l.combo and not setattr(l, "combo", False)),
    ("learning rates screened at one L only",
     lambda l, n: l.screen is not None and l.screen > n and not setattr(l, "screen", n)),
    ("one recipe confirmed", lambda l, n: l.confirm > 1 and not setattr(l, "confirm", 1)),
    ("no longer training", lambda l, n: l.longer and not setattr(l, "longer", False)),
    ("smaller screen", lambda l, n: l.screen is not None and l.screen > 1 and not setattr(l, "screen", l.screen - 1)),
]

Run = tuple[Candidate, int]


@dataclass
class PlanView:
    """What the plan needs now, given the results so far."""

    needed: list[Run]
    """Runs certainly part of the plan that have no result yet (in flight included), in priority order."""
    stages: list[list[Run | int]]
    """Remaining work by stage (for the budget): runs, or placeholders = numbers of updates of runs whose
    candidate is not known yet."""
    stage: str
    complete: list[CandidateSummary]
    choice: CandidateSummary | None
    finished: bool


class FitPlanner:
    """The search as a pure function of the stored results (so a resumed fit takes the same decisions)."""

    def __init__(self, space: SearchSpace, seeds: list[int], floor: float):
        if len(seeds) < 1:
            raise ValueError("fit needs at least one seed")
        self.space, self.seeds, self.floor = space, list(seeds), floor

    def screen_list(self) -> list[Candidate]:
        """Learning rates at the anchor L (anchor first, then outward), then the other L at the anchor lr."""
        sp, u0 = self.space, self.space.updates[0]
        lrs = sorted(sp.lrs, key=lambda lr: (abs(math.log(lr / sp.anchor_lr)), -lr))
        layers = sorted((n for n in sp.layers if n != sp.anchor_layers), key=lambda n: abs(n - sp.anchor_layers))
        return ([Candidate(lr, sp.anchor_layers, u0) for lr in lrs]
                + [Candidate(sp.anchor_lr, n, u0) for n in layers])

    def _score(self, r: SeedResult) -> float:
        return self.floor if r.val is None or not math.isfinite(r.val) else r.val

    def summary(self, c: Candidate, results: dict[Run, SeedResult]) -> CandidateSummary:
        return summarise(c, {s: results[(c, s)] for s in self.seeds if (c, s) in results}, self.seeds, self.floor)

    def plan(self, results: dict[Run, SeedResult], started: set[Run], limits: Limits) -> PlanView:
        """The runs needed now and the work left. ``started``: runs with a result or in flight."""
        s0, rest, sp = self.seeds[0], self.seeds[1:], self.space
        u0 = sp.updates[0]
        needed: list[Run] = []
        stages: list[list[Run | int]] = [[], [], []]

        def need(run: Run, stage: int) -> None:
            if run not in results:
                if run not in needed:
                    needed.append(run)
                stages[stage].append(run)

        # --- screen: one seed each -----------------------------------------------------------------
        prio = self.screen_list()
        screen = [c for i, c in enumerate(prio) if limits.screen is None or i < limits.screen or (c, s0) in started]
        # a combination screened before (a trim may have switched combinations off since) still counts
        screen += sorted(c for c, s in started if s == s0 and c.updates == u0 and c not in screen)
        for c in screen:
            need((c, s0), 0)
        combo_open = False
        if limits.combo:
            by_lr = [c for c in screen if c.layers == sp.anchor_layers and c in prio]
            by_l = [c for c in screen if c.lr == sp.anchor_lr and c in prio]
            if all((c, s0) in results for c in by_lr + by_l):
                combo = Candidate(self._best(by_lr, results, s0).lr, self._best(by_l, results, s0).layers, u0)
                if combo not in screen:
                    screen.append(combo)
                    need((combo, s0), 0)
            else:
                combo_open = True
                stages[0].append(u0)
        open_screen = sum((c, s0) not in results for c in screen) + combo_open

        # --- confirm: the best screened recipes get every seed, on longer training -----------------------
        # Three epochs are too few on small data (Section 6) and their seed spread can exceed the differences
        # between recipes, so the screen only triages: the confirmed recipes are judged at the first longer rung
        # (all seeds there), unless the budget trimmed longer training (then at three epochs, the screen seed
        # counting as one of the seeds).
        longer = sp.updates[1:]
        judge = longer[0] if longer and limits.longer else u0

        def seeds_at(u: int) -> list[int]:  # at three epochs the screen seed is one of a recipe's seeds
            return rest if u == u0 else self.seeds

        ranked = sorted((c for c in screen if (c, s0) in results),
                        key=lambda c: (-self._score(results[(c, s0)]), screen.index(c)))
        k = limits.confirm
        if open_screen:  # start the ones already sure to be among the best k (the rest can only pass below them)
            confirmed = [c for i, c in enumerate(ranked) if i + open_screen < k]
            stages[1] += [judge] * ((k - len(confirmed)) * len(seeds_at(judge)))
        else:
            confirmed = ranked[:k]
        confirmed = [replace(c, updates=judge) for c in confirmed]
        # recipes confirmed before a trim (fewer recipes, or no longer training) keep their seeds: nothing
        # started is thrown away
        for u in sp.updates[:2]:
            confirmed += [replace(c, updates=u) for c in ranked if replace(c, updates=u) not in confirmed
                          and any((replace(c, updates=u), s) in started for s in seeds_at(u))]
        for c in confirmed:
            for s in seeds_at(c.updates):
                need((c, s), 1)
        stage = "screen" if open_screen else "confirm"

        # --- lengthen: the best confirmed recipe climbs the ladder, one rung at a time while it helps ---------
        confirm_done = not open_screen and all((c, s) in results for c in confirmed for s in seeds_at(c.updates))
        ladder = [u for u in sp.updates if u > judge] if judge != u0 else []
        if ladder and limits.ladder > 0:
            if not confirm_done:
                stages[2] += [ladder[0]] * len(self.seeds)
            else:
                stage = "lengthen"
                at_judge = [c for c in confirmed if c.updates == judge]
                previous = min(at_judge, key=lambda c: (-self.summary(c, results).mean, at_judge.index(c)))
                for rung, u in enumerate(ladder):
                    cand = replace(previous, updates=u)
                    if rung >= limits.ladder and not any((cand, s) in started for s in self.seeds):
                        break
                    for s in self.seeds:
                        need((cand, s), 2)
                    if not all((cand, s) in results for s in self.seeds):
                        break
                    if self.summary(cand, results).mean <= self.summary(previous, results).mean:
                        break  # longer did not help: stop climbing
                    previous = cand
        # --- the choice among recipes with every seed -------------------------------------------------
        cands = sorted({c for c, _ in results}, key=lambda c: (c.updates, self._order(c, screen)))
        complete = [self.summary(c, results) for c in cands]
        complete = [s for s in complete if s.complete]
        choice = None
        for s in complete:  # ties go to the fewer updates, then the screen order
            if choice is None or s.mean > choice.mean:
                choice = s
        finished = not needed and not any(stages)
        return PlanView(needed, [s for s in stages], "done" if finished else stage, complete, choice, finished)

    def _order(self, c: Candidate, screen: list[Candidate]) -> int:
        base = replace(c, updates=self.space.updates[0])
        return screen.index(base) if base in screen else len(screen)

    def _best(self, cands: list[Candidate], results: dict[Run, SeedResult], seed: int) -> Candidate:
        return min(cands, key=lambda c: (-self._score(results[(c, seed)]), cands.index(c)))


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
        self.earlier = _read_spent(spent_file) if spent_file is not None else 0.0
        if self.auto and spent_file is not None:  # 0 (none fixed yet) stays None
            self.seconds = _read_spent(spent_file, "budget_s") or None
            self.grid_estimate = _read_spent(spent_file, "grid_estimate_s") or None
        self.start = (_now() if start is None else start) - self.earlier
        self.fixed: list[float] = []
        self.per_update: list[float] = []
        self.live_rate: dict[str, float] = {}
        self.trimmed: list[str] = []

    def elapsed(self) -> float:
        """Seconds of the budget spent: this call's, plus the earlier calls' of a resumed fit."""
        return _now() - self.start

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


# ------------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------------
class _Progress:
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


# ------------------------------------------------------------------------------------------------
# The result
# ------------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """What :func:`fit` returns (and writes as ``fit.json``)."""

    out_dir: str
    choice: dict
    candidates: list[dict]
    test: dict | None
    record: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# fit()
# ------------------------------------------------------------------------------------------------
def fit(*, out: str | os.PathLike, train_file: str | None = None, dev_file: str | None = None,
        test_file: str | None = None, task: str | None = None, data_dir: str | None = None,
        text_columns: list[str] | str | None = None, label_column: str = "label", task_type: str = "auto",
        model: str = "minilm-l6", metric: str | None = None, budget: float | str | None = DEFAULT_BUDGET,
        seeds: int = DEFAULT_SEEDS, workers: int | None = None, overwrite: bool = False, progress: bool = True,
        space: SearchSpace | None = None, limits: Limits | None = None, run_fn: Callable | None = None,
        **run_options: Any) -> FitResult:
    """Search the paper's levers on validation within ``budget`` seconds and write the chosen model to ``out``.

    Example:
        >>> import stabletune
        >>> res = stabletune.fit(train_file="train.csv", dev_file="val.csv", test_file="test.csv",
        ...                      text_columns=["review"], label_column="sentiment", out="sentiment-model")
        >>> res.choice["recipe"], res.test

    Args:
        out: the output folder (Hugging Face model + ``fit.json`` + ``README.md`` + ``fit.png``; the search's
            database and runs under ``out/search/``). An unfinished fit in ``out`` is resumed.
        train_file, dev_file, test_file: your CSV/JSONL files. The dev file is the validation set (without
            one, 10 % of the training file, stratified); the test file is scored on the final model only.
        task, data_dir: a GLUE task instead (its ``split``, default paper-small, or paper-1k for the large
            tasks, gives validation and test).
        text_columns, label_column, task_type: as for ``stabletune train``.
        model: hub name, local folder or ``minilm-l6`` (default, embedded).
        metric: selects checkpoints and recipes (``acc``, ``f1``, ``f1:LABEL``, ``f1_macro``, ``mcc``,
            ``pearson``, ``spearman``); default: accuracy for classes, Spearman for regression.
        budget: wall seconds for the whole fit, or ``"auto"`` (default): a fifth of the exhaustive grid's wall
            time as estimated from the first finished run (:data:`AUTO_BUDGET_FRACTION`).
        seeds: seeds per recipe (at least 3).
        workers: concurrent runs (default: one per core up to 4; 0 runs them in this process).
        overwrite: replace a finished fit in ``out`` (start over).
        space, limits: override the grid and the plan (tests, power users).
        run_fn: the run function (tests); default :func:`stabletune.training.train`.
        run_options: other ``RunConfig`` options for every run (``max_seq_length``, ``batch_size``, ...).

    Raises:
        ConfigError, DataError: bad options or input (before anything is trained).
    """
    _refuse_in_a_spawned_worker()
    t0 = _now()
    if seeds < 3:
        raise ConfigError(f"invalid option --seeds: fit judges every recipe by at least 3 seeds, got {seeds}")
    budget = parse_budget(budget)
    for key in run_options:
        if key in DECIDED:
            raise ConfigError(f"invalid option {key!r} for fit: {DECIDED[key]}")
        if key not in FIELDS:
            raise ConfigError(f"unknown option {key!r}")
    out_dir = Path(out).expanduser().resolve()
    _prepare_out(out_dir, overwrite)

    # --- validate everything a run will read, before anything runs ------------------------------------
    if isinstance(text_columns, str):
        text_columns = [c.strip() for c in text_columns.split(",") if c.strip()]
    base = _base_options(train_file=train_file, dev_file=dev_file, task=task, data_dir=data_dir,
                         text_columns=text_columns, label_column=label_column, task_type=task_type, model=model,
                         metric=metric, run_options=run_options)
    base_cfg = make_config(base)
    from stabletune.engine.setup import check_inputs, load_run_data, resolve_device, resolve_precision

    check_inputs(base_cfg)  # --max-seq-length against the model, before reading data
    # what every run would refuse in its first second, refused before the search starts (issue 23)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ConfigError(f"invalid option --workers: {workers!r} (0 runs in this process, N >= 1 worker processes)")
    resolve_precision(base_cfg.precision, resolve_device(base_cfg.device))

    spec, splits = load_run_data(base_cfg)
    if test_file is not None:
        if base_cfg.split != "files":
            raise ConfigError("invalid option --test-file: with a GLUE task the test set comes from its split; "
                              "give your own --train-file to use a test file")
        test_file = str(Path(test_file).expanduser().resolve())
        load_run_data(replace(base_cfg, test_file=test_file))  # reads and checks the test file
    depth, hidden = model_shape(base_cfg.model)
    space = space or search_space(depth=depth, hidden=hidden, n_train=len(splits.train),
                                  batch_size=base_cfg.batch_size)
    seed_list = list(range(seeds))
    # a failed or NaN seed counts as the worst score, as everywhere (the one NaN rule: metrics.NAN_SCORE)
    planner = FitPlanner(space, seed_list, NAN_SCORE)
    from stabletune.data.batching import encode  # noqa: F401  (fail here, not in a worker, if broken)

    describe = {"kind": "stabletune fit", "base": base, "space": space.to_dict(), "seeds": seed_list,
                "metric": spec.metric, "data_sha256": _fingerprints(base)}
    search_dir = out_dir / "search"
    _refuse_other_options(search_dir / "fit.db", describe)  # resuming is exact or refused, before any write
    search_dir.mkdir(parents=True, exist_ok=True)
    from stabletune.study.backends import make_backend
    from stabletune.study.store import StudyLock, Store

    backend = make_backend("local", workers=workers, run_fn=run_fn)
    # --budget is for the whole fit: a resumed fit's Budget reads what its earlier calls spent from spent.json
    budget_ = Budget(budget, backend.capacity, start=t0, spent_file=search_dir / SPENT_FILE,
                     grid=[c.updates for c in space.grid() for _ in seed_list])
    limits = limits or Limits()
    with StudyLock(search_dir / "fit.db"), Store.open(search_dir / "fit.db", create=True) as store:
        store.save_spec("fit", json.dumps(describe, sort_keys=True, indent=1), None)
        search = _Search(planner=planner, store=store, backend=backend, budget=budget_, limits=limits,
                         base_cfg=base_cfg, task_name=spec.name, runs_dir=search_dir / "runs",
                         progress=progress)
        view = search.run()
        if view.choice is None:
            raise UserError("fit: no recipe finished with every seed (every run failed?); see "
                            f"{search_dir / 'fit.db'} (stabletune study export)")
        t_search = _now() - t0
        result = _finalize(out_dir, view, planner=planner, search=search, spec=spec, base=base, base_cfg=base_cfg,
                           space=space, seeds=seed_list, test_file=test_file, budget=budget_, t_search=t_search,
                           depth=depth, hidden=hidden, val_baseline=majority_baselines_of(splits, spec))
    _cleanup_runs(search_dir / "runs")
    _warn_over_budget(budget, result.record["timings"]["wall_s"], seeds=len(seed_list))
    return result


UNGUARDED = ("stabletune.fit() was called again inside one of its worker processes: worker processes import "
             "your script again, so a script that calls stabletune.fit() must call it under "
             "`if __name__ == \"__main__\":` (docs/fit.md)")


def _main_is_a_script() -> bool:
    """The main module is a user's script (not the stabletune command line, not an interactive session)."""
    main = sys.modules.get("__main__")
    path, spec = getattr(main, "__file__", None), getattr(main, "__spec__", None)
    ours = Path(path or "").name == "stabletune" or (spec is not None and spec.name.startswith("stabletune"))
    return path is not None and not ours


def _refuse_in_a_spawned_worker() -> None:
    """A script that calls fit() at top level (no ``__main__`` guard) is re-run by every worker process it spawns
    (they import the main module as ``__mp_main__``); there fit() would start a fit of its own. Say why, once per
    worker, and end the worker: the fit in the parent then fails fast with :data:`UNGUARDED` as the hint."""
    import multiprocessing

    if multiprocessing.parent_process() is not None and getattr(sys.modules.get("__main__"), "__name__", None) \
            == "__mp_main__":
        sys.stderr.write(f"stabletune: error: {UNGUARDED}\n")
        sys.stderr.flush()
        os._exit(2)


OVER_BUDGET = 1.5
"""A fit that ends past this multiple of its --budget says so (the budget is a target the plan is trimmed to, and
the smallest plan -- one recipe, every seed -- is run whatever the budget)."""


def _warn_over_budget(budget: float | None, wall_s: float, *, seeds: int) -> None:
    from stabletune.study.runner import format_seconds

    if budget is not None and wall_s > OVER_BUDGET * budget:
        log.warning("fit took %s against --budget %s (%.1fx): the smallest plan it can judge, one recipe x %d "
                    "seeds, costs more than that here; give --budget %dm or more for a search", format_seconds(wall_s),
                    format_seconds(budget), wall_s / budget, seeds, math.ceil(2 * wall_s / 60))


def majority_baselines_of(splits, spec) -> float | None:
    """The majority baseline of the validation set (for the model card and degenerate counts)."""
    from stabletune.metrics import majority_baseline
    import numpy as np

    labels = np.asarray([e.label for e in splits.validation])
    return majority_baseline(spec, labels) if len(labels) else None


def _base_options(*, train_file, dev_file, task, data_dir, text_columns, label_column, task_type, model, metric,
                  run_options) -> dict[str, Any]:
    """RunConfig options shared by every run of the fit (absolute paths: run ids must not depend on cwd)."""
    base: dict[str, Any] = {"model": model, "optimizer": "adamw", "progress": False}
    if metric is not None:
        base["metric"] = metric
    if train_file is not None:
        for name, f in (("train_file", train_file), ("dev_file", dev_file)):
            if f is not None:
                base[name] = str(Path(f).expanduser().resolve())
        if data_dir is not None:
            raise ConfigError("invalid option --data-dir: it is where GLUE tasks are read from; with your own "
                              "--train-file it is not used")
        base.update(split="files", text_columns=list(text_columns or []), label_column=label_column,
                    task_type=task_type)
        if task:
            base["task"] = task
    else:
        if task is None:
            raise ConfigError("give --train-file (your data) or --task (a GLUE task)")
        from stabletune.tasks import LARGE_TASKS, get_task

        base["task"] = get_task(task).name
        if data_dir is not None:
            base["data_dir"] = str(Path(data_dir).expanduser().resolve())
        if "split" not in run_options:
            base["split"] = "paper-1k" if base["task"] in LARGE_TASKS else "paper-small"
        if dev_file is not None:
            raise ConfigError("invalid option --dev-file: with a GLUE task validation comes from its split")
    if base.get("model") and Path(str(model)).expanduser().exists():
        base["model"] = str(Path(str(model)).expanduser().resolve())
    base.update(run_options)
    return base


def _fingerprints(base: dict[str, Any]) -> dict[str, str]:
    """sha256 of the user's training and dev files: the same path with other contents is another fit."""
    import hashlib

    out = {}
    for key in ("train_file", "dev_file"):
        if base.get(key):
            digest = hashlib.sha256()
            with open(base[key], "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[key] = digest.hexdigest()
    return out


def _refuse_other_options(db: Path, describe: dict[str, Any]) -> None:
    """An unfinished fit in the folder was started with other options (or data): refuse to mix its runs with
    this call's, naming what differs. Options that do not define runs (budget, workers, the test file) may change.
    A key the earlier fit did not record (written by an older stabletune) is not compared."""
    from stabletune.study.store import Store

    if not db.is_file():
        return
    with Store.open(db, readonly=True) as store:
        row = store.latest_spec()
    if row is None:
        return
    old = json.loads(row["spec_text"])

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict) and k in ("base", "data_sha256", "space"):
                out.update(flat(v, f"{k}."))
            else:
                out[prefix + k] = v
        return out

    a, b = flat(old), flat(json.loads(json.dumps(describe)))  # as stored: tuples read back as lists
    names = {"base.": "", "data_sha256.": "contents of "}
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in a and a.get(key) != b.get(key) and not (key.startswith("data_sha256.") and key not in b):
            label = key
            for prefix, word in names.items():
                if key.startswith(prefix):
                    label = word + key[len(prefix):]
            diffs.append(label if key.startswith("data_sha256.") else f"{label} {a.get(key)!r} -> {b.get(key)!r}")
    if diffs:
        raise ConfigError(f"{db.parent.parent} holds an unfinished fit started with other options ("
                          + "; ".join(diffs) + "): rerun with the same options to resume it, or add --overwrite to "
                          "start over")


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    from stabletune.outputs import check_out_folder

    check_out_folder(out_dir, may_exist=True)  # a file, or a place where nothing can be created: refused now
    if (out_dir / "fit.json").exists():
        if not overwrite:
            raise ConfigError(f"{out_dir} holds a finished fit (fit.json); use --overwrite to start over")
        shutil.rmtree(out_dir)
    elif overwrite and (out_dir / "search").is_dir():  # an unfinished fit, started over
        shutil.rmtree(out_dir)
    elif out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "search").is_dir():
        if not overwrite:
            raise ConfigError(f"output folder {out_dir} exists and is not a fit folder (use --overwrite to "
                              "replace it)")
        shutil.rmtree(out_dir)


class _Search:
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
        self.display = _Progress(progress, budget)
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
        self.in_flight[spec.run_id] = (run, _now())
        self.backend.submit({"run_id": spec.run_id, "config": config, "kill": None})

    def _live(self, msg: tuple) -> None:
        run_id, step, total, _score = msg
        if run_id in self.in_flight:
            self.budget.observe_live(run_id, step, total, _now() - self.in_flight[run_id][1])

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
                        if "worker process died" in str(out["error"]) and _main_is_a_script() else "")
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
        now = _now()
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


def _cleanup_runs(runs_dir: Path) -> None:
    """The chosen model has been copied out: drop every run's saved model (the database keeps the results)."""
    shutil.rmtree(runs_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# The output folder
# ------------------------------------------------------------------------------------------------
def _finalize(out_dir: Path, view: PlanView, *, planner: FitPlanner, search: _Search, spec, base: dict,
              base_cfg: RunConfig, space: SearchSpace, seeds: list[int], test_file: str | None, budget: Budget,
              t_search: float, depth: int, hidden: int, val_baseline: float | None) -> FitResult:
    """Copy the chosen model into ``out_dir``, score the test file with it, write the card, figure and fit.json
    (last: its presence marks a finished fit)."""
    t0 = _now()
    choice = view.choice
    best_seed = max(sorted(choice.seeds), key=lambda s: (planner._score(choice.seeds[s]), -s))
    chosen_run = (choice.candidate, best_seed)
    chosen_result = choice.seeds[best_seed]
    src = search.folder_of(chosen_run) / "model"
    if not (src / "config.json").is_file():  # deleted by an earlier call that had trimmed this recipe away
        from stabletune.training import train

        log.info("fit: retraining %s seed %d (its saved model was deleted)", choice.candidate.key, best_seed)
        cfg = replace(search.spec_of(chosen_run).config, out=str(search.folder_of(chosen_run)), overwrite=True)
        train(cfg)
    for name in os.listdir(src):  # the model at the top of out_dir: from_pretrained(out_dir) works
        if (src / name).is_dir():
            with staged_folder(out_dir / name) as tmp:
                shutil.copytree(src / name, tmp, dirs_exist_ok=True)
        else:
            with staged_file(out_dir / name) as tmp:
                shutil.copy2(src / name, tmp)
    test = None
    if test_file is None and chosen_result.run_id:  # a GLUE task: its split's test half, scored by the run
        rows = search.store.conn.execute(
            "SELECT metric, value FROM test_metrics WHERE run_id = ? AND checkpoint = 'best' AND split = 'test'",
            (chosen_result.run_id,)).fetchall()
        if rows:
            metrics = {r["metric"]: r["value"] for r in rows}
            test = {"file": None, "split": base_cfg.split, "rows": None, "metrics": metrics, "metric": spec.metric,
                    "score": metrics.get(spec.metric), "majority_baseline": None}
    if test_file is not None:
        from stabletune.predict import predict_file

        scored = predict_file(out_dir, test_file, None, progress=False)
        test = {"file": test_file, "rows": scored.rows, "metrics": scored.metrics, "metric": spec.metric,
                "score": scored.metrics.get(spec.metric) if scored.metrics else None,
                "majority_baseline": scored.majority_baseline}
    candidates = []
    screen = planner.screen_list()
    by_cand: dict[Candidate, dict[int, SeedResult]] = {}
    for (c, s), r in search.results.items():
        by_cand.setdefault(c, {})[s] = r
    for c in sorted(by_cand, key=lambda c: (c.updates, planner._order(c, screen))):
        summ = planner.summary(c, search.results)
        candidates.append({
            "candidate": c.key, "lr": c.lr, "layers": c.layers, "reinit_pooler": c.layers > 0,
            "updates": c.updates, "seeds_run": len(summ.seeds), "complete": summ.complete,
            "mean_val": summ.mean, "std_val": summ.std, "degenerate": summ.degenerate,
            "chosen": c == choice.candidate,
            "seeds": [{"seed": s, "val": r.val, "status": r.status, "degenerate": r.degenerate, "wall_s": r.wall_s,
                       "best_step": r.best_step, "run_id": r.run_id} for s, r in sorted(summ.seeds.items())]})
    choice_record = {
        "candidate": choice.candidate.key, "recipe": choice.candidate.words(), **choice.candidate.overrides(),
        "optimizer": "adamw (debiased)", "mean_val": choice.mean, "std_val": choice.std,
        "degenerate": choice.degenerate, "seeds": len(choice.seeds), "shipped_seed": best_seed,
        "shipped_val": chosen_result.val, "shipped_step": chosen_result.best_step, "run_id": chosen_result.run_id}
    run_seconds = sum(r.wall_s or 0.0 for r in search.results.values())
    record = {
        "stabletune_fit": 1, "name": out_dir.name,
        "data": {"train_file": base.get("train_file"), "dev_file": base.get("dev_file"), "test_file": test_file,
                 "task": spec.name, "labels": list(spec.labels) if spec.labels else None,
                 "task_type": "regression" if spec.is_regression else "classification",
                 "text_columns": base_cfg.text_columns, "label_column": base_cfg.label_column,
                 "split": base_cfg.split, "validation_majority_baseline": val_baseline},
        "metric": spec.metric, "positive_label": (spec.labels[spec.positive_index]
                                                  if spec.metric == "f1" and spec.positive_index is not None else None),
        "model": {"source": base_cfg.model, "depth": depth, "hidden": hidden},
        "space": space.to_dict(), "seeds": seeds,
        "plan": {"limits": asdict(search.limits), "trimmed": budget.trimmed},
        "candidates": candidates, "choice": choice_record, "test": test,
        "timings": {"budget_s": budget.resolve(), "budget": "auto" if budget.auto else "set",
                    "grid_estimate_s": budget.grid_estimate, "earlier_calls_s": budget.earlier, "search_s": t_search,
                    "finalize_s": None, "wall_s": None, "runs_this_call": search.ran, "runs": len(search.results),
                    "run_seconds": run_seconds, "workers": search.backend.capacity},
        "config": {k: v for k, v in base_cfg.to_dict().items() if k not in ("progress", "out", "overwrite")},
    }
    figure = _write_figure(out_dir / "fit.png", candidates, spec.metric)
    record["figure"] = figure
    record["timings"]["finalize_s"] = _now() - t0
    record["timings"]["wall_s_this_call"] = t_search + record["timings"]["finalize_s"]
    record["timings"]["wall_s"] = budget.earlier + record["timings"]["wall_s_this_call"]  # what the budget bounds
    _write_text(out_dir / "README.md", model_card(record))
    from stabletune.engine.runlog import write_json

    write_json(out_dir / "fit.json", record)
    return FitResult(str(out_dir), choice_record, candidates, test, record)


def _write_text(path: Path, text: str) -> None:
    with staged_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_figure(path: Path, candidates: list[dict], metric: str) -> str | None:
    """Validation score per candidate: every seed as a dot, the mean as a bar with its std; the choice in red."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'stabletune[report]'): no fit.png")
        return None
    fig = Figure(figsize=(max(6.0, 0.55 * len(candidates) + 2), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, c in enumerate(candidates):
        color = "#d62728" if c["chosen"] else "#1f77b4"
        vals = [s["val"] for s in c["seeds"] if s["val"] is not None]
        if c["mean_val"] is not None:
            ax.bar(i, c["mean_val"], color=color, alpha=0.25 if c["complete"] else 0.1, width=0.7)
            if c["std_val"]:
                ax.errorbar(i, c["mean_val"], yerr=c["std_val"], color=color, capsize=3, lw=1)
        ax.scatter([i] * len(vals), vals, color=color, s=14, zorder=3)
        failed = len(c["seeds"]) - len(vals)
        if failed:
            ax.annotate(f"{failed} failed", (i, min(vals) if vals else 0), fontsize=7, ha="center")
    ax.set_xticks(range(len(candidates)))
    ax.set_xticklabels([f"{c['lr']:g}\nL={c['layers']}\n{c['updates']}u" for c in candidates], fontsize=7)
    ax.set_ylabel(f"validation {metric} (best checkpoint)")
    ax.set_title("stabletune fit: validation score per candidate (dots: seeds; bar: mean +- std; red: chosen)",
                 fontsize=9)
    lows = [s["val"] for c in candidates for s in c["seeds"] if s["val"] is not None]
    if lows:
        lo, hi = min(lows), max(lows)
        pad = max(0.02, 0.1 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
    from stabletune.analysis.plots import save_figure

    save_figure(fig, path)  # staged: never a half-written fit.png
    return path.name


def model_card(record: dict) -> str:
    """The model card (README.md): what was trained, how it was chosen, the table of candidates, how to use it."""
    d, ch, t, tm = record["data"], record["choice"], record["test"], record["timings"]
    metric = record["metric"] + (f" of {record['positive_label']!r}" if record.get("positive_label") else "")
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-classification", "tags: [stabletune]", "---", "",
        f"# {record['name']}: {Path(str(record['model']['source'])).name} fine-tuned by stabletune fit", "",
        f"A {'regression' if d['task_type'] == 'regression' else 'classification'} model "
        + (f"with labels {', '.join(map(str, d['labels']))} " if d["labels"] else "")
        + f"fine-tuned from `{record['model']['source']}` ({record['model']['depth']} layers, hidden "
          f"{record['model']['hidden']}) by `stabletune fit`, which follows Zhang et al., *Revisiting Few-sample BERT "
          "Fine-tuning* (ICLR 2021).", "",
        "## Recipe", "",
        f"Debiased Adam (bias-corrected AdamW, weight decay 0), {ch['recipe']}, batch size "
        f"{record['config']['batch_size']}, linear warm-up over the first 10 % of updates then linear decay, "
        f"dropout {record['config']['dropout']}, gradient clipping at {record['config']['max_grad_norm']}, "
        f"max sequence length {record['config']['max_seq_length']}; the best of "
        f"{record['config']['num_evals']} validation checkpoints is kept.", "",
        f"It was chosen on validation {metric} by its **mean over {ch['seeds']} seeds** "
        f"({ch['mean_val']:.4f} +- {ch['std_val']:.4f}, {ch['degenerate']} degenerate seed(s) counted); this model "
        f"is seed {ch['shipped_seed']} of that recipe (validation {_fmt(ch['shipped_val'])}, update "
        f"{ch['shipped_step']}).", "",
    ]
    if t is not None:
        base = t.get("majority_baseline")
        lines += [f"**Test** ({Path(t['file']).name}, {t['rows']} rows, scored once on this model): "
                  + ", ".join(f"{k} {_fmt(v)}" for k, v in (t["metrics"] or {}).items())
                  + (f" (majority baseline {_fmt(base)})" if base is not None else "") + ".", ""]
    lines += [
        "## Candidates", "",
        f"Validation {metric} at the best checkpoint, mean +- std over the seeds run; a recipe needs every seed "
        "to be chosen (screened recipes ran one). Degenerate: at or below the majority baseline of the "
        "validation set, or undefined; such seeds count with the metric's worst value.", "",
        "| lr | L (pooler + top L) | updates | seeds | mean val | std | degenerate | chosen |",
        "|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for c in record["candidates"]:
        lines.append(f"| {c['lr']:g} | {c['layers']} | {c['updates']} | {c['seeds_run']} | {_fmt(c['mean_val'])} | "
                     f"{_fmt(c['std_val'])} | {c['degenerate']} | {'**yes**' if c['chosen'] else ''} |")
    sp = record["space"]
    lines += [
        "", f"Grid: lr {', '.join(f'{v:g}' for v in sp['lrs'])}; L {', '.join(map(str, sp['layers']))}; updates "
            f"{', '.join(map(str, sp['updates']))}. Search: {tm['runs']} runs, {tm['search_s'] / 60:.1f} min of "
            f"{_budget_words(tm)} on {tm['workers']} worker(s)"
            + (f"; trimmed to the budget: {', '.join(record['plan']['trimmed'])}" if record["plan"]["trimmed"] else "")
            + ". Figure: `fit.png`; every run: `fit.json` and `search/fit.db`.", "",
        "## Use", "", "```bash",
        f"stabletune predict {record['name']} --input new.csv --output predictions.csv"
        + (f"   # text column(s): {', '.join(d['text_columns'])}" if d["text_columns"] else ""), "```", "",
        "```python", "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        f"model = AutoModelForSequenceClassification.from_pretrained(\"{record['name']}\")",
        f"tokenizer = AutoTokenizer.from_pretrained(\"{record['name']}\")",
        "# config.id2label names the classes" + (f"; text column(s): {', '.join(d['text_columns'])}"
                                                 if d["text_columns"] else ""), "```", "",
    ]
    return "\n".join(lines)


def _budget_words(tm: dict) -> str:
    """The budget as the model card states it."""
    if tm.get("budget_s") is None:
        return "an automatic budget"
    words = f"a {tm['budget_s'] / 60:.1f} min budget"
    if tm.get("budget") == "auto" and tm.get("grid_estimate_s"):
        words += f" (automatic: a fifth of the {tm['grid_estimate_s'] / 60:.0f} min the whole grid would take)"
    return words


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.4f}"
    return str(v)

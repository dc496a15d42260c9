"""The plan of ``fit``: successive halving with seeds and updates as the resources (:class:`FitPlanner`), the limits a budget trims (:data:`TRIMS`), and how a recipe is judged (its mean over seeds, failed seeds counted as 0)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from stabletune.fitting.grid import Candidate, SearchSpace


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

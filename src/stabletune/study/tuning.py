"""Hyperparameter selection (Sections 5-7, Appendix H) and the study plan it implies.

A method with ``search: {key: [values]}`` first runs every candidate (the grid product of the values) on its
search seeds; the candidate with the best mean validation score (the main metric of the best checkpoint, as
the paper selects "based on mean validation performance") wins, ties going to the first in file order. The
final seeds then run with the chosen values. A final run whose config and seeds equal a search run's is a
copy of it (the paper's Section 5/7 protocol selects on the same seeds it reports): nothing is recomputed.

Runs that finished, diverged or were early-killed count with their best validation score; one without a score
(a NaN correlation: a constant predictor; no evaluation before diverging) counts as the worst score, 0
(:data:`stabletune.metrics.NAN_SCORE`, the rule every statistic follows), so a candidate whose seeds collapse
cannot win because its collapsed seeds were dropped. Failed runs (train() raised: an error, not a score) are
left out; a group none of whose candidates has a scored run is *blocked*: its final runs are not planned, and
the study reports it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from stabletune.metrics import score_or_worst
from stabletune.study.spec import RunSpec, StudySpec, canonical_json
from stabletune.study.store import TERMINAL, Store

Group = tuple[str, str]  # (method, task)


@dataclass
class CandidateScore:
    candidate: dict[str, Any]
    mean_val: float | None
    n_scored: int
    n_runs: int
    n_nan: int = 0
    """Scored runs without a validation score (NaN), counted as 0 in ``mean_val``."""


@dataclass
class Plan:
    """Every run the study needs as far as it is known now."""

    runs: list[RunSpec]
    choices: dict[Group, CandidateScore] = field(default_factory=dict)
    blocked: list[Group] = field(default_factory=list)
    waiting: list[Group] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r.run_id for r in self.runs]


def candidate_scores(runs: list[RunSpec], rows: dict[str, Any]) -> list[CandidateScore]:
    """Mean best-checkpoint validation score of each candidate over its search runs (file order); a run with a
    result but no score (NaN) counts as 0, a failed run is left out."""
    by_cand: dict[str, list[RunSpec]] = {}
    for r in runs:
        by_cand.setdefault(canonical_json(r.candidate), []).append(r)
    out = []
    for group in by_cand.values():
        vals, n_nan = [], 0
        for r in group:
            row = rows.get(r.run_id)
            if row is None or row["status"] not in ("finished", "diverged", "killed"):
                continue
            v = row["best_val"]  # the store keeps NaN as NULL
            n_nan += v is None or not math.isfinite(v)
            vals.append(score_or_worst(v))
        out.append(CandidateScore(group[0].candidate, sum(vals) / len(vals) if vals else None, len(vals), len(group),
                                  n_nan))
    return out


def select_candidate(scores: list[CandidateScore]) -> CandidateScore | None:
    """The highest mean validation score; the first in file order on ties; None if none has a score."""
    best = None
    for s in scores:
        if s.mean_val is not None and (best is None or s.mean_val > best.mean_val):
            best = s
    return best


class Planner:
    """Expands a study into its runs: search runs, fixed final runs, and final runs of decided searches."""

    def __init__(self, spec: StudySpec):
        self.spec = spec
        self.search_runs = spec.search_runs()
        self.by_group: dict[Group, list[RunSpec]] = {}
        for r in self.search_runs:
            self.by_group.setdefault((r.method, r.task), []).append(r)
        self.fixed_finals = sorted(
            (spec.make_run(m.name, t.name, s, "final") for m in spec.methods.values() if not m.search
             for t in spec.tasks for s in spec.seeds), key=lambda r: r.order)
        self._decided: dict[Group, CandidateScore | None] = {}
        self._finals: dict[Group, list[RunSpec]] = {}

    def plan(self, store: Store | None) -> Plan:
        """The plan given the runs stored so far (``store`` None: nothing has run)."""
        rows = {} if store is None else {r["run_id"]: r for r in store.runs(r.run_id for r in self.search_runs)}
        plan = Plan(runs=list(self.search_runs) + list(self.fixed_finals))
        for group, runs in self.by_group.items():
            if group not in self._decided:
                if not all(r.run_id in rows and rows[r.run_id]["status"] in TERMINAL for r in runs):
                    plan.waiting.append(group)
                    continue
                choice = select_candidate(candidate_scores(runs, rows))
                self._decided[group] = choice
                if choice is not None:
                    self._finals[group] = self.spec.final_runs(*group, choice.candidate)
            choice = self._decided[group]
            if choice is None:
                plan.blocked.append(group)
            else:
                plan.choices[group] = choice
                plan.runs += self._finals[group]
        plan.runs.sort(key=lambda r: r.order)
        return plan

    def source_of(self, final: RunSpec) -> RunSpec | None:
        """The search run a final run can be copied from (same candidate and seeds), if any."""
        for r in self.by_group.get((final.method, final.task), []):
            if r.seeds == final.seeds and canonical_json(r.candidate) == canonical_json(final.candidate):
                return r
        return None


def candidate_label(candidate: dict[str, Any], sep: str = " ") -> str:
    """``{"lr": 0.0002, "reinit_layers": 3}`` -> ``"lr=0.0002 reinit_layers=3"`` (``""`` for none)."""
    return sep.join(f"{k}={json.dumps(v)}" for k, v in candidate.items())


def describe_choice(group: Group, choice: CandidateScore) -> str:
    values = candidate_label(choice.candidate, ", ")
    nan = f", {choice.n_nan} without a score counted as 0" if choice.n_nan else ""
    return (f"{group[0]}/{group[1]}: chose {values} (mean val {choice.mean_val:.4f} over "
            f"{choice.n_scored}/{choice.n_runs} search runs{nan})")

"""`stabletune fit`, the practitioner's recipe: search the paper's levers on validation within a time budget and
ship the best model (:func:`fit`; the recipe, its grid, planner and budget in :mod:`stabletune.fitting.recipe`).

The package is named ``fitting`` so that ``from stabletune import fit`` is the function, never a module (a
submodule called ``fit`` would replace the package attribute of that name as soon as it is imported).
"""

from stabletune.fitting.recipe import (
    AUTO_BUDGET_FRACTION,
    DEFAULT_BUDGET,
    DEFAULT_SEEDS,
    Budget,
    Candidate,
    FitPlanner,
    FitResult,
    Limits,
    SearchSpace,
    fit,
    model_card,
    model_shape,
    parse_budget,
    search_space,
)

__all__ = ["fit", "FitResult", "SearchSpace", "Candidate", "Limits", "FitPlanner", "Budget", "parse_budget",
           "search_space", "model_shape", "model_card", "DEFAULT_BUDGET", "DEFAULT_SEEDS", "AUTO_BUDGET_FRACTION"]

"""`stabletune fit`, the practitioner's recipe: search the paper's levers on validation within a time budget and
ship the best model. :func:`fit` (``recipe.py``) reads top to bottom; its components, one module each:

- ``grid.py``: the recipes searched (:class:`Candidate`) and the space they come from, adapted to the model;
- ``planner.py``: successive halving over seeds and updates (:class:`FitPlanner`), the limits a budget trims;
- ``budget.py``: ``--budget``, run-cost estimates, what a resumed fit already spent;
- ``search.py``: the driver that keeps the workers busy and stores results (:class:`Search`), its progress line;
- ``folder.py``: the output folder, checked and resumed (exact or refused) first, written last (model, card,
  figure, ``fit.json``);
- ``clock.py``: the one clock of the budget and the search (tests drive it).

The package is named ``fitting`` so that ``from stabletune import fit`` is the function, never a module (a
submodule called ``fit`` would replace the package attribute of that name as soon as it is imported).
"""

from stabletune.fitting.budget import AUTO_BUDGET_FRACTION, DEFAULT_BUDGET, Budget, parse_budget
from stabletune.fitting.folder import FitResult, model_card
from stabletune.fitting.grid import Candidate, SearchSpace, model_shape, search_space
from stabletune.fitting.planner import FitPlanner, Limits
from stabletune.fitting.recipe import DEFAULT_SEEDS, fit

__all__ = ["fit", "FitResult", "SearchSpace", "Candidate", "Limits", "FitPlanner", "Budget", "parse_budget",
           "search_space", "model_shape", "model_card", "DEFAULT_BUDGET", "DEFAULT_SEEDS", "AUTO_BUDGET_FRACTION"]

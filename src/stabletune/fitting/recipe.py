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
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from stabletune.config import FIELDS, make_config
from stabletune.errors import ConfigError, UserError
from stabletune.metrics import NAN_SCORE
from stabletune.fitting import clock
from stabletune.fitting.budget import Budget, DEFAULT_BUDGET, SPENT_FILE, parse_budget
from stabletune.fitting.folder import (FitResult, finalize, fingerprints, majority_baselines_of, prepare_out,
                                      refuse_other_options)
from stabletune.fitting.grid import SearchSpace, model_shape, search_space
from stabletune.fitting.planner import FitPlanner, Limits
from stabletune.fitting.search import Search, cleanup_runs, refuse_in_a_spawned_worker

log = logging.getLogger(__name__)

DEFAULT_SEEDS = 3

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
    refuse_in_a_spawned_worker()
    t0 = clock.now()
    if seeds < 3:
        raise ConfigError(f"invalid option --seeds: fit judges every recipe by at least 3 seeds, got {seeds}")
    budget = parse_budget(budget)
    for key in run_options:
        if key in DECIDED:
            raise ConfigError(f"invalid option {key!r} for fit: {DECIDED[key]}")
        if key not in FIELDS:
            raise ConfigError(f"unknown option {key!r}")
    out_dir = Path(out).expanduser().resolve()
    prepare_out(out_dir, overwrite)

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
                "metric": spec.metric, "data_sha256": fingerprints(base)}
    search_dir = out_dir / "search"
    refuse_other_options(search_dir / "fit.db", describe)  # resuming is exact or refused, before any write
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
        search = Search(planner=planner, store=store, backend=backend, budget=budget_, limits=limits,
                        base_cfg=base_cfg, task_name=spec.name, runs_dir=search_dir / "runs",
                        progress=progress)
        view = search.run()
        if view.choice is None:
            raise UserError("fit: no recipe finished with every seed (every run failed?); see "
                            f"{search_dir / 'fit.db'} (stabletune study export)")
        t_search = clock.now() - t0
        result = finalize(out_dir, view, planner=planner, search=search, spec=spec, base=base, base_cfg=base_cfg,
                          space=space, seeds=seed_list, test_file=test_file, budget=budget_, t_search=t_search,
                          depth=depth, hidden=hidden, val_baseline=majority_baselines_of(splits, spec))
    cleanup_runs(search_dir / "runs")
    warn_over_budget(budget, result.record["timings"]["wall_s"], seeds=len(seed_list))
    return result


OVER_BUDGET = 1.5
"""A fit that ends past this multiple of its --budget says so (the budget is a target the plan is trimmed to, and
the smallest plan -- one recipe, every seed -- is run whatever the budget)."""


def warn_over_budget(budget: float | None, wall_s: float, *, seeds: int) -> None:
    from stabletune.study.runner import format_seconds

    if budget is not None and wall_s > OVER_BUDGET * budget:
        log.warning("fit took %s against --budget %s (%.1fx): the smallest plan it can judge, one recipe x %d "
                    "seeds, costs more than that here; give --budget %dm or more for a search", format_seconds(wall_s),
                    format_seconds(budget), wall_s / budget, seeds, math.ceil(2 * wall_s / 60))


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

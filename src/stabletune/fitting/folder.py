"""The output folder of ``fit``: checked and resumed (exact or refused) before the search, written at its end (the shipped model, ``fit.json``, the model card, the figure)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from stabletune.config import RunConfig
from stabletune.errors import ConfigError
from stabletune.outputs import staged_file, staged_folder
from stabletune.fitting import clock
from stabletune.fitting.budget import Budget
from stabletune.fitting.grid import Candidate, SearchSpace
from stabletune.fitting.planner import FitPlanner, PlanView, SeedResult
from stabletune.fitting.search import Search

log = logging.getLogger(__name__)

def fingerprints(base: dict[str, Any]) -> dict[str, str]:
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


def refuse_other_options(db: Path, describe: dict[str, Any]) -> None:
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
    diffs = []
    for key in sorted(a):  # a key only this call has (an older stabletune wrote the fit) is not compared
        if key.startswith("data_sha256."):
            if key in b and a[key] != b[key]:  # (a file no longer given differs in its path: said there)
                diffs.append("contents of " + key.removeprefix("data_sha256."))
        elif a[key] != b.get(key):
            diffs.append(f"{key.removeprefix('base.')} {a[key]!r} -> {b.get(key)!r}")
    if diffs:
        raise ConfigError(f"{db.parent.parent} holds an unfinished fit started with other options ("
                          + "; ".join(diffs) + "): rerun with the same options to resume it, or add --overwrite to "
                          "start over")


def prepare_out(out_dir: Path, overwrite: bool) -> None:
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


def majority_baselines_of(splits, spec) -> float | None:
    """The majority baseline of the validation set (for the model card and degenerate counts)."""
    from stabletune.metrics import majority_baseline
    import numpy as np

    labels = np.asarray([e.label for e in splits.validation])
    return majority_baseline(spec, labels) if len(labels) else None


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
# The output folder
# ------------------------------------------------------------------------------------------------
def finalize(out_dir: Path, view: PlanView, *, planner: FitPlanner, search: Search, spec, base: dict,
             base_cfg: RunConfig, space: SearchSpace, seeds: list[int], test_file: str | None, budget: Budget,
             t_search: float, depth: int, hidden: int, val_baseline: float | None) -> FitResult:
    """Copy the chosen model into ``out_dir``, score the test file with it, write the card, figure and fit.json
    (last: its presence marks a finished fit)."""
    t0 = clock.now()
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
    record["timings"]["finalize_s"] = clock.now() - t0
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

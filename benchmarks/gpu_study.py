#!/usr/bin/env python
"""How to lay out a study on one GPU: separate runs, processes sharing the GPU, or vectorised ensembles?

    python benchmarks/gpu_study.py --data-dir ../shared/data/glue --model minilm-l6 --seeds 8
    python benchmarks/gpu_study.py --random-model TOKENIZER_DIR ...   # MiniLM-sized random weights, no download

Every layout runs the same real study (``stabletune.study.run_study``: ``--seeds`` seeds of the paper recipe on
``--task`` with the ``paper-1k`` split, 10 evaluations, test at best and last) into its own fresh database and
reports its wall time; ``PxK`` means P worker processes (``--workers P``, all on the one GPU) and ensembles of up
to K seeds (``--ensemble K``). Layouts are run one after the other, each once (a GPU machine is lent only for
minutes); the order is printed so a trend can be spotted.

``--check`` first trains 3 seeds with dropout 0 in fp32 on the GPU, as separate runs and as one ensemble, and
prints the largest differences of the members' loss curves and test metrics (float rounding only, expected).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

STUDY = """
name: layout
data_dir: {data_dir}
base: {{model: {model}, split: paper-1k, lr: 1.0e-4, progress: false, encoder_impl: hf}}
methods:
  standard: {{}}
tasks: [{task}]
seeds: {seeds}
"""


def make_random_model(tokenizer_dir: str, out: str) -> str:
    """A MiniLM-sized BERT with random weights and the tokenizer of ``tokenizer_dir`` (timings only)."""
    import torch
    from transformers import BertConfig, BertModel

    cfg = BertConfig.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    for f in Path(tokenizer_dir).iterdir():
        if f.name != "config.json" and f.is_file():
            shutil.copy(f, Path(out) / f.name)
    return out


def check_equivalence(model: str, data_dir: str, task: str) -> dict:
    """Separate runs vs one ensemble on the GPU, fp32, dropout 0: the largest differences."""
    import torch

    from stabletune.config import make_config
    from stabletune.training import train_ensemble
    from stabletune.training import train

    cfgs = [make_config({"task": task, "data_dir": data_dir, "model": model, "split": "paper-1k", "seed": s,
                         "dropout": 0.0, "precision": "fp32", "max_steps": 30, "num_evals": 3, "lr": 1e-4,
                         "progress": False, "encoder_impl": "hf"}) for s in range(3)]
    sep = [train(c) for c in cfgs]
    ens = train_ensemble(cfgs, [None] * 3)
    loss = max(abs(a["loss"] - b["loss"]) for s, e in zip(sep, ens) for a, b in zip(s.train_log, e.train_log))
    metric = sep[0].task["metric"]
    test = max(abs(s.last["test"][metric] - e.last["test"][metric]) for s, e in zip(sep, ens))
    return {"device": str(torch.cuda.get_device_name()) if torch.cuda.is_available() else "cpu",
            "max_loss_diff": loss, f"max_last_test_{metric}_diff": test,
            "modes": [e.techniques["ensemble"]["mode"] for e in ens]}


def run_layout(name: str, *, data_dir: str, model: str, task: str, seeds: int) -> dict:
    from stabletune.study import load_results, run_study

    workers, k = (int(x) for x in name.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix=f"layout-{name}-"))
    path = tmp / "study.yaml"
    path.write_text(STUDY.format(data_dir=Path(data_dir).resolve(), model=model, task=task, seeds=seeds))
    t = time.perf_counter()
    out = run_study(path, backend="local" if workers > 0 else "inline", workers=workers, ensemble=k,
                    quiet=True, progress=False)
    wall = time.perf_counter() - t
    df = load_results(path)
    col = next((c for c in df.columns if str(c).startswith("best_test_")), None)
    res = {"layout": name, "workers": workers, "ensemble": k, "wall_s": wall, "s_per_seed": wall / seeds,
           "ok": out.ok, "backend": out.backend, "counts": {k2: v for k2, v in out.counts.items() if v}}
    if col:
        vals = [float(v) for v in df[col] if v == v]
        res.update({"metric": col, "mean_best_test": statistics.fmean(vals) if vals else None})
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--random-model", metavar="TOKENIZER_DIR",
                   help="use a MiniLM-sized model with random weights and this folder's config and tokenizer")
    p.add_argument("--task", default="cola")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--layouts", default="1x1,1x8,1x4,2x4,4x1,2x1",
                   help="comma list of PxK: P worker processes, ensembles of up to K seeds")
    p.add_argument("--check", action="store_true", help="first compare ensemble members with separate runs")
    p.add_argument("--json-out", metavar="FILE", help="also write every result as JSON (updated after each)")
    a = p.parse_args(argv)
    model = a.model
    if a.random_model:
        model = make_random_model(a.random_model, tempfile.mkdtemp(prefix="random-minilm-"))
    results: dict = {"task": a.task, "seeds": a.seeds, "model": "random MiniLM-sized" if a.random_model else model,
                     "layouts": []}

    def save() -> None:
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(results, indent=1, default=str))

    if a.check:
        results["check"] = check_equivalence(model, a.data_dir, "rte" if a.task == "cola" else a.task)
        print("check:", json.dumps(results["check"]), flush=True)
        save()
    for name in a.layouts.split(","):
        r = run_layout(name.strip(), data_dir=a.data_dir, model=model, task=a.task, seeds=a.seeds)
        results["layouts"].append(r)
        base = results["layouts"][0]["wall_s"]
        print(f"{r['layout']:>5}  {r['wall_s']:7.1f} s  {r['s_per_seed']:6.2f} s/seed  {base / r['wall_s']:5.2f}x "
              f"vs {results['layouts'][0]['layout']}  ok={r['ok']}  mean best test {r.get('mean_best_test')}  "
              f"[{r['backend']}]", flush=True)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""How to lay out a 20-seed study on this machine: threads, processes or vectorised ensembles?

    python benchmarks/bench_study_layout.py                 # RTE paper-1k, MiniLM, ~8 min on 2 cores
    python benchmarks/bench_study_layout.py --task cola --json
    python benchmarks/bench_study_layout.py --quick --model DIR   # smoke run (tests)

Each layout runs short real runs (``stabletune.training.train``, or ``train_ensemble``; ``--steps`` updates and one
evaluation) in worker processes that start together (each loads torch and the model first, then waits for a
common "go"), and reads the timings every run records (setup, training, evaluation, test). A full run is
extrapolated from them: training time x (full steps / measured steps), evaluation time x (10 / 1), plus setup
and test as measured. The study time for ``--seeds`` seeds follows from how many runs each layout does at once.

Layouts (N = number of cores):

* ``1x{N}t``: one process with N intra-op threads, seeds one after the other;
* ``1x{N}t-passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep instead of spinning while
  they wait, which matters when other processes compete for the cores);
* ``{N}x1t``: N processes with one thread each, each taking every N-th seed (the local study backend's default);
* ``ens{K}``: one process with N threads training K seeds at once as a vectorised ensemble.

Layouts alternate within a repeat, so a busy neighbour slows them alike; the machine's load is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# ------------------------------------------------------------------------------------------------
# Worker: one process of a layout
# ------------------------------------------------------------------------------------------------
def worker(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    from stabletune.config import make_config
    from stabletune.training import train_ensemble
    from stabletune.training import train

    # The first member of every process keeps data seed 0, so every layout times the same batches; further
    # ensemble members take their own data order (and so pay for padding to the longest member's batch).
    cfgs = [make_config({**spec["config"], "seed": s, "data_seed": 0 if i == 0 else s, "threads": spec["threads"]})
            for i, s in enumerate(spec["seeds"])]
    import stabletune.model  # noqa: F401  (imports done before the common start)
    import transformers  # noqa: F401

    print("ready", flush=True)
    sys.stdin.readline()
    t = time.perf_counter()
    results = train_ensemble(cfgs, [None] * len(cfgs)) if len(cfgs) > 1 else [train(cfgs[0], None)]
    wall = time.perf_counter() - t
    print(json.dumps({"wall_s": wall, "steps": results[0].num_steps, "evals": len(results[0].evals),
                      "mode": results[0].techniques.get("ensemble", {}).get("mode", "single"),
                      "timings": [r.timings for r in results]}), flush=True)


def launch(procs: list[dict], env_extra: dict) -> list[dict]:
    """Start the worker processes, let them all load, start them together, collect their JSON."""
    env = {**os.environ, **env_extra, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    ps = []
    for spec in procs:
        e = {**env, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
        ps.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=e, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    for p in ps:
        line = p.stdout.readline().strip()
        if line != "ready":
            p.wait()
            raise RuntimeError(f"worker failed to start (exit {p.returncode}): {line!r}")
    for p in ps:
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in ps:
        line = p.stdout.readline()
        if p.wait() != 0 or not line.strip():
            raise RuntimeError(f"worker failed (exit {p.returncode})")
        out.append(json.loads(line))
    return out


# ------------------------------------------------------------------------------------------------
# Extrapolation
# ------------------------------------------------------------------------------------------------
def full_run_estimate(res: dict, full_steps: int, full_evals: int) -> float:
    """Seconds one process needs for its runs at full length (K members of an ensemble together)."""
    tm = res["timings"]
    train_s = tm[0]["train_s"]  # shared by the members of an ensemble
    eval_s = sum(t["eval_s"] for t in tm)
    test_s = sum(t["test_s"] for t in tm)
    setup_s = max(0.0, res["wall_s"] - train_s - eval_s - test_s)
    return setup_s + train_s * full_steps / res["steps"] + eval_s * full_evals / max(1, res["evals"]) + test_s


def layouts(cores: int, ks: list[int]) -> list[dict]:
    out = [{"name": f"1x{cores}t", "procs": 1, "threads": cores, "K": 1, "env": {}},
           {"name": f"1x{cores}t-passive", "procs": 1, "threads": cores, "K": 1, "env": {"OMP_WAIT_POLICY": "PASSIVE"}}]
    if cores > 1:
        out.append({"name": f"{cores}x1t", "procs": cores, "threads": 1, "K": 1, "env": {}})
    out += [{"name": f"ens{k}", "procs": 1, "threads": cores, "K": k, "env": {}} for k in ks]
    return out


def run(args) -> dict:
    from stabletune.data.batching import steps_per_epoch

    # encoder_impl hf: vectorised ensembles run the Hugging Face forward, so every layout uses it (like with like)
    base = {"task": args.task, "data_dir": args.data_dir, "split": "paper-1k", "model": args.model,
            "progress": False, "max_steps": args.steps, "num_evals": 1, "encoder_impl": "hf"}
    if args.quick:
        base.update(train_size=64)
    train_n = 64 if args.quick else 1000
    full_steps = math.ceil(3 * steps_per_epoch(train_n, 32))
    lay = layouts(args.cores, args.ensemble)
    if args.layouts:
        wanted = [x.strip() for x in args.layouts.split(",") if x.strip()]
        unknown = sorted(set(wanted) - {x["name"] for x in lay})
        if unknown:
            raise SystemExit(f"unknown layout(s) {unknown}; choose from {', '.join(x['name'] for x in lay)}")
        lay = [x for x in lay if x["name"] in wanted]
    measured: dict[str, list[float]] = {x["name"]: [] for x in lay}
    raw: dict[str, list] = {x["name"]: [] for x in lay}
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    seed = 0
    for r in range(args.repeats):
        order = lay[r % len(lay):] + lay[:r % len(lay)]
        for x in order:
            procs = []
            for _ in range(x["procs"]):
                procs.append({"config": base, "threads": x["threads"], "seeds": list(range(seed, seed + x["K"]))})
                seed += x["K"]
            res = launch(procs, x["env"])
            raw[x["name"]].append(res)
            # the processes of a layout run side by side: the slowest sets the pace
            measured[x["name"]].append(max(full_run_estimate(p, full_steps, 10) for p in res))
    rows = []
    for x in lay:
        per_batch = sorted(measured[x["name"]])[len(measured[x["name"]]) // 2]
        seeds_at_once = x["procs"] * x["K"]
        study_s = math.ceil(args.seeds / seeds_at_once) * per_batch
        rows.append({"layout": x["name"], "processes": x["procs"], "threads": x["threads"], "K": x["K"],
                     "seeds_at_once": seeds_at_once, "full_run_batch_s": per_batch,
                     "study_s": study_s, "seeds_per_hour": 3600 * seeds_at_once / per_batch})
    best = min(rows, key=lambda r: r["study_s"])
    for r in rows:
        r["vs_best"] = r["study_s"] / best["study_s"]
    return {"date": time.strftime("%Y-%m-%d"), "task": args.task, "model": args.model, "seeds": args.seeds,
            "measured_steps": args.steps, "full_steps": full_steps, "full_evals": 10, "cores": args.cores,
            "load_avg_start": load_start, "load_avg_end": os.getloadavg(), "rows": rows, "fastest": best["layout"],
            "raw": raw, "bench_wall_s": time.perf_counter() - t0}


def fmt(res: dict) -> str:
    out = [f"study layout, {res['date']}: {res['seeds']} seeds of {res['task']} paper-1k ({res['full_steps']} updates,"
           f" {res['full_evals']} evaluations each), {res['model']}, {res['cores']} cores; extrapolated from "
           f"{res['measured_steps']}-update runs; load average start/end "
           f"{'/'.join(f'{v:.1f}' for v in res['load_avg_start'])} / "
           f"{'/'.join(f'{v:.1f}' for v in res['load_avg_end'])}", "",
           f"{'layout':18} {'seeds at once':>13} {'s per batch':>11} {'seeds/h':>8} {'study h':>8} {'vs best':>8}"]
    for r in res["rows"]:
        out.append(f"{r['layout']:18} {r['seeds_at_once']:13d} {r['full_run_batch_s']:11.0f} "
                   f"{r['seeds_per_hour']:8.1f} {r['study_s'] / 3600:8.2f} {r['vs_best']:7.2f}x")
    out += ["", f"fastest: {res['fastest']}", f"benchmark wall time {res['bench_wall_s']:.0f} s"]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--task", default="rte")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--steps", type=int, default=6, help="updates of each measured run")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--ensemble", default="2", help="ensemble sizes K to include (comma list; empty: none)")
    p.add_argument("--layouts", default="", help="comma list of layout names to run (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 updates on 64 examples, ensemble K=2")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.worker:
        worker(json.loads(a.worker))
        return 0
    a.ensemble = [int(k) for k in a.ensemble.split(",") if k.strip()]
    if a.quick:
        a.steps, a.repeats, a.ensemble = 2, 1, a.ensemble[:1]
    if a.data_dir is None:
        a.data_dir = os.environ.get("STABLETUNE_DATA_DIR") or str(ROOT.parent / "shared" / "data" / "glue")
    res = run(a)
    print(json.dumps(res, indent=1) if a.json else fmt(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""stabletune fit: the grid, the plan (successive halving over seeds, then longer training), the budget, the
output folder, resume after SIGKILL, and bad input.

The plan and the budget are tested as pure functions on synthetic scores; the end-to-end tests train the tiny
random BERT (tests/tinymodel.py) on a tiny learnable dataset with a small grid.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

import stabletune
from stabletune.fitting.budget import Budget, parse_budget
from stabletune.fitting.grid import Candidate, SearchSpace, layer_grid, lr_grid, search_space, update_grid
from stabletune.fitting.planner import TRIMS, FitPlanner, Limits, SeedResult
from stabletune.errors import ConfigError
from stabletune.study.store import Store
from tinymodel import write_user_data

ROOT = Path(__file__).resolve().parents[1]

SPACE = SearchSpace(lrs=(1e-4, 2e-4, 4e-4), layers=(0, 1, 2), updates=(96, 200, 400), anchor_lr=2e-4,
                    anchor_layers=1)
SEEDS = [0, 1, 2]


# ------------------------------------------------------------------------------------------------
# The grid adapts to the model and the data
# ------------------------------------------------------------------------------------------------
def test_grid_adapts_to_depth_width_and_data_size():
    assert lr_grid(384) == (5e-5, 1e-4, 2e-4)  # the 6-layer MiniLM needs ~1e-4 (docs/LOG.md)
    assert lr_grid(768) == (2e-5, 5e-5, 1e-4)
    assert lr_grid(1024) == (1e-5, 2e-5, 5e-5)  # BERT-Large: the paper's 2e-5 in the middle
    assert layer_grid(6) == (0, 1, 2) and layer_grid(12) == (0, 2, 4) and layer_grid(24) == (0, 4, 8)
    assert layer_grid(2) == (0, 1) and layer_grid(1) == (0,)
    assert update_grid(1000, 32) == (96, 200, 400)  # Section 6: 3 epochs = 96 updates, then 200, 400
    assert update_grid(3668, 32) == (345, 800, 1600)  # MRPC's full train set: rungs >= 1.5 x 3 epochs
    sp = search_space(depth=6, hidden=384, n_train=1000, batch_size=32)
    assert (sp.anchor_lr, sp.anchor_layers) == (1e-4, 1)
    assert len(sp.grid()) == 27


def test_parse_budget():
    assert parse_budget("900") == 900 and parse_budget("90s") == 90 and parse_budget("20m") == 1200
    assert parse_budget("1.5h") == 5400 and parse_budget(60) == 60
    assert parse_budget("auto") is None and parse_budget(" AUTO ") is None and parse_budget(None) is None
    for bad in ("soon", "-5m", "0", "nanm"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad)


# ------------------------------------------------------------------------------------------------
# The plan, on synthetic scores
# ------------------------------------------------------------------------------------------------
def simulate(score, *, limits: Limits | None = None, seeds=SEEDS, space=SPACE):
    """Run the plan to the end, one run at a time, with ``score(candidate, seed)`` as every run's validation
    score. Returns (the runs in the order started, the final view)."""
    planner = FitPlanner(space, seeds, floor=0.0)
    limits = limits or Limits(screen=len(planner.screen_list()))
    results: dict = {}
    order = []
    for _ in range(200):
        view = planner.plan(results, set(results), limits)
        if view.finished:
            return order, view
        run = view.needed[0]
        order.append(run)
        v = score(*run)
        results[run] = SeedResult("finished", v, degenerate=v is None or not v > 0.5)
    raise AssertionError("the plan did not finish")


def test_plan_screens_then_confirms_then_lengthens_while_it_helps():
    def score(c, s):  # lr 4e-4 best, L=2 best, longer helps up to 200 updates only
        base = {1e-4: 0.6, 2e-4: 0.7, 4e-4: 0.8}[c.lr] + {0: 0.0, 1: 0.01, 2: 0.02}[c.layers]
        return base + {96: 0.0, 200: 0.05, 400: 0.03}[c.updates] + 0.001 * s

    order, view = simulate(score)
    screen = [c for c, s in order if s == 0 and c.updates == 96]
    # learning rates at the anchor L (anchor first), the other L at the anchor lr, then the best combination
    assert screen == [Candidate(2e-4, 1, 96), Candidate(4e-4, 1, 96), Candidate(1e-4, 1, 96),
                      Candidate(2e-4, 0, 96), Candidate(2e-4, 2, 96), Candidate(4e-4, 2, 96)]
    assert not any(s > 0 and c.updates == 96 for c, s in order)  # three epochs only triage (one seed)
    confirmed = {c for c, s in order if c.updates == 200}
    # the top 2 of the screen get every seed on longer training (Section 6)
    assert confirmed == {Candidate(4e-4, 2, 200), Candidate(4e-4, 1, 200)}
    assert {s for c, s in order if c.updates == 200} == {0, 1, 2}
    assert {c for c, s in order if c.updates == 400} == {Candidate(4e-4, 2, 400)}  # the best climbs on
    assert view.choice.candidate == Candidate(4e-4, 2, 200)  # 400 did not beat 200
    assert view.choice.complete and len(view.choice.seeds) == 3
    assert len(order) == 6 + 6 + 3


def test_plan_stops_lengthening_when_longer_does_not_help():
    # a ladder of 4 rungs, 2 of them allowed beyond the confirmation rung: 400 does not beat 200, so 800 is never
    # tried
    space = SearchSpace(lrs=(1e-4, 2e-4, 4e-4), layers=(0, 1, 2), updates=(96, 200, 400, 800), anchor_lr=2e-4,
                        anchor_layers=1)
    order, view = simulate(lambda c, s: 0.8 - 0.0001 * c.updates + 0.001 * s, space=space,
                           limits=Limits(screen=5, ladder=2))
    assert {c.updates for c, _ in order} == {96, 200, 400}
    assert view.choice.candidate.updates == 200
    # and when each rung helps, it climbs as far as the ladder allows
    order, view = simulate(lambda c, s: 0.5 + 0.0001 * c.updates, space=space, limits=Limits(screen=5, ladder=2))
    assert view.choice.candidate.updates == 800


def test_a_degenerate_seed_counts_as_the_worst_score_not_dropped():
    # lr 4e-4 is best on seeds 0 and 2 but collapses (NaN) on seed 1: its mean counts 0.0 for that seed
    def score(c, s):
        if c.lr == 4e-4:
            return math.nan if s == 1 else 0.9
        return 0.8 if c.lr == 2e-4 else 0.6

    _, view = simulate(score, limits=Limits(screen=3, combo=False, confirm=2, longer=False))
    by = {s.candidate.lr: s for s in view.complete}
    assert by[4e-4].mean == pytest.approx((0.9 + 0.0 + 0.9) / 3) and by[4e-4].degenerate == 1
    assert view.choice.candidate.lr == 2e-4  # the stable recipe wins


def test_screen_winners_are_confirmed_as_soon_as_they_are_certain():
    planner = FitPlanner(SPACE, SEEDS, floor=0.0)
    limits = Limits(screen=5, combo=False, confirm=2)
    screen = planner.screen_list()
    results = {(c, 0): SeedResult("finished", 0.9 - 0.1 * i, False) for i, c in enumerate(screen[:4])}
    view = planner.plan(results, set(results) | {(screen[4], 0)}, limits)
    # one screen run still open: the current best is sure to stay in the top 2, the second is not; confirmed
    # recipes get every seed at the first longer rung
    long = [replace(c, updates=200) for c in screen[:2]]
    assert all((long[0], s) in view.needed for s in SEEDS)
    assert not any((long[1], s) in view.needed for s in SEEDS)
    assert view.stage == "screen"


def test_choice_needs_every_seed_and_ties_prefer_fewer_updates():
    order, view = simulate(lambda c, s: 0.7, limits=Limits(screen=2, combo=False, confirm=1, ladder=1))
    assert view.choice.candidate == Candidate(2e-4, 1, 200)  # tie with its 400-update version: the shorter one
    assert all(s.complete for s in view.complete)
    assert {s.candidate.updates for s in view.complete} == {200, 400}  # one-seed screen runs are never chosen


# ------------------------------------------------------------------------------------------------
# The budget
# ------------------------------------------------------------------------------------------------
def test_budget_estimates_cost_and_makespan():
    b = Budget(1000, workers=2, start=0.0)
    assert b.cost(100) is None and not b.known()
    b.observe({"wall_s": 30.0, "train_s": 20.0}, 100)  # 10 s fixed + 0.2 s per update
    b.observe({"wall_s": 52.0, "train_s": 40.0}, 200)
    assert b.cost(100) == pytest.approx(11.0 + 0.2 * 100)
    b2 = Budget(1000, workers=2, start=0.0)
    b2.observe({"wall_s": 30.0, "train_s": 20.0}, 100)
    # two workers: 4 runs of 30 s = 60 s; a second stage waits for the first: + 30 s for one run
    assert b2.makespan([], [[100] * 4, [100]]) == pytest.approx(90.0)
    assert b2.makespan([25.0], [[100]]) == pytest.approx(30.0)  # the idle worker takes it at once
    b2.observe_live("r", 1, 100, 50.0)  # the first steps carry start-up: ignored below 10 %
    assert "r" not in b2.live_rate


def test_automatic_budget_is_a_fifth_of_the_grid_estimated_from_the_first_run(tmp_path):
    from stabletune.fitting.budget import AUTO_BUDGET_FRACTION, SPENT_FILE, read_spent

    b = Budget(None, workers=2, start=0.0, spent_file=tmp_path / SPENT_FILE, grid=[100] * 4 + [200] * 4)
    assert b.resolve() is None and b.left() == math.inf  # nothing measured: nothing to trim against yet
    b.save_spent()
    assert read_spent(tmp_path / SPENT_FILE, "budget_s") == 0.0
    b.observe({"wall_s": 30.0, "train_s": 20.0}, 100)  # 10 s fixed + 0.2 s per update: 30 s and 50 s runs
    # the grid on 2 workers, longest first: 50+50 | 50+50, then the four 30 s runs: 160 s
    assert b.resolve() == pytest.approx(AUTO_BUDGET_FRACTION * 160.0) and b.grid_estimate == pytest.approx(160.0)
    b.observe({"wall_s": 90.0, "train_s": 40.0}, 100)  # later runs do not move a budget once fixed
    assert b.resolve() == pytest.approx(AUTO_BUDGET_FRACTION * 160.0)
    b.save_spent()  # kept for a resumed fit
    assert read_spent(tmp_path / SPENT_FILE, "budget_s") == pytest.approx(AUTO_BUDGET_FRACTION * 160.0)
    resumed = Budget(None, workers=2, spent_file=tmp_path / SPENT_FILE, grid=[100] * 4 + [200] * 4)
    assert resumed.resolve() == pytest.approx(AUTO_BUDGET_FRACTION * 160.0)  # before any run of its own
    assert resumed.grid_estimate == pytest.approx(160.0) and resumed.auto
    assert Budget(300, workers=2, spent_file=tmp_path / SPENT_FILE).resolve() == 300.0  # a set budget wins
    assert Budget(600, workers=1).resolve() == 600.0 and not Budget(600, workers=1).auto


def test_budget_of_a_resumed_fit_counts_the_earlier_calls(tmp_path):
    from stabletune.fitting.budget import SPENT_FILE, read_spent

    spent = tmp_path / SPENT_FILE
    assert read_spent(spent) == 0.0 and Budget(1000, workers=1, spent_file=spent).earlier == 0.0  # a new fit
    b = Budget(1000, workers=1, start=100.0, spent_file=spent)
    b.save_spent()
    first = read_spent(spent)
    assert first == pytest.approx(b.elapsed(), abs=1.0)
    resumed = Budget(1000, workers=1, start=200.0, spent_file=spent)
    assert resumed.earlier == first
    # the same clock reading: the resumed budget has `first` seconds less left than a fresh one
    fresh = Budget(1000, workers=1, start=200.0)
    assert fresh.left() - resumed.left() == pytest.approx(first, abs=1.0)
    spent.write_text("{", encoding="utf-8")  # torn by a kill: counts nothing, no crash
    assert read_spent(spent) == 0.0 and Budget(1000, workers=1, spent_file=spent).earlier == 0.0


def test_trims_shrink_the_plan_in_order_until_it_fits():
    planner = FitPlanner(SPACE, SEEDS, floor=0.0)
    limits = Limits(screen=len(planner.screen_list()))
    applied = []
    for name, trim in TRIMS:
        while trim(limits, len(SPACE.lrs)):
            applied.append(name)
    assert applied[:5] == ["no second longer rung", "no combination screen", "learning rates screened at one L only",
                           "one recipe confirmed", "no longer training"]
    assert limits == Limits(screen=1, combo=False, confirm=1, longer=False, ladder=0)
    # the smallest plan still gives one recipe with every seed
    _, view = simulate(lambda c, s: 0.7, limits=limits)
    assert view.choice is not None and len(view.choice.seeds) == 3


# ------------------------------------------------------------------------------------------------
# End to end on the tiny model
# ------------------------------------------------------------------------------------------------
TINY_SPACE = dict(lrs=(3e-3, 1e-2), layers=(0, 1), updates=(9, 18), anchor_lr=3e-3, anchor_layers=1)


def tiny_fit(tiny_model, data: dict, out: Path, **kw):
    options = dict(train_file=data["train"], dev_file=data["val"], test_file=data.get("test"),
                   text_columns=["review"], label_column="verdict", model=str(tiny_model), out=out, budget=600,
                   workers=0, progress=False, batch_size=16, num_evals=3, threads=1,
                   space=SearchSpace(**TINY_SPACE))
    options.update(kw)
    return stabletune.fit(**options)


@pytest.fixture(scope="module")
def fitted(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    data = write_user_data(root / "data")
    res = tiny_fit(tiny_model, data, root / "model")
    return res, data, root / "model"


def test_fit_writes_model_card_figure_and_every_candidate(fitted):
    res, data, out = fitted
    record = json.loads((out / "fit.json").read_text())
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    assert (out / "fit.png").stat().st_size > 1000 and record["figure"] == "fit.png"
    assert not (out / "search" / "runs").exists()  # run checkpoints dropped; the database stays
    assert (out / "search" / "fit.db").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["id2label"] == {"0": "no", "1": "yes"}  # the user's label names
    assert cfg["stabletune"]["text_columns"] == ["review"] and cfg["stabletune"]["label_column"] == "verdict"
    cands = record["candidates"]
    assert sum(c["chosen"] for c in cands) == 1
    chosen = next(c for c in cands if c["chosen"])
    assert chosen["complete"] and chosen["seeds_run"] == 3
    for c in cands:
        vals = [s["val"] for s in c["seeds"]]
        assert c["mean_val"] == pytest.approx(sum(vals) / len(vals))  # tiny data: no NaN seeds here
        assert {"std_val", "degenerate", "lr", "layers", "updates"} <= set(c)
    assert record["choice"]["mean_val"] == max(c["mean_val"] for c in cands if c["complete"])
    assert record["choice"]["shipped_val"] == max(s["val"] for s in chosen["seeds"])
    assert record["test"]["score"] == record["test"]["metrics"]["acc"]
    assert record["test"]["score"] > record["test"]["majority_baseline"]  # the tiny task is learnable
    assert record["timings"]["wall_s"] < record["timings"]["budget_s"] * 1.1
    assert record["plan"]["trimmed"] == []  # a generous budget: the whole plan ran
    card = (out / "README.md").read_text()
    assert "| lr | L (pooler + top L) | updates |" in card
    assert sum(line.startswith(("| 0.0", "| 1e-", "| 3e-")) for line in card.splitlines()) == len(cands)
    assert record["choice"]["recipe"] in card and "mean over 3 seeds" in card


def test_fit_output_reloads_with_plain_transformers(fitted):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, _, out = fitted
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    with torch.inference_mode():
        logits = model(**tok(["great superb fine film", "awful dull sad film"], return_tensors="pt",
                             padding=True)).logits
    assert [model.config.id2label[i] for i in logits.argmax(-1).tolist()] == ["yes", "no"]


def _fit_on_paper_clock(tiny_model, tmp_path, monkeypatch, budget: float | str):
    """A fit whose runs report 100 s per 9 updates (10 s fixed + 10 s per update) on a clock that advances by
    exactly what they report: the budget sees the time its estimates are about (no sleeps, no real timing)."""
    from stabletune.fitting import clock as fit_clock
    from stabletune.training import train

    clock = [0.0]
    monkeypatch.setattr(fit_clock, "now", lambda: clock[0])

    def slow_on_paper(cfg, out_dir=None, *, callback=None):
        res = train(cfg, out_dir, callback=callback)
        res.timings.update(wall_s=10.0 + 10.0 * cfg.max_steps, train_s=10.0 * cfg.max_steps)
        clock[0] += res.timings["wall_s"]
        return res

    data = write_user_data(tmp_path / "data")
    res = tiny_fit(tiny_model, data, tmp_path / "model", budget=budget, run_fn=slow_on_paper)
    ran = {(c["lr"], c["layers"], c["updates"]): c["seeds_run"] for c in res.record["candidates"]}
    return res.record, ran, clock[0]


def test_budget_trims_the_plan_from_measured_run_costs(tiny_model, tmp_path, monkeypatch):
    """With a 400 s budget, after the first run (100 s) the plan no longer fits: it is trimmed in TRIMS order down
    to the smallest plan (one recipe, every seed), which ends within the budget."""
    record, ran, end = _fit_on_paper_clock(tiny_model, tmp_path, monkeypatch, 400)
    assert ran == {(3e-3, 1, 9): 3} and record["choice"]["seeds"] == 3
    assert {"no longer training", "smaller screen"} <= set(record["plan"]["trimmed"])
    assert end == 300.0 <= 400


def test_a_budget_below_the_smallest_plan_says_so(tiny_model, tmp_path, monkeypatch, caplog):
    """--budget 100 s: the smallest plan (one recipe x 3 seeds of 100 s) takes 300 s; the fit still ships, and a
    warning says it ran 3x over and what budget would allow a search (issue 23: `--budget 1` ran 45x over in
    silence). Within budget (400 s) there is no such warning."""
    caplog.set_level("WARNING", logger="stabletune.fitting.recipe")
    record, ran, end = _fit_on_paper_clock(tiny_model, tmp_path, monkeypatch, 100)
    assert end == 300.0 and record["choice"]["seeds"] == 3
    over = [r.getMessage() for r in caplog.records if "against --budget" in r.getMessage()]
    assert over == ["fit took 5m00s against --budget 1m40s (3.0x): the smallest plan it can judge, one recipe x 3 "
                    "seeds, costs more than that here; give --budget 10m or more for a search"]
    caplog.clear()
    _fit_on_paper_clock(tiny_model, tmp_path / "again", monkeypatch, 400)
    assert not [r for r in caplog.records if "against --budget" in r.getMessage()]


def test_automatic_budget_is_fixed_from_the_first_run_and_bounds_the_fit(tiny_model, tmp_path, monkeypatch):
    """budget="auto": the tiny grid is 8 cells x 3 seeds (12 runs of 9 updates: 100 s, 12 of 18: 190 s) = 3480 s on
    one worker, so the budget is 696 s; the plan is trimmed to it and the fit ends within it. fit.json and the
    card say so."""
    record, ran, end = _fit_on_paper_clock(tiny_model, tmp_path, monkeypatch, "auto")
    tm = record["timings"]
    assert tm["budget"] == "auto" and tm["grid_estimate_s"] == pytest.approx(3480.0)
    assert tm["budget_s"] == pytest.approx(696.0) and end <= 696.0
    assert record["plan"]["trimmed"] and record["choice"]["seeds"] == 3
    card = (tmp_path / "model" / "README.md").read_text()
    assert "11.6 min budget (automatic: a fifth of the 58 min the whole grid would take)" in card


def test_budget_undoes_a_trim_the_plan_has_room_for_again(tiny_model, tmp_path, monkeypatch):
    """With 640 s, the greedy trims go down to "no longer training" (one recipe's 3 seeds of 18 updates are 570 s),
    which frees enough for confirming a second recipe again: that earlier trim is undone, and the fit confirms
    both screened learning rates at 9 updates within the budget. Without the undo it would confirm one recipe
    and stop at ~300 s."""
    record, ran, end = _fit_on_paper_clock(tiny_model, tmp_path, monkeypatch, 640)
    trimmed = record["plan"]["trimmed"]
    assert "no longer training" in trimmed and "one recipe confirmed" not in trimmed, trimmed
    assert ran == {(3e-3, 1, 9): 3, (1e-2, 1, 9): 3}
    assert record["choice"]["seeds"] == 3
    assert 400 < end <= 640, end


def test_finished_fit_is_not_redone_without_overwrite(fitted, tiny_model):
    _, data, out = fitted
    with pytest.raises(ConfigError, match="finished fit"):
        tiny_fit(tiny_model, data, out)


def test_fit_resumes_after_sigkill_without_recomputing(tiny_model, tmp_path):
    """SIGKILL the fit while its 5th run trains (the child blocks there and says so; no timing involved), rerun:
    the 4 finished runs are reused as stored, the interrupted one is redone, and the fit completes."""
    data = write_user_data(tmp_path / "data")
    out = tmp_path / "model"
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from pathlib import Path
        import stabletune
        from stabletune.training import train
        from test_fit import tiny_fit
        calls = []
        def run_fn(cfg, out_dir=None, *, callback=None):
            calls.append(cfg)
            if len(calls) == 5:
                print("BLOCKED", flush=True)
                sys.stdin.read()  # never returns: the parent kills us here
            return train(cfg, out_dir, callback=callback)
        data = {{k: Path(v) for k, v in {json.dumps({k: str(v) for k, v in data.items()})}.items()}}
        tiny_fit({str(tiny_model)!r}, data, Path({str(out)!r}), run_fn=run_fn)
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, str(child)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "BLOCKED", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = out / "search" / "fit.db"
    with Store.open(db, readonly=True) as s:
        before = {r["run_id"]: dict(r) for r in s.runs()}
    done_before = {i: r for i, r in before.items() if r["status"] == "finished"}
    assert len(done_before) == 4 and sum(r["status"] == "running" for r in before.values()) == 1
    assert not (out / "fit.json").exists()
    spent = json.loads((out / "search" / "spent.json").read_text())["spent_s"]  # after the 4th stored run
    assert spent > 0

    calls = []

    def recording(cfg, out_dir=None, *, callback=None):
        from stabletune.training import train

        calls.append(cfg)
        return train(cfg, out_dir, callback=callback)

    res = tiny_fit(tiny_model, data, out, run_fn=recording)
    with Store.open(db, readonly=True) as s:
        after = {r["run_id"]: dict(r) for r in s.runs()}
    for run_id, row in done_before.items():  # stored as they were: not recomputed
        assert after[run_id]["finished_at"] == row["finished_at"] and after[run_id]["attempts"] == 1
    rerun_ids = {r for r, row in after.items() if row["attempts"] > 1}
    assert len(rerun_ids) == 1 and before[rerun_ids.pop()]["status"] == "running"
    assert len(calls) == len(after) - 4
    assert all(r["status"] == "finished" for r in after.values())
    assert (out / "fit.json").is_file() and res.choice["seeds"] == 3
    tm = res.record["timings"]  # the budget bounds the whole fit: the killed call's time is counted
    assert tm["earlier_calls_s"] == spent
    assert tm["wall_s"] == pytest.approx(spent + tm["wall_s_this_call"])


# ------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["missing column", "no text columns", "empty train", "unknown test label",
                                  "two seeds", "bad budget", "bad metric", "regression metric",
                                  "missing file", "dev file with glue", "out is a file", "too long",
                                  "negative workers", "unknown device", "fp16 on cpu", "too few to hold out"])
def test_fit_bad_input_one_line_exit_2(case, tiny_model, tmp_path, capsys):
    from stabletune.cli import main

    data = write_user_data(tmp_path / "data")
    args = ["fit", "--train-file", str(data["train"]), "--dev-file", str(data["val"]), "--text-columns", "review",
            "--label-column", "verdict", "--model", str(tiny_model), "--out", str(tmp_path / "out"),
            "--no-progress"]
    if case == "missing column":
        args[args.index("review")] = "body"
    elif case == "no text columns":
        i = args.index("--text-columns")
        del args[i:i + 2]
    elif case == "empty train":
        data["train"].write_text("id,review,verdict\n")
    elif case == "unknown test label":
        data["test"].write_text(data["test"].read_text().replace(",no\n", ",maybe\n", 1))
        args += ["--test-file", str(data["test"])]
    elif case == "two seeds":
        args += ["--seeds", "2"]
    elif case == "bad budget":
        args += ["--budget", "a while"]
    elif case == "bad metric":
        args += ["--metric", "f1:maybe"]
    elif case == "regression metric":
        args += ["--metric", "spearman"]
    elif case == "missing file":
        args[args.index(str(data["val"]))] = str(tmp_path / "nope.csv")
    elif case == "dev file with glue":
        args = ["fit", "--task", "rte", "--dev-file", str(data["val"]), "--out", str(tmp_path / "out")]
    elif case == "out is a file":
        (tmp_path / "out").write_text("")
    elif case == "too long":
        args += ["--max-seq-length", "100000"]
    elif case == "negative workers":  # issue 23: these three used to start the search and fail in its first run
        args += ["--workers", "-1"]
    elif case == "unknown device":
        args += ["--device", "tpu"]
    elif case == "fp16 on cpu":
        args += ["--device", "cpu", "--precision", "fp16"]
    elif case == "too few to hold out":  # issue 23: 2 rows without a dev file used to start training
        data["train"].write_text("id,review,verdict\n1,great film,yes\n2,awful film,no\n")
        i = args.index("--dev-file")
        del args[i:i + 2]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("stabletune: error:") and "Traceback" not in err, err
    assert not (tmp_path / "out").is_dir()


@pytest.mark.slow
def test_bench_fit_tiny_smoke(tiny_model, tmp_path):
    """benchmarks/bench_fit.py end to end at tiny scale (48 rows, tiny model and grid): every part runs and the
    report has every number the issue's targets need."""
    import importlib.util

    from tinymodel import glue_dir

    spec = importlib.util.spec_from_file_location("bench_fit", ROOT / "benchmarks" / "bench_fit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--tiny", "--model", str(tiny_model), "--glue", str(glue_dir()), "--out", str(tmp_path),
                       "--no-progress"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["datasets"]) == {"sentiment", "paraphrase", "similarity"}
    for name, r in report["datasets"].items():
        assert r["train"]["defaults"]["mean3"] is not None and r["fit"]["test"] is not None
        assert r["fit"]["same_space_as_grid"]
        assert ("grid" in r) == (name != "paraphrase")
    assert report["datasets"]["paraphrase"]["metric"] == "f1:yes"
    assert {"fit_choice_within_1pt_of_grid_best", "budget_at_most_quarter_of_grid"} <= set(
        report["targets"]["sentiment"])
    assert (tmp_path / "report.md").read_text().startswith("# bench_fit")
    # checks on the fit folders alone: predict in another process, plain transformers, label names, and the grid's
    # twin of the shipped run (same config and seed, another process) has the same test score
    for name, t in report["targets"].items():
        assert t["predict_reproduces_fit_json"] and t["plain_transformers_same_predictions"], (name, t)
        assert t.get("id2label_user_labels", True), (name, t)
    assert report["targets"]["sentiment"]["shipped_test_equals_grid_twin"]  # same config and seed: same score
    assert isinstance(report["targets"]["similarity"]["shipped_test_minus_grid_twin"], float)  # reported
    assert report["datasets"]["paraphrase"]["check"]["id2label"] == ["no", "yes"]
    # The grid is one study per number of updates; a finished rung lives on in report.json: on a machine without
    # its database (a fresh clone with the committed report.json) it is read back, not run again.
    grid = report["datasets"]["sentiment"]["grid"]
    assert set(grid["rungs"]) == {"9", "18"} and grid["complete"]
    dbs = sorted((tmp_path / "sentiment").glob("grid-sentiment-u*.db"))
    assert [d.name for d in dbs] == ["grid-sentiment-u18.db", "grid-sentiment-u9.db"]
    for d in dbs:
        d.unlink()
    assert bench.main(["--tiny", "--model", str(tiny_model), "--glue", str(glue_dir()), "--out", str(tmp_path),
                       "--no-progress", "--parts", "grid", "--datasets", "sentiment"]) == 0
    again = json.loads((tmp_path / "report.json").read_text())
    assert not any(d.exists() for d in dbs) and again["datasets"]["sentiment"]["grid"]["cells"] == grid["cells"]
    assert again["datasets"]["similarity"] == report["datasets"]["similarity"]  # not rerun, not lost
    # A rung read back from its database (nothing left to run) keeps the wall time measured by the call that ran it
    assert bench.main(["--tiny", "--model", str(tiny_model), "--glue", str(glue_dir()), "--out", str(tmp_path),
                       "--no-progress", "--parts", "grid", "--datasets", "similarity"]) == 0
    sim = json.loads((tmp_path / "report.json").read_text())["datasets"]["similarity"]["grid"]
    assert all(r["ran_this_call"] == r["runs_expected"] for r in sim["rungs"].values())
    assert sim["wall_s"] == report["datasets"]["similarity"]["grid"]["wall_s"]
    # After each rung but the last, the grid so far is handed to `save` (report.json), marked incomplete
    from argparse import Namespace

    from stabletune.fitting import SearchSpace

    space = SearchSpace(lrs=(3e-3, 1e-2), layers=(0, 1), updates=(9, 18), anchor_lr=3e-3, anchor_layers=1)
    ds = bench.build("sentiment", glue_dir(), tmp_path / "sentiment" / "data", 48)
    args = Namespace(model=str(tiny_model), extra={"batch_size": 16, "num_evals": 3, "threads": 1}, workers=0,
                     progress=False, resolved_workers=1)
    saved: list[dict] = []
    full = bench.grid_part(ds, args, tmp_path / "sentiment", space, save=saved.append)
    assert len(saved) == 1 and set(saved[0]["rungs"]) == {"9"} and not saved[0]["complete"]
    assert set(saved[0]["cells"]) == {k for k in full["cells"] if k.endswith("updates=9")} and full["complete"]


def test_bench_fit_grid_table_marks_cells_and_counts_failed_seeds():
    """report.md's grid table: one row per cell in (updates, lr, L) order, mean ± std over seeds with a failed /
    NaN seed counted as fit counts it (0), the best-validation cell in bold and fit's recipe in italics."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_fit", ROOT / "benchmarks" / "bench_fit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    space = SearchSpace(lrs=(1e-4, 2e-5), layers=(0,), updates=(9, 18), anchor_lr=1e-4, anchor_layers=0)
    runs = {u: [{"method": c.slug, "seed": s, "status": "finished", "best_val": v, "test": v - 0.1, "wall_s": 60.0}
                for c in space.grid() if c.updates == u
                for s, v in enumerate([0.5, 0.7] if c.lr == 1e-4 else [0.9, math.nan])]
            for u in (9,)}
    rungs = {"9": {"runs": runs[9], "complete": True, "wall_s_this_call": 240.0, "ran_this_call": 4,
                   "runs_expected": 4}}
    grid = bench._grid_summary(rungs, space, 2, 2)
    assert not grid["complete"] and grid["best_val_cell"] == "lr=0.0001 L=0 updates=9"
    lines = bench.grid_table("toy", grid, fit_choice="lr=2e-05 L=0 updates=9")
    assert "9 updates complete, 18 updates not run; wall 4.0 min so far" in lines[0]
    rows = lines[4:]
    assert rows == ["| *2e-05* | 0 | 9 | 0.4500 ± 0.6364 | 0.8000 | 2 | 2.0 |",  # NaN seed counted as 0
                    "| **0.0001** | 0 | 9 | 0.6000 ± 0.1414 | 0.5000 ± 0.1414 | 2 | 2.0 |"]


def test_replay_fit_follows_the_plan_and_the_budget_on_stored_grid_runs():
    """benchmarks/replay_fit.py drives fit's own search loop on a grid's stored runs (simulated clock): with room
    for everything it makes exactly the untrimmed plan's runs and chooses the planner's choice; with a small budget
    it trims and ends near the budget; a run the grid lacks is reported, not invented."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("replay_fit", ROOT / "benchmarks" / "replay_fit.py")
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    space = SearchSpace(lrs=(1e-4, 2e-4, 4e-4), layers=(0, 1), updates=(10, 20), anchor_lr=2e-4, anchor_layers=1)
    # validation rises with lr and with updates, seed 0 luckiest; 10-update runs take 60 s, 20-update ones 100 s
    score = {c.key: 0.5 + 100 * c.lr + (0.05 if c.updates == 20 else 0) + 0.01 * c.layers for c in space.grid()}
    runs = {str(u): {"runs": [{"method": c.slug, "seed": s, "status": "finished", "best_val": score[c.key] - 0.01 * s,
                               "test": score[c.key], "wall_s": 20.0 + 4.0 * u}
                              for c in space.grid() if c.updates == u for s in range(3)]} for u in (10, 20)}
    cells = {c.key: {"mean_test": score[c.key]} for c in space.grid()}
    best = max(cells, key=lambda k: score[k])
    grid = {"grid": space.to_dict(), "rungs": runs, "cells": cells, "best_val_cell": best,
            "best_val_cell_mean_test": score[best]}
    grid["grid"] = {k: list(v) for k, v in grid["grid"].items() if k in ("lrs", "layers", "updates")}

    # the planner alone, every needed run answered at once: the untrimmed plan
    planner = FitPlanner(space, [0, 1, 2], 0.0)
    results: dict = {}
    while not (view := planner.plan(results, set(results), Limits())).finished:
        for c, s in view.needed:
            results[(c, s)] = SeedResult("finished", score[c.key] - 0.01 * s, False)
    big = replay.replay(grid, space, "acc", 3600.0, Limits())
    assert big["runs"] == len(results) and not big["trimmed"]
    assert big["choice"] == view.choice.candidate.key == "lr=0.0004 L=1 updates=20"
    assert big["gap"] == pytest.approx(0.0)
    small = replay.replay(grid, space, "acc", 300.0, Limits())
    assert small["trimmed"] and small["runs"] < big["runs"] and small["wall_s"] <= 300.0 * 1.1
    del grid["rungs"]["20"]
    with pytest.raises(replay.MissingRun, match="updates=20"):
        replay.replay(grid, space, "acc", 3600.0, Limits())


def test_a_script_without_the_main_guard_is_told_why(tiny_model, tmp_path):
    """A script calling stabletune.fit() at top level, with worker processes: each worker re-runs the script and
    must not start a fit of its own; the worker says why in one line and the fit fails fast with the fix
    (issue 23: it used to say only "worker process died")."""
    import subprocess
    import sys

    data = write_user_data(tmp_path / "data")
    script = tmp_path / "myfit.py"
    script.write_text(
        "import stabletune\n"
        "from stabletune.fitting import SearchSpace\n"
        f"stabletune.fit(train_file={str(data['train'])!r}, dev_file={str(data['val'])!r}, text_columns=['review'],"
        f" label_column='verdict', model={str(tiny_model)!r}, out={str(tmp_path / 'model')!r}, workers=1,"
        " progress=False, batch_size=16, num_evals=3, threads=1,"
        f" space=SearchSpace(**{TINY_SPACE!r}))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert 'inside one of its worker processes' in proc.stderr and 'if __name__ == "__main__":' in proc.stderr
    assert "runs all failed" in proc.stderr and "if you called stabletune.fit() from a script" in proc.stderr
    guarded = script.read_text().replace("stabletune.fit(", "if __name__ == '__main__':\n    stabletune.fit(")
    script.write_text(guarded)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "inside one of its worker processes" not in proc.stderr and (tmp_path / "model" / "fit.json").is_file()


def test_resuming_with_other_options_is_refused(tiny_model, tmp_path):
    """Issue 23: an unfinished fit resumed with another --max-seq-length (or other data) used to reuse or mix runs
    made under the old options. Now: refused before anything is written, naming what differs; the same options
    resume; --overwrite starts over."""
    data = write_user_data(tmp_path / "data")
    out = tmp_path / "model"
    small = dict(space=SearchSpace(lrs=(1e-2,), layers=(1,), updates=(9,), anchor_lr=1e-2, anchor_layers=1))
    tiny_fit(tiny_model, data, out, max_seq_length=32, **small)
    (out / "fit.json").unlink()  # as if killed before the end: its search database holds the runs
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ConfigError, match=r"holds an unfinished fit started with other options \(max_seq_length "
                                          r"32 -> 24\): rerun with the same options .* --overwrite"):
        tiny_fit(tiny_model, data, out, max_seq_length=24, **small)
    text = data["train"].read_bytes()
    data["train"].write_bytes(text.replace(b"great", b"grand", 1))
    with pytest.raises(ConfigError, match=r"other options \(contents of train_file\)"):
        tiny_fit(tiny_model, data, out, max_seq_length=32, **small)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written by the refusals
    data["train"].write_bytes(text)
    res = tiny_fit(tiny_model, data, out, max_seq_length=32, **small)  # the same options: resumed
    assert (out / "fit.json").is_file() and res.choice["seeds"] == 3
    (out / "fit.json").unlink()
    tiny_fit(tiny_model, data, out, max_seq_length=24, overwrite=True, **small)
    assert json.loads((out / "fit.json").read_text())["config"]["max_seq_length"] == 24

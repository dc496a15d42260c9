"""Study files: parsing, expansion into run configs, run ids, and clear errors (no training here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stabletune.errors import ConfigError
from stabletune.study import load_study, parse_study
from stabletune.study.spec import Seeds, run_id_for
from stabletune.study.tuning import Planner

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))

MINIMAL = """
name: t
base: {max_steps: 4, lr: 3.0e-5}
methods:
  standard: {}
  bertadam: {optimizer: bertadam}
tasks: [rte]
seeds: 2
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------------
# The shipped study files
# ------------------------------------------------------------------------------------------------
def test_shipped_studies_exist():
    names = {p.stem for p in STUDIES}
    assert {"smoke", "optimizer", "reinit", "iterations", "methods", "seed-grid"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_shipped_study_loads_and_documents_its_command(path):
    spec = load_study(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), "a study file opens with a comment giving its command and cost"
    assert f"stabletune study run studies/{path.name}" in path.read_text()
    assert spec.num_runs() > 0
    for r in Planner(spec).plan(None).runs:  # the early-kill option is never used by the paper files
        assert r.config.progress is False


PAPER_CPU = sorted((ROOT / "studies" / "paper-cpu").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER_CPU, ids=[p.stem for p in PAPER_CPU])
def test_paper_cpu_study_loads_and_documents_its_command(path, tmp_path):
    text = path.read_text()
    assert text.startswith("#") and f"stabletune study run studies/paper-cpu/{path.name}" in text
    assert "Wall time on this 2-core machine" in text
    if "init_from" in text:  # sec7: the intermediate model is built first (its command is in the file)
        with pytest.raises(ConfigError, match="runs/mnli-intermediate/model"):
            load_study(path)
        model = tmp_path / "model"
        model.mkdir()
        (model / "config.json").write_text('{"model_type": "bert", "num_hidden_layers": 6}')
        text = text.replace("../../runs/mnli-intermediate/model", str(model))
        path = write(tmp_path, text.replace("../../../shared", str(ROOT.parent / "shared")), path.name)
    spec = load_study(path)
    assert spec.num_runs() >= 30


def test_smoke_study_is_2_methods_1_task_3_seeds():
    spec = load_study(ROOT / "studies" / "smoke.yaml")
    assert len(spec.methods) == 2 and len(spec.tasks) == 1 and len(spec.seeds) == 3
    assert spec.num_runs() == 6
    runs = Planner(spec).plan(None).runs
    assert len({r.run_id for r in runs}) == 6
    assert {r.config.model for r in runs} == {"minilm-l6"}


def test_seed_grid_study_is_10_by_10():
    spec = load_study(ROOT / "studies" / "seed-grid.yaml")
    assert len(spec.seeds) == 100
    pairs = {(s.init_seed, s.data_seed) for s in spec.seeds}
    assert pairs == {(i, d) for i in range(10) for d in range(10)}


def test_paper_search_spaces_follow_appendix_h():
    spec = load_study(ROOT / "studies" / "methods.yaml")
    m = spec.methods
    assert m["llrd"].search == {"lr": {"*": [2e-5, 5e-5, 1e-4]}, "llrd": {"*": [0.9, 0.95]}}
    assert m["mixout"].search == {"mixout": {"*": [0.1, 0.3, 0.5, 0.7, 0.9]}}
    assert m["pretrained-wd"].search == {"pretrained_wd": {"*": [1e-3, 1e-2, 1e-1, 1.0]}}
    assert m["wd"].search == {"weight_decay": {"*": [1e-4, 1e-3, 1e-2, 1e-1]}}
    assert len(m["llrd"].candidates("rte")) == 6
    assert [c["reinit_layers"] for c in m["reinit"].candidates("rte")] == [1, 2, 3, 4, 5, 6]
    it = load_study(ROOT / "studies" / "iterations.yaml")
    steps = {t.name: [c["max_steps"] for c in it.methods["longer"].candidates(t.name)] for t in it.tasks}
    # Section 6: {200, ..., 3200}, skipping values below three epochs of each small task
    assert steps["sst-2-1k"] == [200, 400, 800, 1600, 3200]
    assert steps["rte"] == [400, 800, 1600, 3200]  # 3 epochs of RTE = 234 updates
    assert steps["cola"] == [1600, 3200]  # 3 epochs of CoLA = 804 updates


# ------------------------------------------------------------------------------------------------
# Expansion
# ------------------------------------------------------------------------------------------------
def test_seed_forms():
    def seeds(value: str) -> list[Seeds]:
        return parse_study(MINIMAL.replace("seeds: 2", f"seeds: {value}")).seeds

    assert seeds("3") == [Seeds(0), Seeds(1), Seeds(2)]
    assert seeds("[4, 9]") == [Seeds(4), Seeds(9)]
    grid = seeds("{init: [1, 2], data: 3}")
    assert [(s.init_seed, s.data_seed) for s in grid] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert len({s.seed for s in grid}) == 6


def test_grid_seeds_reach_the_run_config():
    spec = parse_study(MINIMAL.replace("seeds: 2", "seeds: {init: [3], data: [7, 8]}"))
    runs = Planner(spec).plan(None).runs
    assert {(r.config.resolved_init_seed, r.config.resolved_data_seed) for r in runs} == {(3, 7), (3, 8)}


def test_precedence_base_task_method_candidate_seed(tmp_path):
    text = """
name: prec
base: {lr: 1.0e-5, max_steps: 10, batch_size: 16, weight_decay: 0.5}
methods:
  m: {lr: 3.0e-5, mixout: 0.1}
  s:
    search: {max_steps: [20, 30]}
tasks:
  - {task: rte, batch_size: 8, lr: 2.0e-5}
seeds: [5]
"""
    spec = load_study(write(tmp_path, text))
    run = spec.make_run("m", "rte", Seeds(5), "final")
    cfg = run.config
    assert (cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.mixout, cfg.seed) == (3e-5, 8, 0.5, 0.1, 5)
    assert cfg.task == "rte" and cfg.progress is False
    s_runs = [r for r in Planner(spec).plan(None).runs if r.method == "s"]
    assert sorted(r.config.max_steps for r in s_runs) == [20, 30]
    assert {r.phase for r in s_runs} == {"search"}
    assert {r.config.lr for r in s_runs} == {2e-5}  # the task entry's lr beats base


def test_data_dir_relative_to_the_study_file_and_overridable(tmp_path):
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    spec = load_study(write(sub, MINIMAL + "data_dir: ../glue\n"))
    run = Planner(spec).plan(None).runs[0]
    assert run.config.data_dir == str((tmp_path / "a" / "glue").resolve())
    other = spec.with_data_dir(str(tmp_path / "elsewhere"))
    run2 = Planner(other).plan(None).runs[0]
    assert run2.config.data_dir == str((tmp_path / "elsewhere").resolve())
    assert run2.run_id == run.run_id  # where the data lives is not part of a run's identity


def test_run_ids_are_stable_and_distinct(tmp_path):
    a = Planner(load_study(write(tmp_path, MINIMAL))).plan(None).runs
    b = Planner(parse_study(MINIMAL)).plan(None).runs
    assert [r.run_id for r in a] == [r.run_id for r in b]
    assert len({r.run_id for r in a}) == len(a) == 4
    cfg = a[0].config
    assert run_id_for("standard", "rte", "final", cfg) == a[0].run_id
    assert run_id_for("standard", "rte", "search", cfg) != a[0].run_id
    import dataclasses

    assert run_id_for("standard", "rte", "final", dataclasses.replace(cfg, threads=7)) == a[0].run_id
    assert run_id_for("standard", "rte", "final", dataclasses.replace(cfg, lr=1e-5)) != a[0].run_id
    c = Planner(parse_study(MINIMAL.replace("lr: 3.0e-5", "lr: 4.0e-5"))).plan(None).runs
    assert not {r.run_id for r in a} & {r.run_id for r in c}


def test_search_expands_grid_product_on_search_seeds():
    text = MINIMAL.replace("  bertadam: {optimizer: bertadam}\n", """  llrd:
    search: {lr: [2.0e-5, 5.0e-5, 1.0e-4], llrd: [0.9, 0.95]}
    search_seeds: [10, 11]
""")
    spec = parse_study(text)
    cands = spec.methods["llrd"].candidates()
    assert cands[0] == {"lr": 2e-5, "llrd": 0.9} and cands[1] == {"lr": 2e-5, "llrd": 0.95} and len(cands) == 6
    search = spec.search_runs()
    assert len(search) == 12 and {r.seeds.seed for r in search} == {10, 11}
    assert spec.num_runs() == 12 + 2 * 2  # search + final runs of both methods
    plan = Planner(spec).plan(None)
    assert plan.waiting == [("llrd", "rte")] and len(plan.runs) == 12 + 2


def test_search_values_per_task():
    text = MINIMAL.replace("tasks: [rte]", "tasks: [rte, cola]").replace(
        "  bertadam: {optimizer: bertadam}\n", "  longer:\n    search: {max_steps: {'*': [200, 400], cola: [800]}}\n")
    spec = parse_study(text)
    assert spec.methods["longer"].candidates("rte") == [{"max_steps": 200}, {"max_steps": 400}]
    assert spec.methods["longer"].candidates("cola") == [{"max_steps": 800}]
    assert spec.num_runs() == 3 * 2 + 2 * 2 * 2
    assert sorted((r.task, r.config.max_steps) for r in spec.search_runs()) == \
        [("cola", 800)] * 2 + [("rte", 200)] * 2 + [("rte", 400)] * 2


def test_task_entries_with_names_and_splits():
    text = MINIMAL.replace("tasks: [rte]", "tasks: [rte, {task: sst-2, split: paper-1k, name: sst-2-1k}]")
    spec = parse_study(text)
    assert [t.name for t in spec.tasks] == ["rte", "sst-2-1k"]
    run = spec.make_run("standard", "sst-2-1k", Seeds(0), "final")
    assert run.config.task == "sst-2" and run.config.split == "paper-1k"


# ------------------------------------------------------------------------------------------------
# Errors: one ConfigError naming the file
# ------------------------------------------------------------------------------------------------
BAD = {
    "unknown top-level key": (MINIMAL + "sedes: 3\n", "unknown key 'sedes'"),
    "unknown method option": (MINIMAL.replace("{optimizer: bertadam}", "{optimiser: bertadam}"),
                              "unknown run option 'optimiser' (did you mean 'optimizer'?)"),
    "invalid option value": (MINIMAL.replace("{optimizer: bertadam}", "{mixout: 1.5}"), "--mixout"),
    "invalid choice": (MINIMAL.replace("{optimizer: bertadam}", "{optimizer: sgd}"), "choose from"),
    "empty methods": (MINIMAL.replace("""methods:
  standard: {}
  bertadam: {optimizer: bertadam}""", "methods: {}"), "empty grid"),
    "empty tasks": (MINIMAL.replace("tasks: [rte]", "tasks: []"), "empty grid"),
    "zero seeds": (MINIMAL.replace("seeds: 2", "seeds: 0"), "empty grid"),
    "duplicate method": (MINIMAL.replace("  bertadam: {optimizer: bertadam}", "  standard: {lr: 1.0e-5}"),
                         "duplicate key 'standard'"),
    "duplicate task": (MINIMAL.replace("tasks: [rte]", "tasks: [rte, rte]"), "listed twice"),
    "bad yaml": (MINIMAL.replace("seeds: 2", "seeds: [2"), "invalid YAML"),
    "reserved key": (MINIMAL.replace("{optimizer: bertadam}", "{seed: 3}"), "seeds come from"),
    "task in base": (MINIMAL.replace("base: {", "base: {task: rte, "), "tasks come from"),
    "unknown baseline": (MINIMAL + "baseline: nope\n", "baseline 'nope'"),
    "bad search value": (MINIMAL.replace("{optimizer: bertadam}", "{search: {mixout: [0.1, 2.0]}}"), "--mixout"),
    "search and set": (MINIMAL.replace("{optimizer: bertadam}", "{mixout: 0.1, search: {mixout: [0.2]}}"),
                       "both set and searched"),
    "search_seeds without search": (MINIMAL.replace("{optimizer: bertadam}", "{search_seeds: 3}"),
                                    "needs a search"),
    "search for an unknown task": (MINIMAL.replace("{optimizer: bertadam}", "{search: {max_steps: {mrpc: [8]}}}"),
                                   "'mrpc' is not a task of this study"),
    "search missing a task": (MINIMAL.replace("tasks: [rte]", "tasks: [rte, cola]").replace(
        "{optimizer: bertadam}", "{search: {max_steps: {rte: [8]}}}"), "every task or a '*' default"),
    "missing seeds": (MINIMAL.replace("seeds: 2\n", ""), "missing required key 'seeds'"),
    "not a mapping": ("- a\n- b\n", "must be a mapping"),
    "warmup beyond steps": (MINIMAL.replace("{optimizer: bertadam}", "{warmup_ratio: 1.5}"), "warmup"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_invalid_study_files(tmp_path, case):
    text, expected = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_study(path)
    msg = str(e.value)
    assert str(path) in msg and expected in msg, msg
    assert "\n" not in msg


def test_missing_study_file(tmp_path):
    with pytest.raises(ConfigError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stabletune", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cli_invalid_study_exits_2_and_writes_nothing(tmp_path):
    path = write(tmp_path, MINIMAL.replace("{optimizer: bertadam}", "{optimiser: bertadam}"))
    proc = _cli("study", "run", str(path), "--quiet", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "optimiser" in lines[0] and str(path) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # no database, no lock file


def test_cli_missing_data_dir_exits_2_and_writes_nothing(tmp_path):
    path = write(tmp_path, MINIMAL)
    proc = _cli("study", "run", str(path), "--data-dir", str(tmp_path / "no-glue"), cwd=tmp_path)
    assert proc.returncode == 2 and "data folder not found" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_cli_status_before_any_run_writes_nothing(tmp_path):
    path = write(tmp_path, MINIMAL)
    proc = _cli("study", "status", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "0/4 done" in proc.stdout and "pending 4" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_run_ids_survive_new_config_fields():
    """Adding a RunConfig field must not change the ids of runs stored before it (a study would recompute them).
    The expected id was computed by the code of commit 375edfa, before `padding` existed."""
    import dataclasses

    from stabletune.config import RunConfig
    from stabletune.study.spec import HASHED_FIELDS_V1

    # a run on the Hugging Face path, as every run was then (the default encoder_impl "auto" now resolves to the
    # unpadded encoder for MiniLM, which must and does get another id: tests/test_unpadded.py); group_by_length was
    # True by default then, and paper-1k was at version 1 of its definition
    cfg = RunConfig(task="cola", split="paper-1k", lr=1e-4, seed=3, encoder_impl="hf", group_by_length=True)
    assert run_id_for("adam", "cola", "final", cfg, split_version=1) == "5ed879f43e7c90e2"
    # every field added since is hashed only away from its default
    later = {f.name for f in dataclasses.fields(RunConfig)} - HASHED_FIELDS_V1
    assert "padding" in later
    assert run_id_for("adam", "cola", "final", dataclasses.replace(cfg, padding="max_length"),
                      split_version=1) != "5ed879f43e7c90e2"


def test_run_ids_change_with_the_split_version_and_the_batching_default():
    """Runs of the old paper-1k (v1) and runs that grouped batches under the old default are never reused as runs
    of the current definitions; a split that did not change (paper-small) keeps its ids."""
    import dataclasses

    from stabletune.config import RunConfig
    from stabletune.data.splits import SPLIT_VERSIONS

    assert SPLIT_VERSIONS == {"paper-small": 1, "paper-1k": 2, "dev-as-test": 1, "files": 1, "no-test": 1}
    assert RunConfig().group_by_length is False
    old = RunConfig(task="cola", split="paper-1k", lr=1e-4, seed=3, group_by_length=True, encoder_impl="hf")
    assert run_id_for("adam", "cola", "final", old) != "5ed879f43e7c90e2"  # same config, paper-1k v2
    now = dataclasses.replace(old, group_by_length=False)
    assert run_id_for("adam", "cola", "final", now, split_version=1) != "5ed879f43e7c90e2"  # random batches
    # paper-small is still at version 1: an id stored before split versions existed (computed by the code of
    # commit eca7f8c, where grouping was the default) is unchanged when grouping is pinned
    small = RunConfig(task="rte", split="paper-small", seed=0, group_by_length=True, encoder_impl="hf")
    assert run_id_for("standard", "rte", "final", small) == "7d4809b21889ad5c"
    assert run_id_for("standard", "rte", "final", small, split_version=2) != run_id_for(
        "standard", "rte", "final", small)


def test_equivalence_margin_is_declared_in_the_study_file():
    assert parse_study(MINIMAL).equivalence_margin is None
    assert parse_study(MINIMAL + "equivalence_margin: 1.5\n").equivalence_margin == 1.5
    for bad in ("0", "-1", ".inf", "yes", "one"):
        with pytest.raises(ConfigError, match="equivalence_margin"):
            parse_study(MINIMAL + f"equivalence_margin: {bad}\n")

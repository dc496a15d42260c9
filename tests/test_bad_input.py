"""Bad input, tried as a new user would: every case of issue 12's table (part 4) and its extras, one row each.

Each row builds its input, runs the CLI in process and checks its outcome:

- ``exit2``: exit code 2 and exactly one line on stderr (no traceback) that names the option, file or line;
- ``warn``: the run goes on (exit 0) and a warning says why.

``loads`` rows also fail the test if the expensive work starts (training, reading data or a study's results,
drawing a figure): the refusal must come before it. ``after`` checks what must not exist afterwards (no output
half-written, no ``.lock``/``-wal``/``-shm`` files). Uses the tiny random BERT of tests/tinymodel.py (512 positions,
the MiniLM tokenizer) and studies run with a fake run function: no real training except in the warning rows.

Issue 23's list, and where each case is tested (those that need a fixture of another file live beside it):

- work started before options were checked: ``fit --workers -1 / --device tpu / --precision fp16`` and a 2-row
  training file without a dev file: test_fit.py ``test_fit_bad_input_one_line_exit_2``; ``report --metric
  rte=f9``: test_report.py ``test_report_from_export_cli_errors``; every numeric option, choice and input path
  of every command: test_probe.py (208 generated cases).
- hangs: an unreachable ``--ray-address``: test_study_ray_cluster.py; the 2-row fit: above.
- silent wrong results: a repeated CSV header (``csv-repeated-header`` here; predict: test_predict.py
  ``repeated header``); ``study export`` of a study never run and ``train --text-columns`` on a GLUE task: here.
- resume with other options: test_fit.py ``test_resuming_with_other_options_is_refused``.
- disk full: test_outputs.py (export CSV, tables export, report), test_predict.py
  ``test_predict_on_a_full_disk_keeps_the_earlier_output``, test_study_store.py
  ``test_a_full_database_is_reported_as_cannot_write``.
- the Trainer integration's arguments: here (``test_prepare_for_trainer_*``).
- path traversal through imported task names: ``report-csv-task-*`` / ``report-export-task-*`` here.
- ``fit --budget`` far too small: test_fit.py ``test_a_budget_below_the_smallest_plan_says_so``; a script
  without the ``__main__`` guard: test_fit.py ``test_a_script_without_the_main_guard_is_told_why``.
- Ray: a lost node, token auth, a second driver: test_study_ray_cluster.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from stabletune.cli import main

STUDY = """
name: bi
base: {max_steps: 6, num_evals: 3}
methods:
  standard: {}
  bertadam: {optimizer: bertadam}
tasks: [rte]
seeds: 2
baseline: standard
"""


def fake_run(cfg, out_dir=None, *, callback=None):
    """A stored-result-shaped run with no training (numbers from the seed and optimizer)."""
    score = 0.5 + 0.01 * cfg.seed + (0.05 if cfg.optimizer == "adamw" else 0.0)
    evals = [{"step": s, "epoch": s / 6, "val": {"acc": score}, "val_loss": 0.5} for s in (2, 4, 6)]
    point = {"step": 6, "val": {"acc": score}, "test": {"acc": score}}
    return {"status": "finished", "config": cfg.to_dict(), "seeds": {"seed": cfg.seed}, "num_steps": 6,
            "task": {"name": cfg.task, "labels": ["entailment", "not_entailment"], "metric": "acc"},
            "best": point, "last": point, "evals": evals, "error": None, "environment": {},
            "train_log": [{"step": s, "loss": 0.1, "lr": 1e-5, "grad_norm": 1.0} for s in range(1, 7)],
            "timings": {"wall_s": 0.1}}


@dataclass
class Ctx:
    """What a row's setup can use; ``argv`` pieces refer to paths under ``tmp``."""

    tmp: Path
    model: Path

    def train(self, *extra: str, out: str | None = "run") -> list[str]:
        args = ["train", "--task", "rte", "--data-dir", str(self.tmp / "glue"), "--model", str(self.model),
                "--train-size", "16", "--batch-size", "8", "--max-steps", "2", "--num-evals", "1",
                "--max-seq-length", "32", "--no-progress", "--threads", "1"]
        return args + (["--out", str(self.tmp / out)] if out else []) + list(extra)

    def user_train(self, dev_rows: list[str], train_rows: list[str] | None = None, *extra: str) -> list[str]:
        """A run on a user CSV dataset (a real tiny run unless it is refused)."""
        train_rows = train_rows or [f"sentence {i} is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}"
                                    for i in range(16)]
        (self.tmp / "train.csv").write_text("sentence,label\n" + "\n".join(train_rows) + "\n")
        (self.tmp / "dev.csv").write_text("sentence,label\n" + "\n".join(dev_rows) + "\n")
        args = self.train(*extra)
        i = args.index("--task")
        del args[i:i + 4]  # no --task/--data-dir
        return args + ["--train-file", str(self.tmp / "train.csv"), "--dev-file", str(self.tmp / "dev.csv"),
                       "--text-columns", "sentence"]

    def file(self, name: str, data: bytes | str = "x\n") -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p

    def study(self, *, corrupt: bool = False) -> Path:
        """A finished study (fake runs) in ``tmp/st``; ``corrupt``: the data pages of ``runs`` and
        ``test_metrics`` overwritten, the header and schema intact (so the damage is met at query time)."""
        from stabletune.study import run_study

        folder = self.tmp / "st"
        folder.mkdir(exist_ok=True)
        path = folder / "bi.yaml"
        path.write_text(STUDY)
        run_study(path, backend="inline", run_fn=fake_run, progress=False)
        db = folder / "bi.db"
        if corrupt:
            with sqlite3.connect(db) as c:
                page = c.execute("PRAGMA page_size").fetchone()[0]
                roots = [r for (r,) in c.execute("SELECT rootpage FROM sqlite_master "
                                                  "WHERE name IN ('runs', 'test_metrics')")]
            c.close()
            data = bytearray(db.read_bytes())
            for r in roots:
                data[(r - 1) * page:r * page] = b"\xff" * page
            db.write_bytes(bytes(data))
        return path


def _sidecars(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(("-wal", "-shm", ".lock")))


def _absent(*names: str) -> Callable[[Ctx], None]:
    def check(ctx: Ctx) -> None:
        present = [n for n in names if (ctx.tmp / n).exists()]
        assert not present, f"left behind: {present}"
        assert not list(ctx.tmp.glob("*.partial-*")), "a half-written run folder was left"
    return check


def _no_sidecars(ctx: Ctx) -> None:
    assert _sidecars(ctx.tmp / "st") == [], "the study database gained -wal/-shm/.lock files"


def _both(*checks: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    def check(ctx: Ctx) -> None:
        for c in checks:
            c(ctx)
    return check


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    expect: str  # in the error line (exit2) or the warning (warn)
    outcome: str = "exit2"
    loads: tuple[str, ...] = ()  # "module:attribute" that must not be called
    after: Callable[[Ctx], None] | None = None
    also_not: str | None = None  # a wording the line must no longer have


TRAIN = ("stabletune.training:train", "stabletune.training:train_ensemble")
STUDY_READS = ("stabletune.study:load_frames", "stabletune.study:export_results", "stabletune.study:load_results",
               "stabletune.study:export_frames")

CASES = [
    # --- train --out ------------------------------------------------------------------------------
    Case("train-out-under-a-file", lambda c: (c.file("afile"), c.train(out="afile/run"))[1],
         "is a file, not a folder", loads=TRAIN, after=_absent("afile/run")),
    Case("train-out-uncreatable", lambda c: c.train("--out", "/proc/stabletune-nope/run", out=None),
         "cannot create /proc/stabletune-nope/run", loads=TRAIN),
    Case("train-out-is-a-file", lambda c: (c.file("run"), c.train())[1],  # extra: not "an existing folder"
         "--out: " , loads=TRAIN, also_not="already exists"),
    # --- config file and values -------------------------------------------------------------------
    Case("config-not-utf8", lambda c: (c.file("bad.yaml", b"task: rte\nlr: \xff\xfe\n"),
                                       c.train("--config", str(c.tmp / "bad.yaml")))[1],
         "bad.yaml: not UTF-8", loads=TRAIN, after=_absent("run")),
    Case("config-wrong-type", lambda c: (c.file("wt.yaml", "batch_size: abc\n"),
                                         c.train("--config", str(c.tmp / "wt.yaml")))[1],
         "invalid value 'abc' for --batch-size: expected an integer", loads=TRAIN, also_not="invalid literal"),
    Case("max-seq-length-beyond-positions", lambda c: c.train("--max-seq-length", "1024"),
         "--max-seq-length: 1024 is more than the 512 positions", loads=TRAIN, after=_absent("run")),
    Case("epochs-inf", lambda c: c.train("--epochs", "inf", "--max-steps", "none"), "--epochs", loads=TRAIN),
    Case("epochs-nan", lambda c: c.train("--epochs", "nan"), "--epochs: must be a finite number", loads=TRAIN),
    Case("split-seed-negative", lambda c: c.train("--split-seed", "-1"), "--split-seed", loads=TRAIN),
    Case("seed-huge", lambda c: c.train("--seed", "99999999999999999999999"), "--seed", loads=TRAIN),
    Case("seed-negative", lambda c: c.train("--seed", "-1"), "--seed", loads=TRAIN),
    Case("ensemble-seed-past-range", lambda c: c.train("--seed", str(2**32 - 1), "--ensemble", "2"),
         "--seed", loads=TRAIN),
    Case("max-seq-length-2-padding-max-length", lambda c: c.train("--max-seq-length", "2", "--padding", "max_length"),
         "--max-seq-length: 2 leaves no room for text", loads=TRAIN),
    Case("max-seq-length-2-sentence-pairs", lambda c: c.train("--max-seq-length", "2"),
         "special tokens to each sentence pair; give at least 5", loads=TRAIN),
    Case("max-seq-length-2-one-text", lambda c: c.user_train(["a,pos", "b,neg"], None, "--max-seq-length", "2"),
         "to each text; give at least 3", loads=TRAIN),
    Case("text-columns-on-a-glue-task", lambda c: c.train("--text-columns", "sentence"),
         "--text-columns: applies to your own files (--train-file); GLUE task 'rte'", loads=TRAIN,
         after=_absent("run")),
    Case("label-column-on-a-glue-task", lambda c: c.train("--label-column", "y"),
         "--label-column: applies to your own files", loads=TRAIN, after=_absent("run")),
    # --- study files: the same seed rule as train -------------------------------------------------
    Case("study-seed-negative", lambda c: [
        "study", "status", str(c.file("neg.yaml", STUDY.replace("seeds: 2", "seeds: [-1]")))],
        "non-negative"),
    Case("study-seed-huge", lambda c: [
        "study", "status", str(c.file("big.yaml", STUDY.replace("seeds: 2", f"seeds: [{2**32}]")))],
        "--seed: seeds are numpy/torch seeds in [0, 2**32)"),
    # --- study database ---------------------------------------------------------------------------
    Case("status-corrupt-db", lambda c: ["study", "status", str(c.study(corrupt=True))],
         "bi.db: cannot read the study database", after=_no_sidecars),
    Case("export-corrupt-db", lambda c: ["study", "export", str(c.study(corrupt=True))],
         "bi.db: cannot read the study database", after=_both(_no_sidecars, _absent("st/bi.csv"))),
    Case("report-corrupt-db", lambda c: ["report", str(c.study(corrupt=True)), "--out", str(c.tmp / "rep")],
         "bi.db: cannot read the study database", after=_both(_no_sidecars, _absent("rep"))),
    Case("run-corrupt-db-leaves-no-lock", lambda c: ["study", "run", str(c.study(corrupt=True)), "--workers", "0"],
         "bi.db: cannot read the study database", after=_no_sidecars),
    Case("run-db-is-a-folder-leaves-no-lock", lambda c: (
        (c.tmp / "dbdir").mkdir(), ["study", "run", str(c.file("s.yaml", STUDY)), "--db", str(c.tmp / "dbdir"),
                                    "--workers", "0"])[1],
         "dbdir is a folder", after=_absent("dbdir.lock")),
    # --- study export / report / plot --out -------------------------------------------------------
    # "missing parent": output files and an explicit report folder need an existing parent folder (run folders
    # and the report's default folder are created with their parents: test_missing_parents_that_are_created)
    Case("export-out-missing-parent", lambda c: [
        "study", "export", str(c.study()), "--out", str(c.tmp / "nodir/x.csv")],
         "nodir does not exist", loads=STUDY_READS, after=_absent("nodir")),
    Case("report-out-missing-parent", lambda c: [
        "report", str(c.study()), "--out", str(c.tmp / "nodir/rep")],
         "nodir does not exist", loads=STUDY_READS, after=_absent("nodir")),
    Case("plot-out-missing-parent", lambda c: ["plot", "bias-ratio", "--out", str(c.tmp / "nodir/f.png")],
         "nodir does not exist", loads=("stabletune.analysis.plots:plot_bias_ratio",),
         after=_absent("nodir")),
    Case("export-out-missing-parent-under-a-file", lambda c: [
        "study", "export", str(c.study()), "--out", str(c.file("afile")) + "/no/x.csv"],
         "afile is a file, not a folder", loads=STUDY_READS, after=_absent("st/bi.csv")),
    Case("export-out-uncreatable", lambda c: [
        "study", "export", str(c.study()), "--out", "/proc/stabletune-nope.csv"],
         "cannot create /proc/stabletune-nope.csv", loads=STUDY_READS),
    Case("export-out-is-a-folder", lambda c: (
        (c.tmp / "exdir").mkdir(), ["study", "export", str(c.study()), "--out", str(c.tmp / "exdir")])[1],
         "exdir is a folder", loads=STUDY_READS),
    Case("export-tables-out-missing-parent", lambda c: [
        "study", "export", str(c.study()), "--format", "tables", "--out", str(c.tmp / "nodir/exp")],
         "nodir does not exist", loads=STUDY_READS, after=_absent("nodir")),
    Case("export-tables-out-is-a-file", lambda c: [
        "study", "export", str(c.study()), "--format", "tables", "--out", str(c.file("efile"))],
         "efile exists and is not a folder", loads=STUDY_READS),
    Case("export-tables-out-holds-other-files", lambda c: (
        c.file("notes/todo.txt", "mine\n"), ["study", "export", str(c.study()), "--format", "tables", "--out",
                                            str(c.tmp / "notes")])[1],
         "holds something other than a results export", loads=STUDY_READS,
         after=lambda c: _same(c.tmp / "notes", ["todo.txt"], "mine\n")),
    Case("export-csv-of-a-study-never-run", lambda c: ["study", "export", str(_planned_only(c))],
         "bi.yaml: the study has no results to export yet (4 pending)", after=_absent("st/bi.csv")),
    Case("export-tables-of-a-study-never-run", lambda c: [
        "study", "export", str(_planned_only(c)), "--format", "tables", "--out", str(c.tmp / "nexp")],
         "the study has no results to export yet (4 run(s) planned, none with a result)", after=_absent("nexp")),
    Case("report-from-export-missing", lambda c: [
        "report", "--from-export", str(c.tmp / "noexp"), "--out", str(c.tmp / "rep")],
         "export folder not found", after=_absent("rep")),
    Case("report-from-export-not-an-export", lambda c: (
        c.file("plain/metrics.csv", "x\n"), ["report", "--from-export", str(c.tmp / "plain"), "--out",
                                          str(c.tmp / "rep")])[1],
         "plain/meta.json: not found", after=_absent("rep")),
    Case("report-out-missing-parent-under-a-file", lambda c: [
        "report", str(c.study()), "--out", str(c.file("afile")) + "/no/rep"],
         "afile is a file, not a folder", loads=STUDY_READS),
    Case("report-out-uncreatable", lambda c: [
        "report", str(c.study()), "--out", "/proc/stabletune-nope-rep"],
         "cannot create /proc/stabletune-nope-rep", loads=STUDY_READS),
    Case("report-out-is-a-file", lambda c: ["report", str(c.study()), "--out", str(c.file("rfile"))],
         "rfile exists and is not a folder", loads=STUDY_READS),
    Case("report-out-holds-users-report-md", lambda c: (
        c.file("mine/report.md", "my own notes\n"), ["report", str(c.study()), "--out", str(c.tmp / "mine")])[1],
         "report.md was not written by stabletune report", loads=STUDY_READS,
         after=lambda c: _same(c.tmp / "mine", ["report.md"], "my own notes\n")),
    Case("plot-out-missing-parent-under-a-file", lambda c: [
        "plot", "bias-ratio", "--out", str(c.file("afile")) + "/no/fig.png"],
         "afile is a file, not a folder", loads=("stabletune.analysis.plots:plot_bias_ratio",)),
    Case("plot-out-uncreatable", lambda c: ["plot", "bias-ratio", "--out", "/proc/stabletune-nope.png"],
         "cannot create /proc/stabletune-nope.png", loads=("stabletune.analysis.plots:plot_bias_ratio",)),
    # --- user data ---------------------------------------------------------------------------------
    Case("csv-label-nan", lambda c: c.user_train(["good one,pos", "bad one,NaN", "x,neg"]),
         "dev.csv, line 3: label 'NaN' in column 'label' marks a missing value", after=_absent("run")),
    Case("csv-label-empty", lambda c: c.user_train(["good one,pos", "bad one,", "x,neg"]),
         "dev.csv, line 3: empty value in column 'label' (a missing label is not a class)", after=_absent("run")),
    Case("csv-train-label-nan", lambda c: c.user_train(["a,pos", "b,neg"], ["a,pos", "b,neg", "c,nan"]),
         "train.csv, line 4: label 'nan'", after=_absent("run")),
    Case("csv-repeated-header", lambda c: (c.user_train(["a,pos", "b,neg"]),
                                           c.file("train.csv", "sentence,label,sentence\na,pos,b\nc,neg,d\n"))[0],
         "train.csv, line 1: column name(s) 'sentence' appear more than once", after=_absent("run")),
    Case("dev-of-2-rows-halved", lambda c: c.user_train(["good one,pos", "bad one,neg"]),
         "dev.csv has only 2 example(s)", outcome="warn"),
    # --- wording ------------------------------------------------------------------------------------
    Case("report-prefix-not-doubled", lambda c: ["report"], "give exactly one source: a study YAML file, --from-csv",
         also_not="stabletune report:"),
    # --- imported task names become file names: the study-file rule holds for them too (path traversal) -------
    Case("report-csv-task-escapes-the-folder", lambda c: [
        "report", "--from-csv", str(c.file("t.csv", _seed_grid_csv("x/../../../../elsewhere/PWNED"))),
        "--init-seed-col", "init", "--data-seed-col", "data", "--out", str(c.tmp / "trep")],
         "t.csv: row 2: task name 'x/../../../../elsewhere/PWNED' must be a word of letters",
         after=lambda c: (_absent("trep", "elsewhere")(c), _nothing_outside(c))),
    Case("report-csv-task-with-slash", lambda c: [
        "report", "--from-csv", str(c.file("s.csv", "method,task,seed,metric,value\na,a/b,0,test_acc,0.5\n"
                                                 "a,a/b,1,test_acc,0.6\n")), "--out", str(c.tmp / "srep")],
         "s.csv: row 2: task name 'a/b'", after=_absent("srep")),
    Case("report-export-task-escapes-the-folder", lambda c: [
        "report", "--from-export", str(_export_with_task(c, "../../x")), "--out", str(c.tmp / "erep")],
         "task name '../../x' must be", after=_absent("erep")),
    Case("csv-row-counted-as-file-line", lambda c: [
        "report", "--from-csv", str(c.file("v.csv", "method,task,seed,metric,value\na,rte,0,test_acc,abc\n")),
        "--out", str(c.tmp / "vrep")],
         "v.csv: row 2: value 'abc' is not a number", also_not="row 0", after=_absent("vrep")),
]


def _seed_grid_csv(task: str) -> str:
    """Results of a 3 x 3 init-seed x data-seed grid for two methods: enough for the report's seed-grid figure,
    whose file name carries the task name."""
    rows = ["method,task,seed,init,data,metric,value"]
    rows += [f"{m},{task},{i},{i % 3},{i // 3},{split}_acc,0.{i + 3}{j}"
             for j, m in enumerate("ab") for i in range(9) for split in ("val", "test")]
    return "\n".join(rows) + "\n"


def _planned_only(ctx: Ctx) -> Path:
    """The study of ``ctx.study`` with its runs planned in the database and none run (a driver stopped before
    its first run ended)."""
    from stabletune.study import load_study
    from stabletune.study.store import Store
    from stabletune.study.tuning import Planner

    folder = ctx.tmp / "st"
    folder.mkdir(exist_ok=True)
    path = folder / "bi.yaml"
    path.write_text(STUDY)
    spec = load_study(path)
    store = Store.open(spec.default_db, create=True)
    store.save_spec(spec.name, spec.text, str(path))
    store.add_planned(Planner(spec).plan(None).runs)
    store.close()
    return path


def _nothing_outside(ctx: Ctx) -> None:
    """Nothing was written above the test's folder (where the traversal aimed)."""
    assert not list(ctx.tmp.parent.glob("**/PWNED*")), "a file was written outside --out"


def _export_with_task(ctx: Ctx, task: str) -> Path:
    """A tables export of the finished fake study whose task names were edited to ``task`` in every table."""
    import pandas as pd

    export = ctx.tmp / "exp"
    assert main(["study", "export", str(ctx.study()), "--format", "tables", "--out", str(export)]) == 0
    for csv in export.glob("*.csv"):
        frame = pd.read_csv(csv)
        if "task" in frame.columns:
            frame["task"] = task
            frame.to_csv(csv, index=False)
    return export


def _same(folder: Path, names: list[str], text: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == names and (folder / names[0]).read_text() == text


@pytest.fixture
def ctx(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default outputs (reports/...) land here
    (tmp_path / "glue").mkdir()
    return Ctx(tmp_path, tiny_model)


def _forbid(monkeypatch, targets: tuple[str, ...]) -> None:
    import importlib

    for target in targets:
        module, attr = target.split(":")
        def called(*a, _t=target, **k):
            raise AssertionError(f"{_t} was called: the input should have been refused before it")
        monkeypatch.setattr(importlib.import_module(module), attr, called)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, monkeypatch, capsys, caplog):
    argv = case.argv(ctx)
    capsys.readouterr()
    _forbid(monkeypatch, case.loads)
    caplog.set_level("WARNING")
    try:
        code = main(argv)
    except SystemExit as e:  # argparse-level refusals
        code = e.code
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    if case.outcome == "warn":
        assert code == 0, err
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any(case.expect in w for w in warnings), warnings
    else:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1, (code, err)
        assert lines[0].startswith("stabletune: error: ") and case.expect in lines[0], lines[0]
        if case.also_not:
            assert case.also_not not in lines[0], lines[0]
    if case.after:
        case.after(ctx)


# ------------------------------------------------------------------------------------------------
# Outcomes that need a second step
# ------------------------------------------------------------------------------------------------
def test_report_overwrite_replaces_users_file_and_own_report_is_refreshed(ctx, capsys):
    study = ctx.study()
    mine = ctx.file("mine/report.md", "my own notes\n").parent
    assert main(["report", str(study), "--out", str(mine), "--n-boot", "10"]) == 2
    assert (mine / "report.md").read_text() == "my own notes\n"
    assert main(["report", str(study), "--out", str(mine), "--n-boot", "10", "--overwrite"]) == 0
    assert "stabletune report" in (mine / "report.md").read_text()
    # a report stabletune wrote is refreshed without --overwrite (rerunning a report is the normal case)
    assert main(["report", str(study), "--out", str(mine), "--n-boot", "10"]) == 0
    capsys.readouterr()


def test_missing_parents_that_are_created(ctx, capsys, monkeypatch):
    """The documented commands on a fresh clone: a report's default folder `reports/<name>` is made with its
    parents; an explicit --out folder whose parent exists is made; output files go into existing folders."""
    study = ctx.study()
    monkeypatch.chdir(ctx.tmp)
    assert main(["report", str(study), "--n-boot", "10"]) == 0
    assert (ctx.tmp / "reports/bi/report.md").is_file()
    assert main(["report", str(study), "--out", str(ctx.tmp / "rep2"), "--n-boot", "10"]) == 0
    assert (ctx.tmp / "rep2/report.md").is_file()
    assert main(["study", "export", str(study), "--out", str(ctx.tmp / "x.csv")]) == 0
    assert (ctx.tmp / "x.csv").is_file()
    assert main(["plot", "bias-ratio", "--out", str(ctx.tmp / "f.png")]) == 0
    assert (ctx.tmp / "f.png").is_file()
    capsys.readouterr()


def test_status_and_finished_run_leave_no_sidecar_files(ctx, capsys):
    """`study status` writes nothing: no -wal/-shm beside a database no driver is using, and no .lock after a run."""
    study = ctx.study()
    assert _sidecars(study.parent) == []
    assert main(["study", "status", str(study)]) == 0
    assert main(["study", "export", str(study)]) == 0
    assert _sidecars(study.parent) == []
    capsys.readouterr()


def test_study_lock_is_removed_and_still_exclusive(tmp_path, monkeypatch):
    import fcntl

    from stabletune.errors import UserError
    from stabletune.study import store
    from stabletune.study.store import StudyLock

    db = tmp_path / "x.db"
    with StudyLock(db):
        assert StudyLock.held(db)
        with pytest.raises(UserError, match="in use"):
            StudyLock(db).acquire()
    assert not Path(str(db) + ".lock").exists() and not StudyLock.held(db)
    # The race that removing the file opens: B opens the file, A releases (removes it, unlocks), B locks the
    # removed file. B must notice and lock the file at the path instead, or a third driver could run beside it.
    first = StudyLock(db).acquire()
    real_flock, calls = fcntl.flock, []

    def flock_after_release(fd, op):
        if op & fcntl.LOCK_EX:
            calls.append(fd)
            if len(calls) == 1:
                first.release()  # between B's open and B's lock
        return real_flock(fd, op)

    monkeypatch.setattr(store.fcntl, "flock", flock_after_release)
    second = StudyLock(db).acquire()
    monkeypatch.setattr(store.fcntl, "flock", real_flock)
    assert len(calls) == 2, "acquire() did not retry on the removed file"
    assert StudyLock.held(db)
    with pytest.raises(UserError, match="in use"):
        StudyLock(db).acquire()
    second.release()
    assert not StudyLock.held(db)


def test_encode_refuses_a_length_it_cannot_truncate_to_and_counts_truthfully(tiny_model):
    from transformers import AutoTokenizer

    from stabletune.data.batching import encode
    from stabletune.data.readers import Example

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    rows = [Example("a fairly long first sentence here", "and a second one that is long too", 0),
            Example("short", "pair", 1)]
    with pytest.raises(ValueError, match="max_length=2 cannot be reached"):
        encode(tok, rows, max_length=2, is_regression=False)
    enc = encode(tok, rows, max_length=5, is_regression=False)  # 3 special tokens + one of each text
    assert enc.num_truncated == 1 and max(enc.lengths) <= 5 and enc.lengths[1] == 5


# ---------------------------------------------------------------------------------- Trainer integration (issue 23)
@pytest.mark.parametrize("change, match", [
    (dict(args=None), r"^invalid args: expected transformers.TrainingArguments, got NoneType"),
    (dict(args={}), r"^invalid args: expected transformers.TrainingArguments, got dict"),
    (dict(seed=2**70), r"^invalid seed: 1180591620717411303424 \(an integer"),
    (dict(seed=-1), r"^invalid seed: -1"),
    (dict(seed="3"), r"^invalid seed: '3'"),
    (dict(pretrained_wd=float("inf")), r"^invalid pretrained_wd: inf"),
    (dict(llrd=float("nan")), r"^invalid llrd: nan"),
    (dict(model="bert"), r"^invalid model: expected a torch.nn.Module"),
], ids=["args-none", "args-dict", "seed-2**70", "seed-negative", "seed-str", "pretrained-wd-inf", "llrd-nan",
        "model-str"])
def test_prepare_for_trainer_names_the_bad_argument(make_tiny, change, match):
    pytest.importorskip("accelerate")
    from transformers import TrainingArguments

    from stabletune.integrations.hf import prepare_for_trainer

    model = make_tiny("bert", num_labels=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = {"model": model, "args": TrainingArguments(output_dir="unused", report_to="none", use_cpu=True),
              "reinit_layers": 1, **change}
    with pytest.raises(ValueError, match=match):
        prepare_for_trainer(kwargs.pop("model"), kwargs.pop("args"), **kwargs)
    assert all(v.equal(before[k]) for k, v in model.state_dict().items())  # refused before the model was touched


def test_prepare_for_trainer_refuses_a_model_prepared_twice(make_tiny):
    pytest.importorskip("accelerate")
    from transformers import TrainingArguments

    from stabletune.integrations.hf import prepare_for_trainer

    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    model = make_tiny("bert", num_labels=2)
    prepare_for_trainer(model, args, reinit_layers=1)
    with pytest.raises(ValueError, match="^invalid model: it was already prepared"):
        prepare_for_trainer(model, args, reinit_layers=1)

"""`stabletune study export --format tables` and `stabletune report --from-export`: a report regenerated without
the study database is the report made from it: byte for byte in one process; and every committed report under
docs/results/ is what its committed export regenerates on this machine, tables to 1e-12 relative and report.md to
its printed digits (issue 11; issue 23: floats from another machine's kernels are never compared bit for bit)."""

from __future__ import annotations

import filecmp
import json
import re
import shutil
from pathlib import Path

import pytest

from stabletune.cli import main
from stabletune.study import run_study
from tinymodel import glue_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"

STUDY = """
name: ex
data_dir: {glue}
base: {{model: {model}, train_size: 32, batch_size: 8, max_steps: 6, num_evals: 3, max_seq_length: 64,
        eval_batch_size: 64, lr: 1.0e-3, track_param_distance: true, threads: 1}}
methods:
  standard: {{}}
  reinit:
    reinit_layers: 1
    search: {{lr: [1.0e-3, 3.0e-3]}}
    search_seeds: 1
tasks: [rte]
seeds: 3
"""


def committed_exports(results: Path) -> list[Path]:
    """The study folders under ``results/`` (``<study>/`` or a group's ``<group>/<study>/``) that hold both a
    ``report.md`` and an ``export/`` (meta.json)."""
    if not results.is_dir():
        return []
    return sorted(p.parent for p in results.rglob("report.md") if (p.parent / "export" / "meta.json").is_file())


# Regenerating a committed report runs numpy/BLAS kernels that differ by CPU (AVX-512 vs AVX2 reductions sum in
# another order): the same report computed on another machine agrees to ~1e-15 relative, not bit for bit. Tables are
# compared as numbers to TABLE_RTOL (a thousand times float64 rounding, far below the 4 significant digits any
# finding is read at); report.md, which prints rounded numbers, is compared as text with each printed number allowed
# to move by one unit of its last printed digit (a value on a rounding boundary may round either way).
TABLE_RTOL = 1e-12
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _text_differs(a: str, b: str) -> bool:
    """Whether two printed lines differ beyond the last printed digit of their numbers."""
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return True
    for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b)):
        if x == y:
            continue
        mantissa = re.split("[eE]", x)[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        unit = 10.0 ** -decimals * (10.0 ** int(re.split("[eE]", x)[1]) if re.search("[eE]", x) else 1.0)
        if abs(float(x) - float(y)) > unit * (1 + 1e-9):
            return True
    return False


def _table_differs(a: Path, b: Path) -> str | None:
    """Why two CSV tables differ: columns, non-numeric cells exactly, numeric cells to TABLE_RTOL (None: equal)."""
    import numpy as np
    import pandas as pd

    x, y = pd.read_csv(a, keep_default_na=False), pd.read_csv(b, keep_default_na=False)
    if list(x.columns) != list(y.columns) or len(x) != len(y):
        return f"columns or rows {list(x.columns)} x {len(x)} vs {list(y.columns)} x {len(y)}"
    for col in x.columns:
        xs, ys = pd.to_numeric(x[col], errors="coerce"), pd.to_numeric(y[col], errors="coerce")
        text_x, text_y = x[col].astype(str).where(xs.isna()), y[col].astype(str).where(ys.isna())
        if not text_x.fillna("").equals(text_y.fillna("")):
            return f"column {col}: text cells differ"
        close = np.isclose(xs.to_numpy(float), ys.to_numpy(float), rtol=TABLE_RTOL, atol=0.0, equal_nan=True)
        if not close.all():
            i = int(np.flatnonzero(~close)[0])
            return f"column {col} row {i + 1}: {x[col].iloc[i]} vs {y[col].iloc[i]}"
    return None


def report_differences(expected: Path, actual: Path, *, figures: bool = False, exact: bool = True) -> list[str]:
    """What differs between two report folders: report.md, the set of tables and each table (and the figures'
    names, and bytes when ``figures``). ``exact``: byte for byte, for two reports made in one process; otherwise
    tables as numbers to TABLE_RTOL and report.md to its printed digits, for a report made on another machine."""
    out = []
    if (expected / "report.md").read_bytes() != (actual / "report.md").read_bytes():
        a = (expected / "report.md").read_text().splitlines()
        b = (actual / "report.md").read_text().splitlines()
        differs = [i for i, (x, y) in enumerate(zip(a, b)) if (x != y if exact else _text_differs(x, y))]
        if len(a) != len(b):
            differs.append(min(len(a), len(b)))
        if differs:
            first = differs[0]
            out.append(f"report.md differs from line {first + 1}: {a[first:first + 1]} vs {b[first:first + 1]}")
    for sub, pattern in (("tables", "*.csv"), ("figures", "*.png")):
        names_a = sorted(p.name for p in (expected / sub).glob(pattern))
        names_b = sorted(p.name for p in (actual / sub).glob(pattern))
        if names_a != names_b:
            out.append(f"{sub}: {names_a} vs {names_b}")
        elif sub == "tables" and not exact:
            out += [f"tables/{n}: {why}" for n in names_a
                    if (why := _table_differs(expected / sub / n, actual / sub / n))]
        elif sub == "tables" or figures:
            _, mismatch, errors = filecmp.cmpfiles(expected / sub, actual / sub, names_a, shallow=False)
            out += [f"{sub}/{n} differs" for n in mismatch + errors]
    return out


def test_report_from_export_equals_report_from_database(tiny_model, tmp_path, capsys):
    study = tmp_path / "ex.yaml"
    study.write_text(STUDY.format(glue=glue_dir(), model=tiny_model))
    outcome = run_study(study, backend="inline", progress=False)
    assert outcome.ok and outcome.counts["finished"] >= 8
    from_db, from_export, export = tmp_path / "from-db", tmp_path / "from-export", tmp_path / "export"
    options = ["--n-boot", "50"]
    assert main(["report", str(study), "--out", str(from_db), *options]) == 0
    assert main(["study", "export", str(study), "--format", "tables", "--out", str(export)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(export)

    # every frame the report reads is exported, and the search phase beside it
    meta = json.loads((export / "meta.json").read_text())
    assert set(meta["tables"]) == {"metrics", "train_loss", "evals", "param_distance", "runs", "predictions"}
    assert meta["format_version"] == 2  # the predictions table: readers of version 1 would refuse it
    # every run's best and last test predictions, one row each, as many examples as the run was tested on
    preds = meta["tables"]["predictions"]
    assert preds["rows"] == 2 * meta["meta"]["n_runs"]
    assert meta["meta"]["source"] == "ex.db" and meta["meta"]["study_file"] == "ex.yaml"
    assert meta["meta"]["phase"] == "final" and meta["meta"]["n_runs"] == 6
    assert meta["tables"]["metrics"]["columns"]["seed"] == "int64"
    search = json.loads((export / "search" / "meta.json").read_text())
    assert search["meta"]["phase"] == "search" and search["meta"]["n_runs"] == 2
    # each search candidate is its own method, not pooled into "reinit"
    import pandas as pd

    search_methods = set(pd.read_csv(export / "search" / "metrics.csv")["method"])
    assert search_methods == {"reinit lr=0.001", "reinit lr=0.003"}

    # no database: the study folder moves away, the export alone remains
    moved = tmp_path / "gone"
    moved.mkdir()
    for p in tmp_path.glob("ex.db*"):
        shutil.move(str(p), moved / p.name)
    study.rename(moved / study.name)
    assert main(["report", "--from-export", str(export), "--out", str(from_export), *options]) == 0
    assert report_differences(from_db, from_export, figures=True) == []
    md = (from_export / "report.md").read_text()
    assert "Results: `ex.db`, beside the study file `ex.yaml`." in md and str(tmp_path) not in md
    for section in ("Training loss", "Validation score during training", "L2 distance to the initial parameters",
                    "Agreement between seeds (per-example test predictions)"):
        assert f"## {section}" in md
    # the agreement table is computed from the exported predictions: one row per method, task and checkpoint
    agreement = pd.read_csv(from_export / "tables" / "agreement.csv")
    assert len(agreement) == 2 * len(set(pd.read_csv(export / "metrics.csv")["method"]))
    assert agreement["disagreement"].between(0, 1).all() and (agreement["n_runs"] >= 2).all()
    # a report of the search phase, from its own export folder
    assert main(["report", "--from-export", str(export / "search"), "--out", str(tmp_path / "search"),
                 *options]) == 0

    # the export is refreshed in place; a folder that is not an export is refused before the database is read
    (moved / "ex.yaml").rename(study)
    for p in moved.glob("ex.db*"):
        shutil.move(str(p), tmp_path / p.name)
    assert main(["study", "export", str(study), "--format", "tables", "--out", str(export)]) == 0
    assert main(["study", "export", str(study), "--format", "tables", "--out", str(from_db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid option --out:" in err and "not replacing it" in err
    assert main(["study", "export", str(study), "--format", "tables"]) == 0
    assert (tmp_path / "ex-export" / "metrics.csv").is_file()


@pytest.mark.parametrize("study_dir", committed_exports(RESULTS) or [None],
                         ids=[str(d.relative_to(RESULTS)) for d in committed_exports(RESULTS)]
                         or ["none-committed-yet"])
def test_committed_report_is_regenerated_from_its_export(study_dir, tmp_path):
    """docs/results/<study>/report.md and tables/ are what `stabletune report --from-export` makes of
    docs/results/<study>/export with the default options (as they were made: `--out docs/results/<study>`)."""
    if study_dir is None:  # nothing committed yet; test_committed_exports_are_found shows the search works
        assert committed_exports(RESULTS) == []
        return
    out = tmp_path / study_dir.name
    assert main(["report", "--from-export", str(study_dir / "export"), "--out", str(out)]) == 0
    assert report_differences(study_dir, out, exact=False) == [], (
        f"regenerate it: stabletune report --from-export {study_dir.relative_to(ROOT)}/export "
        f"--out {study_dir.relative_to(ROOT)}")


def test_committed_exports_are_found(tmp_path):
    for name, files in (("a", ("report.md", "export/meta.json")), ("b", ("report.md",)),
                        ("c", ("export/meta.json",)), ("d", ("report.md", "export/metrics.csv"))):
        for f in files:
            (tmp_path / name / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / f).write_text("x")
    assert committed_exports(tmp_path) == [tmp_path / "a"]
    assert committed_exports(tmp_path / "none") == []


def test_machine_tolerant_comparison_still_catches_real_changes(tmp_path):
    def folder(name, md, rows):
        (tmp_path / name / "tables").mkdir(parents=True)
        (tmp_path / name / "report.md").write_text(md)
        (tmp_path / name / "tables" / "t.csv").write_text("method,mean\n" + "".join(f"{m},{v!r}\n" for m, v in rows))
        return tmp_path / name

    base = folder("a", "adam 5.04 ± 3.31 (n=10)\n", [("adam", 0.09441471654796492)])
    other_cpu = folder("b", "adam 5.05 ± 3.31 (n=10)\n", [("adam", 0.09441471654796493)])  # last digit, 1 ulp
    assert report_differences(base, other_cpu, exact=False) == []
    assert report_differences(base, other_cpu) != []  # in one process the bytes must agree
    for name, md, rows in (("c", "adam 5.06 ± 3.31 (n=10)\n", [("adam", 0.09441471654796492)]),
                           ("d", "reinit 5.04 ± 3.31 (n=10)\n", [("adam", 0.09441471654796492)]),
                           ("e", "adam 5.04 ± 3.31 (n=10)\n", [("adam", 0.0944147166)]),
                           ("f", "adam 5.04 ± 3.31 (n=10)\n", [("reinit", 0.09441471654796492)]),
                           ("g", "adam 5.04 ± 3.31 (n=10)\nmore\n", [("adam", 0.09441471654796492)])):
        assert len(report_differences(base, folder(name, md, rows), exact=False)) == 1, name

"""Staged writers (stabletune.outputs): a failed write leaves the earlier file as it was and no temporary file;
an OSError reaches the user as one line naming the path. The disk-full cases are made by a writer that writes
part of its output and then fails with ENOSPC, as a full disk does (measured on a 3 MB tmpfs too: docs/LOG.md)."""

from __future__ import annotations

import errno
from pathlib import Path

import pandas as pd
import pytest

from stabletune.outputs import WriteError, staged_file, staged_folder
from stabletune.cli import main
from test_bad_input import STUDY, fake_run


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_staged_file_replaces_only_when_complete(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("earlier")
    with staged_file(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.txt.partial-")
        tmp.write_text("new")
        assert target.read_text() == "earlier"  # not yet
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with pytest.raises(WriteError, match=r"cannot write .*out.txt: No space left on device; nothing was written"):
        with staged_file(target) as tmp:
            tmp.write_text("half")
            disk_full()
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with pytest.raises(ZeroDivisionError):  # any other error: no temporary file either, and it is not reworded
        with staged_file(target) as tmp:
            tmp.write_text("half")
            1 / 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_staged_folder_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "exp"
    target.mkdir()
    (target / "old.csv").write_text("old")
    with pytest.raises(WriteError, match="No space left"):
        with staged_folder(target) as stage:
            stage.mkdir()
            (stage / "new.csv").write_text("half")
            disk_full()
    assert [p.name for p in target.iterdir()] == ["old.csv"] and [p.name for p in tmp_path.iterdir()] == ["exp"]
    with staged_folder(target) as stage:
        stage.mkdir()
        (stage / "new.csv").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.csv"] and [p.name for p in tmp_path.iterdir()] == ["exp"]


@pytest.fixture
def study(tmp_path):
    from stabletune.study import run_study

    path = tmp_path / "bi.yaml"
    path.write_text(STUDY)
    run_study(path, backend="inline", run_fn=fake_run, progress=False)
    return path


def _one_line_exit_2(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _half_then_full(original):
    """A writer that writes part of its output, then meets a full disk."""
    def write(self, path, *args, **kwargs):
        Path(path).write_text("half,")
        disk_full()
    return write


def test_disk_full_export_csv_keeps_the_earlier_export(study, tmp_path, capsys, monkeypatch):
    out = tmp_path / "res.csv"
    assert main(["study", "export", str(study), "--out", str(out)]) == 0
    before = out.read_text()
    monkeypatch.setattr(pd.DataFrame, "to_csv", _half_then_full(pd.DataFrame.to_csv))
    err = _one_line_exit_2(["study", "export", str(study), "--out", str(out)], capsys)
    assert err == f"stabletune: error: cannot write {out}: No space left on device; nothing was written there"
    assert out.read_text() == before and not list(tmp_path.glob(".res.csv*"))


def test_disk_full_tables_export_and_report_leave_nothing(study, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pd.DataFrame, "to_csv", _half_then_full(pd.DataFrame.to_csv))
    err = _one_line_exit_2(["study", "export", str(study), "--format", "tables", "--out", str(tmp_path / "exp")],
                           capsys)
    assert "cannot write" in err and "exp: No space left on device" in err
    monkeypatch.undo()
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", _half_then_full(Figure.savefig))
    err = _one_line_exit_2(["report", str(study), "--out", str(tmp_path / "rep"), "--n-boot", "20"], capsys)
    assert err == (f"stabletune: error: cannot write {tmp_path / 'rep'}: No space left on device; nothing "
                   "was written there")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bi.db", "bi.yaml"]  # no export, no report folder


def test_disk_full_elsewhere_is_one_line(monkeypatch, capsys, study):
    """An OSError of a full disk that no staged writer catches (here: reading the study) is still one line."""
    import stabletune.study.results as results

    monkeypatch.setattr(results, "load_results", disk_full)
    err = _one_line_exit_2(["study", "export", str(study)], capsys)
    assert err == "stabletune: error: No space left on device"

"""Output paths, the one component for them: checked before the work starts, written staged.

Used by the command line, ``fit``, ``predict``, the report and the exports (nothing here knows option names
beyond the ``option`` a caller passes for its messages).

**Checks.** Checks of output paths given on the command line, made before any data, model or study results are read.

A run folder (``train --out runs/rte-s0``) and a report's default folder (``reports/<name>``) are created with
any missing parents. A file named on the command line (``study export --out``, ``plot --out``) and a report
folder named with ``--out`` must go into a folder that exists: a missing parent there is most likely a typo, and
a mistyped path should not silently become a new tree of folders. Beyond that, an output path fails when it
cannot be created: a parent is a file, the place is not writable, the file name is a folder. Found at the end of a run or a report, that wastes the work before it,
so each ``--out`` is checked here first. The checks leave nothing behind: whether something can be created in a
folder is tried by creating and removing a temporary folder there (permission bits alone do not say it: root
passes every ``os.access`` test, and ``/proc`` refuses even root).

**Staged writers.** One way to write an output: to a temporary name beside it, renamed into place when complete.

Every writer of a user-visible result (``predict``'s rows, ``study export``, the report, figures, the tables
export, ``fit``'s model folder) goes through :func:`staged_file` or :func:`staged_folder`, so that a full disk,
a read-only folder or a crash never leaves a half-written file under the final name, and an ``OSError`` reaches
the user as one line naming the path and the cause (:class:`WriteError`, exit 2), not as a traceback. An earlier
file or folder under the final name stays as it was until the new one is complete.

(Run folders are staged the same way by :class:`stabletune.engine.runlog.RunFolder`; the study database has its
own guarantees, one SQLite transaction per run.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from stabletune.errors import ConfigError, UserError


def _creatable(target: Path, option: str, *, inside: Path | None = None, parents: bool = True) -> None:
    """Raise ConfigError unless ``target`` can be created: in ``inside`` if given, else (with its missing parents
    when ``parents``) in the nearest folder above it that exists."""
    base = inside if inside is not None else target.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"invalid option {option}: cannot create {target}: {base} is a file, not a folder")
    if not parents and inside is None and base != target.parent:
        raise ConfigError(f"invalid option {option}: folder {target.parent} does not exist")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".stabletune-check-", dir=base))
    except OSError as e:
        raise ConfigError(f"invalid option {option}: cannot create {target} in {base} ({e.strerror})") from None


def check_out_folder(path: str | os.PathLike, *, option: str = "--out", overwrite: bool = False,
                     may_exist: bool = False, parents: bool = True) -> None:
    """An output folder, created (with any missing parents if ``parents``).

    Args:
        path: the folder.
        option: the option that named it (for messages).
        overwrite: an existing folder will be replaced (a run folder with ``--overwrite``).
        may_exist: an existing folder is written into (a report; the member folders of an ensemble).
        parents: missing folders above it are created; else its parent must exist.

    Raises:
        ConfigError: the path is a file, it exists (without ``overwrite``/``may_exist``), or it cannot be created.
    """
    out = Path(path)
    if out.exists():
        if not out.is_dir():  # said first: a file is not "an existing folder"
            raise ConfigError(f"invalid option {option}: {out} exists and is not a folder")
        if not (overwrite or may_exist):
            raise ConfigError(f"output folder {out} already exists (use --overwrite to replace it)")
        # a replaced run folder is staged beside it; a folder written into must take new entries
        _creatable(out, option, inside=out if may_exist else out.parent)
        return
    _creatable(out, option, parents=parents)


def check_out_file(path: str | os.PathLike, *, option: str = "--out", what: str = "file") -> None:
    """An output file in a folder that exists (an existing file is replaced).

    Raises:
        ConfigError: the path is a folder, its folder does not exist, or the file cannot be created there.
    """
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"invalid option {option}: {out} is a folder; give the name of the {what} to write")
    _creatable(out, option, parents=False)


# ------------------------------------------------------------------------------------------------
# Staged writers
# ------------------------------------------------------------------------------------------------
class WriteError(UserError):
    """An output could not be written (disk full, permissions, ...): the message names the path and the cause."""

    def __init__(self, path: str | os.PathLike, exc: OSError | WriteError):
        """``exc``: the OSError met; or the WriteError of a file inside ``path`` (said as ``path``'s)."""
        cause = exc.cause if isinstance(exc, WriteError) else (exc.strerror or str(exc) or type(exc).__name__)
        super().__init__(f"cannot write {path}: {cause}; nothing was written there")
        self.path, self.cause, self.errno = Path(path), cause, exc.errno


def _stage_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


@contextlib.contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path`` (atomically, one rename).

    On any error the temporary file is removed and ``path`` is left as it was; an ``OSError`` raised while
    writing or renaming becomes :class:`WriteError`. The parent folder must exist (output paths are checked
    before the work starts: the checks above).
    """
    final = Path(path)
    tmp = _stage_name(final, "partial")
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as exc:
        raise WriteError(final, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder name beside ``path`` (not created yet: the writer makes it) to fill; on success it
    replaces ``path`` whole (an earlier folder there is moved aside and removed only after the new one is in
    place). Errors as for :func:`staged_file`."""
    final = Path(path)
    stage, old = _stage_name(final, "partial"), _stage_name(final, "old")
    for d in (stage, old):
        shutil.rmtree(d, ignore_errors=True)
    try:
        yield stage
        if final.exists():
            os.replace(final, old)
        os.replace(stage, final)
    except OSError as exc:
        if old.exists() and not final.exists():  # the rename of the new folder failed: put the earlier one back
            os.replace(old, final)
        raise WriteError(final, exc) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["check_out_folder", "check_out_file", "WriteError", "staged_file", "staged_folder"]

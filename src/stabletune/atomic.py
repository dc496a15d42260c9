"""One way to write an output: to a temporary name beside it, renamed into place when complete.

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
from pathlib import Path
from typing import Iterator

from stabletune.errors import UserError


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
    before the work starts: :mod:`stabletune.cli.outputs`).
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


def write_failure(path: str | os.PathLike, exc: OSError) -> WriteError:
    """The one-line error for an ``OSError`` met while writing ``path`` by other means (a staged report)."""
    return WriteError(path, exc)


__all__ = ["WriteError", "staged_file", "staged_folder", "write_failure"]

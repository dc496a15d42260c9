"""Checks of output paths given on the command line, made before any data, model or study results are read.

Every subcommand creates the missing folders above its output (``--out reports/headline`` on a fresh clone,
``--out runs/rte-s0``), so an output path fails only when that cannot be done: a parent is a file, the place is
not writable, the file name is a folder. Found at the end of a run or a report, that wastes the work before it,
so each ``--out`` is checked here first. The checks leave nothing behind: whether something can be created in a
folder is tried by creating and removing a temporary folder there (permission bits alone do not say it: root
passes every ``os.access`` test, and ``/proc`` refuses even root).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from stabletune.errors import ConfigError


def _creatable(target: Path, option: str, *, inside: Path | None = None) -> None:
    """Raise ConfigError unless ``target`` can be created: in ``inside`` if given, else with its missing parents
    in the nearest folder above it that exists."""
    base = inside if inside is not None else target.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"invalid option {option}: cannot create {target}: {base} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".stabletune-check-", dir=base))
    except OSError as e:
        raise ConfigError(f"invalid option {option}: cannot create {target} in {base} ({e.strerror})") from None


def check_out_folder(path: str | os.PathLike, *, option: str = "--out", overwrite: bool = False,
                     may_exist: bool = False) -> None:
    """An output folder, created with any missing parents.

    Args:
        path: the folder.
        option: the option that named it (for messages).
        overwrite: an existing folder will be replaced (a run folder with ``--overwrite``).
        may_exist: an existing folder is written into (a report; the member folders of an ensemble).

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
    _creatable(out, option)


def check_out_file(path: str | os.PathLike, *, option: str = "--out", what: str = "file") -> None:
    """An output file, written with any missing folders above it (an existing file is replaced).

    Raises:
        ConfigError: the path is a folder, or the file cannot be created there.
    """
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"invalid option {option}: {out} is a folder; give the name of the {what} to write")
    _creatable(out, option)

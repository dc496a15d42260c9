"""Checks of output paths given on the command line, made before any data, model or study results are read.

A run folder (``train --out runs/rte-s0``) and a report's default folder (``reports/<name>``) are created with
any missing parents. A file named on the command line (``study export --out``, ``plot --out``) and a report
folder named with ``--out`` must go into a folder that exists: a missing parent there is most likely a typo, and
a mistyped path should not silently become a new tree of folders. Beyond that, an output path fails when it
cannot be created: a parent is a file, the place is not writable, the file name is a folder. Found at the end of a run or a report, that wastes the work before it,
so each ``--out`` is checked here first. The checks leave nothing behind: whether something can be created in a
folder is tried by creating and removing a temporary folder there (permission bits alone do not say it: root
passes every ``os.access`` test, and ``/proc`` refuses even root).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from stabletune.errors import ConfigError


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

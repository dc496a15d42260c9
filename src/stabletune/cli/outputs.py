"""Checks of output paths given on the command line, made before any data or model is loaded.

A run, an export or a report that can only fail at its very end (the folder cannot be created, the file name is
a folder) wastes the work before it, so every subcommand checks its ``--out`` here first. Each check writes
nothing that stays: whether a folder can be created in is tried by creating and removing a temporary folder
there (permission bits alone do not say it: root passes every ``os.access`` test, and ``/proc`` refuses even root).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from stabletune.errors import ConfigError


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _try_create_in(folder: Path, option: str, target: Path) -> None:
    """Raise ConfigError unless a folder can be created inside ``folder`` (tried, then removed)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".stabletune-check-", dir=folder))
    except OSError as e:
        raise ConfigError(f"invalid option {option}: cannot create {target} in {folder} ({e.strerror})") from None


def check_out_folder(path: str | os.PathLike, *, option: str = "--out", overwrite: bool = False,
                     may_exist: bool = False) -> None:
    """An output folder that will be created (with any missing parents).

    Args:
        path: the folder.
        option: the option that named it (for messages).
        overwrite: an existing folder may be replaced.
        may_exist: an existing folder is fine as it is (e.g. it will hold one folder per member).

    Raises:
        ConfigError: the path is a file, it exists (without ``overwrite``/``may_exist``), a parent is a file,
            or nothing can be created where it would go.
    """
    out = Path(path)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"invalid option {option}: {out} exists and is not a folder")
        if not (overwrite or may_exist):
            raise ConfigError(f"output folder {out} already exists (use --overwrite to replace it)")
        _try_create_in(out.parent if not may_exist else out, option, out)
        return
    base = _nearest_existing(out.parent)
    if not base.is_dir():
        raise ConfigError(f"invalid option {option}: cannot create {out}: {base} is a file, not a folder")
    _try_create_in(base, option, out)


def check_out_file(path: str | os.PathLike, *, option: str = "--out", what: str = "file") -> None:
    """An output file whose folder must already exist (an existing file there is replaced).

    Raises:
        ConfigError: the path is a folder, its folder is missing or is a file, or nothing can be written there.
    """
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"invalid option {option}: {out} is a folder; give the name of the {what} to write")
    parent = out.absolute().parent
    if not parent.exists():
        raise ConfigError(f"invalid option {option}: folder {out.parent} does not exist (create it first)")
    if not parent.is_dir():
        raise ConfigError(f"invalid option {option}: {out.parent} is a file, not a folder")
    _try_create_in(parent, option, out)


def check_new_folder_parent(path: str | os.PathLike, *, option: str = "--out") -> None:
    """An output folder given by the user: it may exist (as a folder); if not, its parent must exist.

    Raises:
        ConfigError: the path is a file, or its parent folder is missing or a file.
    """
    out = Path(path)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"invalid option {option}: {out} exists and is not a folder")
        _try_create_in(out, option, out)
        return
    parent = out.absolute().parent
    if not parent.exists():
        raise ConfigError(f"invalid option {option}: folder {out.parent} does not exist (create it first)")
    if not parent.is_dir():
        raise ConfigError(f"invalid option {option}: {out.parent} is a file, not a folder")
    _try_create_in(parent, option, out)

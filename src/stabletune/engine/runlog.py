"""The run folder: everything one run records, written so that a crash never leaves a half-written result.

The run is written into ``<out>.partial-<pid>/`` and renamed to ``<out>`` only when complete (``os.replace`` of a
directory is atomic on POSIX), so a folder named ``<out>`` always holds a finished run. Each file is itself written
to a temporary name and renamed.

Layout::

    config.json        resolved config, seeds, derived settings (steps, warm-up, task, model source)
    split.json         indices of train / validation / test in their source files
    train_log.jsonl    one line per update: step, loss, lr, grad_norm
    evals.jsonl        one line per evaluation: step, epoch, val metrics, val loss (+ param_distance)
    results.json       status, best and last checkpoint (step, val, test), timings, throughput, memory, versions
    model/             the best model in Hugging Face format (--save-model)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

from stabletune.errors import ConfigError


def json_safe(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None (a constant predictor's correlation is NaN; JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return json_safe(obj.item())
    return obj


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(json_safe(r)) + "\n")
    os.replace(tmp, path)


class RunFolder:
    """Stage files in a private folder; `commit()` renames it into place."""

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False):
        self.final = Path(out)
        if self.final.exists() and not self.final.is_dir():  # first: a file is not "an existing folder"
            raise ConfigError(f"output path {self.final} exists and is not a folder")
        if self.final.exists() and not overwrite:
            raise ConfigError(f"output folder {self.final} already exists (use --overwrite to replace it)")
        self.overwrite = overwrite
        self.path = self.final.with_name(f"{self.final.name}.partial-{os.getpid()}")

    def open(self) -> "RunFolder":
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        return self

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)

    def write_jsonl(self, name: str, rows: Iterable[dict]) -> None:
        write_jsonl(self.path / name, rows)

    def commit(self) -> Path:
        if self.final.exists():
            trash = self.final.with_name(f"{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, trash)
            os.replace(self.path, self.final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.path, self.final)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def staged(folders: list[RunFolder | None]) -> Iterator[None]:
    """Open every run folder's staging folder; if anything inside fails (or is interrupted), discard them all, so
    that no half-written run is ever left behind. Committing is the caller's last step inside the block."""
    for f in folders:
        if f:
            f.open()
    try:
        yield
    except BaseException:
        for f in folders:
            if f:
                f.discard()
        raise

"""TensorBoard scalars of a stabletune run (``--report-to tensorboard``), written with torch's ``SummaryWriter``.

Tags (x axis: the update number)::

    train/loss  train/lr  train/grad_norm         every update
    eval/<metric>  eval/loss                      every evaluation on the validation split
    param_distance/block_<i>                      every evaluation, with --track-param-distance (Figure 7;
                                                  i = Transformer block from the bottom, 00 first)

The logger is a run callback: it reads the run's :class:`~stabletune.engine.events.Event` s and never stops the
run. One folder is one TensorBoard run; event files already in it are removed first, so a re-run (a resumed study
redoing an interrupted run) replaces its curves instead of drawing a second, overlapping set.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator

from stabletune.engine.events import Callback, Event
from stabletune.errors import UserError


def _scalar(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None  # NaN (a constant predictor's correlation) is left out, not drawn


class TensorBoardLogger:
    """Write a run's events to ``log_dir`` as TensorBoard scalars. Call with each event; :meth:`close` at the end.

    Args:
        log_dir: the run's TensorBoard folder (created).
    """

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            raise UserError("--report-to tensorboard needs the tensorboard package: pip install tensorboard "
                            "(or pip install 'stabletune[report]')") from None
        self.log_dir = Path(log_dir)
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            for old in self.log_dir.glob("events.out.tfevents.*"):
                old.unlink()
        except OSError as e:
            raise UserError(f"cannot write TensorBoard logs to {self.log_dir}: {e.strerror or e}") from None
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def __call__(self, event: Event) -> bool:
        if event.kind == "step":
            self._add({"train/loss": event.loss, "train/lr": event.lr, "train/grad_norm": event.grad_norm},
                      event.step)
        elif event.kind == "eval":
            values = {f"eval/{k}": v for k, v in (event.val or {}).items()}
            values["eval/loss"] = event.val_loss
            # per Transformer block, bottom (0) to top
            values.update({f"param_distance/block_{k:02d}": v for k, v in enumerate(event.param_distance or [])})
            self._add(values, event.step)
            self.writer.flush()  # an evaluation is a natural point to make the curves visible
        return False  # logging never stops a run

    def _add(self, values: dict[str, Any], step: int) -> None:
        for tag, value in values.items():
            x = _scalar(value)
            if x is not None:
                self.writer.add_scalar(tag, x, step)

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def logged(members: list, callback: Callback | None) -> Iterator[Callback | None]:
    """``callback`` that also feeds each member's TensorBoard logger (``report_to: tensorboard``; its
    ``logging_dir``, default ``<its staged run folder>/tensorboard``); the loggers are closed on leaving, so that
    everything is written before the run folders move into place.

    Args:
        members: the run's :class:`stabletune.engine.setup.Member` s (config and staged folder of each).
        callback: the caller's callback (its answer, stop or not, is what the combined callback returns).
    """
    loggers: list[TensorBoardLogger | None] = []
    try:
        for m in members:
            on = m.cfg.report_to == "tensorboard"
            loggers.append(TensorBoardLogger(m.cfg.logging_dir if m.cfg.logging_dir is not None
                                             else m.folder.path / "tensorboard") if on else None)
        if not any(loggers):
            yield callback
            return

        def both(event: Event) -> Any:
            logger = loggers[event.member]
            if logger is not None:
                logger(event)
            return callback(event) if callback is not None else False

        yield both
    finally:
        for logger in loggers:
            if logger is not None:
                logger.close()


__all__ = ["TensorBoardLogger", "logged"]

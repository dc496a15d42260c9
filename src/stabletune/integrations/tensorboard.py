"""TensorBoard scalars of a stabletune run (``--report-to tensorboard``), written with torch's ``SummaryWriter``.

Tags (x axis: the update number)::

    train/loss  train/lr  train/grad_norm         every update
    eval/<metric>  eval/loss                      every evaluation on the validation split
    param_distance/block_<i>                      every evaluation, with --track-param-distance (Figure 7;
                                                  i = Transformer block from the bottom, 00 first)

The logger is a run callback: it reads the run's events and never stops the run. One folder is one TensorBoard
run; event files already in it are removed first, so a re-run (a resumed study redoing an interrupted run)
replaces its curves instead of drawing a second, overlapping set.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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

    def __call__(self, event: dict[str, Any]) -> bool:
        kind, step = event.get("event"), int(event["step"])
        if kind == "step":
            self._add({"train/loss": event.get("loss"), "train/lr": event.get("lr"),
                       "train/grad_norm": event.get("grad_norm")}, step)
        elif kind == "eval":
            values = {f"eval/{k}": v for k, v in (event.get("val") or {}).items()}
            values["eval/loss"] = event.get("val_loss")
            distance = event.get("param_distance") or []  # per Transformer block, bottom (0) to top
            items = distance.items() if isinstance(distance, dict) else enumerate(distance)
            values.update({f"param_distance/block_{k:02d}" if isinstance(k, int) else f"param_distance/{k}": v
                           for k, v in items})
            self._add(values, step)
            self.writer.flush()  # an evaluation is a natural point to make the curves visible
        return False  # logging never stops a run

    def _add(self, values: dict[str, Any], step: int) -> None:
        for tag, value in values.items():
            x = _scalar(value)
            if x is not None:
                self.writer.add_scalar(tag, x, step)

    def close(self) -> None:
        self.writer.close()


def with_logger(logger: TensorBoardLogger | None, callback):
    """A callback that feeds ``logger`` and then ``callback`` (whose answer, stop or not, it returns)."""
    if logger is None:
        return callback

    def both(event: dict[str, Any]) -> Any:
        logger(event)
        return callback(event) if callback is not None else False

    return both


__all__ = ["TensorBoardLogger", "with_logger"]

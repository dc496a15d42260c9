"""The one callback event of a run: every path (a single run, a vectorised ensemble, its sequential fall-back)
reports progress with the same :class:`Event`. Torch-free, so study drivers and fake runs can build it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal


@dataclass(frozen=True)
class Event:
    """One update (``kind="step"``) or one evaluation (``kind="eval"``) of one run.

    An ensemble of K members reports one event per living member (``member`` = its index; 0 for a single run).
    Returning True from the callback stops the run (every member; status "killed").
    """

    kind: Literal["step", "eval"]
    step: int
    """Updates done so far (1-based after the first update)."""
    total: int
    """Updates planned."""
    member: int = 0
    # --- step events ---
    loss: float | None = None
    """Training loss of this update's batch."""
    lr: float | None = None
    """Learning rate of the first parameter group used by this update (the head's, under LLRD)."""
    grad_norm: float | None = None
    """Gradient norm before clipping (None when clipping is off)."""
    width: int | None = None
    """Padded length of the batch as it was run (an ensemble pads all members' batches to one width)."""
    lengths: tuple[int, ...] = field(default=())
    """Real (unpadded) token count of each example in this member's batch."""
    # --- eval events ---
    val: dict[str, float] | None = None
    """Validation metrics."""
    val_loss: float | None = None
    score: float | None = None
    """The task's main validation metric (what the best checkpoint is chosen by)."""
    param_distance: list[float] | None = None
    """L2 distance of each block (bottom to top) to its start (``--track-param-distance``; Figure 7)."""


Callback = Callable[[Event], object]
"""Called with every :class:`Event`; a true return value stops the run (recorded as status "killed")."""

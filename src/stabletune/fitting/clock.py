"""The clock of fit's budget and search: one function, so that tests and the replay benchmark drive it (``monkeypatch.setattr(clock, "now", ...)``)."""

from __future__ import annotations

import time


def now() -> float:
    """Monotonic seconds."""
    return time.monotonic()

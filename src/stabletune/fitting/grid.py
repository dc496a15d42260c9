"""The search grid of ``fit``: recipes (:class:`Candidate`) and the space they are drawn from, adapted to the model's depth and width and to the data's size."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from stabletune.errors import UserError


LENGTH_LADDER = (200, 400, 800, 1600, 3200)
"""Section 6: numbers of updates tried beyond three epochs."""
LONGER_FACTOR = 1.5
"""A longer rung must be at least this many times three epochs (else it is hardly longer)."""


# ------------------------------------------------------------------------------------------------
# The grid
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Candidate:
    """One recipe: peak learning rate, re-initialised top blocks (``layers`` > 0 also re-initialises the
    pooler, Section 5) and number of updates."""

    lr: float
    layers: int
    updates: int

    @property
    def key(self) -> str:
        return f"lr={self.lr:g} L={self.layers} updates={self.updates}"

    @property
    def slug(self) -> str:
        return f"lr{self.lr:g}-L{self.layers}-u{self.updates}"

    def overrides(self) -> dict[str, Any]:
        return {"lr": self.lr, "reinit_layers": self.layers, "reinit_pooler": self.layers > 0,
                "max_steps": self.updates}

    def words(self) -> str:
        reinit = ("no re-initialisation" if self.layers == 0 else
                  f"the pooler and the top {self.layers} block{'s' if self.layers > 1 else ''} re-initialised")
        return f"peak learning rate {self.lr:g}, {reinit}, {self.updates} updates"


@dataclass(frozen=True)
class SearchSpace:
    """The levers fit searches. ``lrs``/``layers``/``updates`` ascending; anchors are the screen's fixed points."""

    lrs: tuple[float, ...]
    layers: tuple[int, ...]
    updates: tuple[int, ...]
    anchor_lr: float
    anchor_layers: int

    def __post_init__(self) -> None:
        if not self.lrs or not self.layers or not self.updates:
            raise ValueError("a search space needs at least one learning rate, L and number of updates")
        if self.anchor_lr not in self.lrs or self.anchor_layers not in self.layers:
            raise ValueError("the anchors must be values of the grid")
        if any(u <= 0 for u in self.updates) or any(v <= 0 for v in self.lrs) or any(v < 0 for v in self.layers):
            raise ValueError("learning rates and updates must be > 0, L >= 0")

    def grid(self) -> list[Candidate]:
        """Every cell (the exhaustive grid benchmarks/bench_fit.py compares with)."""
        return [Candidate(lr, n, u) for u in self.updates for lr in self.lrs for n in self.layers]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_grid(hidden: int) -> tuple[float, ...]:
    """Three peak learning rates by model width: small models need larger steps (MiniLM, hidden 384: 2e-5
    barely moves it in 96 updates, 1e-4 works, docs/LOG.md); BERT-Large (1024) is tuned around 2e-5 (Section 3)."""
    if hidden < 768:
        return (5e-5, 1e-4, 2e-4)
    if hidden < 1024:
        return (2e-5, 5e-5, 1e-4)
    return (1e-5, 2e-5, 5e-5)


def layer_grid(depth: int) -> tuple[int, ...]:
    """Re-initialised top blocks: 0 and about a sixth and a third of the depth (6 layers: 0, 1, 2; 12: 0, 2, 4;
    24: 0, 4, 8; the paper's best L for BERT-Large lies in that range, Section 5), below the full depth."""
    return tuple(sorted({n for n in (0, math.ceil(depth / 6), math.ceil(depth / 3)) if n < max(depth, 1)}))


def update_grid(n_train: int, batch_size: int) -> tuple[int, ...]:
    """Three epochs, then the next two of Section 6's ladder at least :data:`LONGER_FACTOR` x longer."""
    three = 3 * math.ceil(n_train / batch_size)
    longer = [u for u in LENGTH_LADDER if u >= LONGER_FACTOR * three][:2]
    return (three, *longer)


def search_space(*, depth: int, hidden: int, n_train: int, batch_size: int) -> SearchSpace:
    """The grid for a model of ``depth`` blocks and width ``hidden`` on ``n_train`` training examples."""
    lrs, layers = lr_grid(hidden), layer_grid(depth)
    anchor_layers = layers[1] if len(layers) > 1 else layers[0]
    return SearchSpace(lrs=lrs, layers=layers, updates=update_grid(n_train, batch_size),
                       anchor_lr=lrs[len(lrs) // 2], anchor_layers=anchor_layers)


def model_shape(model: str) -> tuple[int, int]:
    """``(depth, hidden)`` of a model from its config alone (no weights loaded)."""
    from transformers import AutoConfig

    from stabletune.model import _hub_error, resolve_model

    source = resolve_model(model)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise _hub_error(source, e) from None
    depth = next((getattr(config, a) for a in ("num_hidden_layers", "n_layer", "encoder_layers", "num_layers")
                  if isinstance(getattr(config, a, None), int)), None)
    hidden = next((getattr(config, a) for a in ("hidden_size", "d_model", "dim")
                   if isinstance(getattr(config, a, None), int)), None)
    if depth is None or hidden is None:
        raise UserError(f"model {model}: cannot tell its depth and width from its config ({config.model_type})")
    return depth, hidden

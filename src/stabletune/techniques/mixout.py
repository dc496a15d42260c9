"""Mixout (Lee et al., 2020), evaluated in Section 7.1 of the paper.

During training every wrapped ``nn.Linear`` uses, instead of its weight ``w``, the mixed weight::

    w_mixed = (M * w + (1 - M) * u - p * u) / (1 - p) = u + M * (w - u) / (1 - p),    M ~ Bernoulli(1 - p)

where ``u`` is the *target*: the weight at the time of wrapping (the pre-trained value, or the fresh draw for
re-initialised layers and the new head). Each masked-out entry is replaced by its target and the survivors are
rescaled so that E[w_mixed] = w. In evaluation mode the layer is the plain ``nn.Linear``. Gradients are the exact
derivative, ``dL/dw = M / (1 - p) * dL/dw_mixed`` (the official code's hand-written backward drops the 1/(1-p)
factor; under Adam a constant gradient scale is nearly invisible, but we keep the true gradient).

Mask granularity:

* ``"neuron"`` (default): one Bernoulli draw per *input neuron*, shared by all its outgoing weights (a column of
  the ``(out, in)`` weight). This is Lee et al.'s definition ("mixout(u) replaces all outgoing parameters from a
  randomly selected neuron") and what the official code does (it draws one mask row and repeats it).
* ``"element"``: one draw per weight entry ("mixconnect"; the paper's Section 7.1 summary, "each model parameter is
  replaced with its pre-trained value with probability p").

Biases are not mixed (as in the official code). The mask uses the global RNG, like dropout, so the training loop's
data seed controls it. When mixout is on, the official code sets every dropout probability to 0; so do we
(:func:`zero_dropout`), including Hugging Face's float ``*dropout`` attributes (BART).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from stabletune.errors import InvalidValue
from stabletune.techniques.families import get_layout

GRANULARITIES = ("neuron", "element")


def check_mixout(*, p: float, granularity: str) -> None:
    """Raise :class:`~stabletune.errors.InvalidValue` unless ``p`` is in [0, 1) and ``granularity`` is known."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise InvalidValue("p", f"must be in [0, 1), got {p!r}")
    if granularity not in GRANULARITIES:
        raise InvalidValue("granularity", f"{granularity!r}, choose from {', '.join(GRANULARITIES)}")


class MixoutLinear(nn.Linear):
    """An ``nn.Linear`` whose weight is mixed with a fixed target during training (see module docstring).

    It reuses the wrapped layer's ``weight`` and ``bias`` Parameter objects (same names, same optimizer entries,
    same ``state_dict`` keys); the target is a non-persistent buffer, so it follows ``.to()`` but is not saved.
    """

    def __init__(self, linear: nn.Linear, p: float, granularity: str = "neuron") -> None:
        nn.Module.__init__(self)
        check_mixout(p=p, granularity=granularity)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.register_buffer("target", linear.weight.detach().clone(), persistent=False)
        self.p = float(p)
        self.granularity = granularity
        self.train(linear.training)

    def mixed_weight(self) -> torch.Tensor:
        """One draw of ``w_mixed`` (uses the global RNG)."""
        delta = self.weight - self.target.to(self.weight.dtype)
        if self.granularity == "element":
            delta = F.dropout(delta, p=self.p, training=True)
        else:
            keep = torch.empty((1, self.in_features), dtype=delta.dtype, device=delta.device)
            keep.bernoulli_(1.0 - self.p)
            delta = delta * (keep / (1.0 - self.p))
        return self.target.to(self.weight.dtype) + delta

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return F.linear(input, self.weight, self.bias)
        return F.linear(input, self.mixed_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mixout={self.p}, granularity={self.granularity}"


def zero_dropout(model: nn.Module) -> list[str]:
    """Set every dropout probability in ``model`` to 0 (what the official code does when mixout is on).

    Covers ``nn.Dropout*`` modules and float module attributes whose name contains ``dropout`` (Hugging Face's
    BART keeps ``dropout``/``activation_dropout``/attention ``dropout`` as floats). BART's ``layerdrop`` is left
    alone. Returns the names of what was changed (``module`` or ``module.attr``), skipping those already 0.
    """
    changed: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            if module.p != 0:
                module.p = 0.0
                changed.append(name)
            continue
        for attr, value in list(vars(module).items()):
            if "dropout" in attr and isinstance(value, float) and not isinstance(value, bool) and value != 0:
                setattr(module, attr, 0.0)
                changed.append(f"{name}.{attr}" if name else attr)
    return changed


def _select(model: nn.Module, targets: str) -> list[str]:
    linears = [n for n, m in model.named_modules()
               if n and isinstance(m, nn.Linear) and not isinstance(m, MixoutLinear)]
    spec = (targets or "").strip()
    if spec == "all":
        chosen = linears
    elif spec == "encoder":
        layout = get_layout(model)
        chosen = [n for n in linears if layout.locate(n + ".weight")[0] in ("block", "embeddings")]
    else:
        subs = [s.strip() for s in spec.split(",") if s.strip()]
        if not subs:
            raise InvalidValue("targets", "give all, encoder, or a comma list of name parts")
        chosen = [n for n in linears if any(s in n for s in subs)]
    if not chosen:
        raise InvalidValue("targets", f"{targets!r} matches no nn.Linear layer of the model")
    return chosen


def apply_mixout(model: nn.Module, *, p: float, targets: str = "all", granularity: str = "neuron",
                 zero_dropout_modules: bool = True) -> list[str]:
    """Replace ``nn.Linear`` layers by :class:`MixoutLinear` whose target is their current weight (Section 7.1).

    Call it after loading and re-initialising: the targets are the weights at this moment.

    Args:
        model: any ``nn.Module`` (``targets="encoder"`` needs a supported family).
        p: mix probability in [0, 1); 0 returns the model untouched (bitwise no-op, dropout untouched).
        targets: ``"all"`` (every ``nn.Linear``, including pooler and classifier, like the official code),
            ``"encoder"`` (the embeddings and Transformer blocks only), or a comma-separated list of substrings
            of qualified module names (``"attention,intermediate"``).
        granularity: ``"neuron"`` (Lee et al. and the official code) or ``"element"``.
        zero_dropout_modules: also set every dropout probability to 0 (:func:`zero_dropout`).

    Returns:
        Qualified names of the wrapped layers.

    Raises:
        InvalidValue: ``p`` outside [0, 1), a bad granularity, or ``targets`` matching no layer.
    """
    check_mixout(p=p, granularity=granularity)
    if p == 0:
        return []
    chosen = _select(model, targets)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, MixoutLinear(getattr(parent, child), float(p), granularity))
    if zero_dropout_modules:
        zero_dropout(model)
    return chosen

r"""Adam with decoupled weight decay, with and without bias correction (Section 4, Algorithm 1).

One optimizer, :class:`AdamW`, with a ``correct_bias`` switch:

* ``correct_bias=True``: Algorithm 1 as written (debiased Adam), with decoupled weight decay. Step ``t``::

      theta <- theta * (1 - lr * wd)
      m <- beta1 m + (1 - beta1) g              v <- beta2 v + (1 - beta2) g^2
      theta <- theta - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

  This is exactly ``torch.optim.AdamW`` (same kernel, same state layout).
* ``correct_bias=False``: **BERTAdam**, lines 9-10 of Algorithm 1 skipped, ``m`` and ``v`` used directly::

      theta <- theta - lr * m / (sqrt(v) + eps)

  as ``transformers.AdamW(correct_bias=False)`` (before its removal in 4.50) and the original BERT optimizer.
  Weight decay is applied the same way as in the debiased mode (before the Adam update, torch's convention);
  ``transformers.AdamW`` applied it after the update, which differs by ``lr^2 * wd * update`` per step. The
  paper's recipe uses no weight decay.

Speed: the update runs in torch's fused multi-tensor kernel ``torch._fused_adamw_`` (what
``torch.optim.AdamW(fused=True)`` calls) when it supports the parameters' device and dtype. The kernel computes the
bias corrections ``1 - beta^t`` from the step count it is handed. BERTAdam reuses it exactly: we hand the kernel a
step count of ``2**100`` (the real step count stays in ``state["step"]``), for which ``beta^t`` underflows to
exactly 0, so both corrections are exactly 1 and the kernel computes the BERTAdam update with the given
``lr``, ``eps`` and ``weight_decay`` untouched. (Equivalently one could rescale at the true step ``t``:
with ``c1 = 1 - beta1^t`` and ``c2 = 1 - beta2^t``, calling the debiased kernel with ``lr' = lr c1 / sqrt(c2)``,
``eps' = eps / sqrt(c2)`` and ``wd' = wd sqrt(c2) / c1`` gives
``lr'/c1 * m / (sqrt(v)/sqrt(c2) + eps') = lr m / (sqrt(v) + eps)`` and ``lr' wd' = lr wd``; the saturated step
avoids the extra roundings of that rescaling.) Where the fused kernel is unavailable, a plain multi-tensor
(``torch._foreach_*``) implementation of the formulas above runs instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch.optim import Optimizer

from stabletune.errors import InvalidValue

OPTIMIZERS = ("adamw", "bertadam")
_SATURATED_STEP = 2.0**100  # beta**_SATURATED_STEP == 0.0 exactly for every beta in [0, 1) representable in float
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fused_available(device: torch.device, dtype: torch.dtype) -> bool:
    return (hasattr(torch, "_fused_adamw_") and dtype in _FUSED_DTYPES
            and device.type in ("cpu", "cuda", "xpu", "mps"))


class AdamW(Optimizer):
    """Adam with decoupled weight decay; ``correct_bias=False`` gives BERTAdam (see the module docstring).

    Args:
        params: parameters or parameter groups (groups may override every default, including ``correct_bias``).
        lr: learning rate alpha.
        betas: (beta1, beta2), each in [0, 1).
        eps: epsilon added to the denominator.
        weight_decay: decoupled weight decay lambda (``theta <- theta * (1 - lr * lambda)`` each step).
        correct_bias: True = debiased Adam (Algorithm 1), False = BERTAdam (lines 9-10 skipped).
        fused: True = always use the fused kernel (error if unavailable), False = never, None = when available.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, correct_bias: bool = True, *,
                 fused: bool | None = None) -> None:
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not eps > 0.0:
            raise ValueError(f"invalid eps {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        correct_bias=bool(correct_bias))
        super().__init__(params, defaults)
        self.fused = fused
        self._saturated: dict[torch.device, torch.Tensor] = {}
        self._fused_failed: set[tuple[torch.device, torch.dtype]] = set()

    def _saturated_steps(self, device: torch.device, n: int) -> list[torch.Tensor]:
        t = self._saturated.get(device)
        if t is None:
            t = self._saturated[device] = torch.tensor(_SATURATED_STEP, dtype=torch.float32, device=device)
        return [t] * n

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one update. Parameters without a gradient are skipped (their step count does not advance)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            buckets: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                lists = buckets.setdefault((p.device, p.dtype), [[], [], [], [], []])
                for lst, t in zip(lists, (p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"])):
                    lst.append(t)
            for (device, dtype), (params, grads, exp_avgs, exp_avg_sqs, steps) in buckets.items():
                torch._foreach_add_(steps, 1)
                use_fused = self.fused if self.fused is not None else (
                    _fused_available(device, dtype) and (device, dtype) not in self._fused_failed)
                if use_fused:
                    try:
                        self._fused_update(group, params, grads, exp_avgs, exp_avg_sqs, steps, device)
                        continue
                    except (RuntimeError, NotImplementedError):
                        if self.fused:  # explicitly requested: do not hide the failure
                            raise
                        self._fused_failed.add((device, dtype))  # the kernel rejects its inputs before any write
                _plain_update(group, params, grads, exp_avgs, exp_avg_sqs, steps)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state; step counters are kept as float32 tensors on their parameter's device (fused layout)."""
        super().load_state_dict(state_dict)
        for p, state in self.state.items():
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].to(dtype=torch.float32, device=p.device, copy=True)

    def _fused_update(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor],
                      exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor],
                      device: torch.device) -> None:
        beta1, beta2 = group["betas"]
        kernel_steps = steps if group["correct_bias"] else self._saturated_steps(device, len(params))
        torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], kernel_steps, lr=float(group["lr"]),
                            beta1=float(beta1), beta2=float(beta2), weight_decay=float(group["weight_decay"]),
                            eps=float(group["eps"]), amsgrad=False, maximize=False)


def _plain_update(group: dict, params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                  exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor]) -> None:
    """The formulas of the module docstring with multi-tensor (foreach) ops, in torch's foreach AdamW order."""
    lr, wd, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
    beta1, beta2 = group["betas"]
    if wd != 0:
        torch._foreach_mul_(params, 1 - lr * wd)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    if group["correct_bias"]:
        counts = [float(s) for s in steps]
        torch._foreach_div_(denom, [math.sqrt(1 - beta2**t) for t in counts])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, [-lr / (1 - beta1**t) for t in counts])
    else:  # BERTAdam: lines 9-10 of Algorithm 1 skipped
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, -lr)


def build_optimizer(param_groups: Iterable[Any], *, name: str, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8, weight_decay: float = 0.0, fused: bool | None = None) -> AdamW:
    """The optimizer of Section 4: ``"adamw"`` (debiased Adam) or ``"bertadam"`` (no bias correction).

    Args:
        param_groups: parameters or groups, typically from :func:`stabletune.techniques.llrd.build_param_groups` (groups
            carry their own ``lr`` and ``weight_decay``; ``lr``/``weight_decay`` here are only the defaults).
        name: ``"adamw"`` or ``"bertadam"``.
        lr, betas, eps, weight_decay: Adam hyperparameters (``--lr``, ``--adam-beta1/2``, ``--adam-eps``,
            ``--weight-decay``).
        fused: see :class:`AdamW`.

    Raises:
        InvalidValue: unknown name or an invalid hyperparameter (see :func:`check_hyperparameters`).
    """
    check_hyperparameters(name=name, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return AdamW(param_groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                 correct_bias=(name == "adamw"), fused=fused)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_hyperparameters(*, name: str, lr: float, betas: tuple[float, float], eps: float,
                          weight_decay: float) -> None:
    """Raise :class:`~stabletune.errors.InvalidValue` (naming the argument) for an unknown optimizer or a
    hyperparameter out of range: ``lr > 0``, each beta in [0, 1), ``eps > 0``, ``weight_decay >= 0``. The one
    check of these values below the config edge (:func:`stabletune.techniques.prepare` runs it before touching
    the model)."""
    if name not in OPTIMIZERS:
        raise InvalidValue("optimizer", f"{name!r}, choose from {', '.join(OPTIMIZERS)}")
    if not (_is_number(lr) and lr > 0):
        raise InvalidValue("lr", f"must be > 0, got {lr!r}")
    if not (len(betas) == 2 and all(_is_number(b) and 0.0 <= b < 1.0 for b in betas)):
        raise InvalidValue("betas", f"each must be in [0, 1), got {tuple(betas)!r}")
    if not (_is_number(eps) and eps > 0):
        raise InvalidValue("eps", f"must be > 0, got {eps!r}")
    if not (_is_number(weight_decay) and weight_decay >= 0):
        raise InvalidValue("weight_decay", f"must be >= 0, got {weight_decay!r}")

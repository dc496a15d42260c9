"""Weight decay toward the pre-trained weights ("pre-trained weight decay", Section 7.1).

Plain weight decay pulls parameters toward 0; pre-trained weight decay pulls them toward their values theta0 at the
start of fine-tuning. Right after every optimizer step, for each parameter in a decay group::

    theta <- theta - lr_group * lambda * (theta - theta0)

where ``lr_group`` is the group's *current* learning rate (after warm-up/decay scheduling and LLRD) and lambda is
``--pretrained-wd``. theta0 is snapshotted after re-initialisation, so re-initialised layers decay toward their
fresh draw. Biases and normalisation parameters (the groups with ``decay=False``) are exempt, as in the official
code, where the strength of each group was its ``weight_decay`` (0 for the no-decay group).

New parameters (the freshly initialised task head and every re-initialised parameter) follow
``--pretrained-wd-new-params``:

* ``init`` (default): decay toward their fresh initialisation, like every other parameter (what the official code
  does: its exclusion of the last group never triggers);
* ``zero``: plain decay toward 0, ``theta <- theta * (1 - lr_group * lambda)``;
* ``none``: not decayed by this term.

Differences from the official code: it applies the term *before* the optimizer step (we apply it after; the two
differ by O(lr^2) per step), and it reuses ``--weight_decay`` as lambda and silently sets the optimizer's plain
weight decay to 0. Here both work at the same time: ``--weight-decay`` is the optimizer's decoupled decay toward
0 and ``--pretrained-wd`` this decay toward theta0.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Callable

import torch

from stabletune.errors import InvalidValue

NEW_PARAM_MODES = ("init", "zero", "none")


def snapshot(named_params: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
             ) -> dict[str, torch.Tensor]:
    """Detached copies of parameters by name (theta0)."""
    items = named_params.items() if isinstance(named_params, Mapping) else named_params
    return {n: p.detach().clone() for n, p in items}


def check_prior_wd(*, strength: float, new_params: str) -> None:
    """Raise :class:`~stabletune.errors.InvalidValue` unless ``strength >= 0`` and ``new_params`` is a known mode."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
        raise InvalidValue("strength", f"must be >= 0, got {strength!r}")
    if new_params not in NEW_PARAM_MODES:
        raise InvalidValue("new_params", f"{new_params!r}, choose from {', '.join(NEW_PARAM_MODES)}")


def build_prior_wd(param_groups: list[dict] | torch.optim.Optimizer, named_params: Mapping[str, torch.Tensor],
                   reference: Mapping[str, torch.Tensor], *, strength: float,
                   new_param_names: Collection[str] = (), new_params: str = "init") -> Callable[[], None]:
    """The per-step pre-trained weight decay, as a callable to run right after ``optimizer.step()``.

    Args:
        param_groups: the optimizer (each call reads the current ``lr`` of its groups), or a list of groups.
            Pass the optimizer where anything may call its ``load_state_dict`` (accelerate does, in
            ``Trainer``): that replaces the group dicts, and a hook holding the old ones would keep applying
            the starting learning rate. Groups with ``decay`` False are exempt; groups without the key are
            decayed.
        named_params: name -> parameter for every parameter in the groups.
        reference: name -> theta0 (see :func:`snapshot`); needed for every decayed parameter decayed toward theta0.
        strength: lambda >= 0; 0 returns a no-op.
        new_param_names: names of new/re-initialised parameters.
        new_params: ``"init"``, ``"zero"`` or ``"none"`` (module docstring).

    Raises:
        InvalidValue: invalid strength or mode.
    """
    check_prior_wd(strength=strength, new_params=new_params)
    if strength == 0:
        return _noop
    name_of = {id(p): n for n, p in named_params.items()}
    new = set(new_param_names)
    optimizer = param_groups if isinstance(param_groups, torch.optim.Optimizer) else None
    groups_now = (lambda: optimizer.param_groups) if optimizer is not None else (lambda: param_groups)
    plan: list[tuple[int, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = []
    for index, group in enumerate(groups_now()):
        if not group.get("decay", True):
            continue
        toward_ref: list[torch.Tensor] = []
        refs: list[torch.Tensor] = []
        toward_zero: list[torch.Tensor] = []
        for p in group["params"]:
            name = name_of.get(id(p))
            if name is None:
                raise ValueError("build_prior_wd: a parameter of the optimizer is missing from named_params")
            mode = new_params if name in new else "init"
            if mode == "init":
                ref = reference[name]
                toward_ref.append(p)
                refs.append(ref)
            elif mode == "zero":
                toward_zero.append(p)
        if toward_ref or toward_zero:
            plan.append((index, toward_ref, refs, toward_zero))

    @torch.no_grad()
    def after_step() -> None:
        groups = groups_now()
        for index, toward_ref, refs, toward_zero in plan:
            a = float(groups[index]["lr"]) * strength
            if a == 0:
                continue
            if toward_ref:
                for i, (p, r) in enumerate(zip(toward_ref, refs)):
                    if r.device != p.device or r.dtype != p.dtype:  # the model was moved after prepare()
                        refs[i] = r.to(device=p.device, dtype=p.dtype)
                # theta + a * (theta0 - theta) == theta - a * (theta - theta0)
                torch._foreach_lerp_(toward_ref, refs, a)
            if toward_zero:
                torch._foreach_mul_(toward_zero, 1.0 - a)

    return after_step


def _noop() -> None:
    return None

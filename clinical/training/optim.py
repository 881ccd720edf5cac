"""AdamW parameter groups over the trainable layer groups, and a learning-rate schedule that survives rebuilds.

Each unfreeze rebuilds the optimizer (the set of trained parameters changed);
the Adam moments of the parameters that were already training carry over, so
unfreezing a group does not reset what the head has learned.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clinical.training.schedule import StagePlan

__all__ = ["StageLR", "build_optimizer", "no_decay"]


def no_decay(name: str, parameter: nn.Parameter) -> bool:
    """True for biases and norm weights (1-D tensors): decaying them toward 0 only hurts (timm's rule)."""
    return parameter.ndim <= 1 or name.endswith(".bias")


def build_optimizer(
    plan: StagePlan,
    model: nn.Module,
    *,
    weight_decay: float,
    previous: torch.optim.Optimizer | None = None,
) -> torch.optim.AdamW:
    """AdamW over the groups ``plan`` trains: two parameter groups per layer group (decay, no decay).

    Each parameter group carries ``name`` (the layer group), ``depth`` and ``base_lr``
    (the plan's ``lr × layer_decay ** depth``); :class:`StageLR` scales ``lr`` from ``base_lr``.
    The per-parameter state of ``previous`` (Adam moments and step) is kept for
    parameters that were already training.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    groups: list[dict[str, Any]] = []
    for depth, group in enumerate(plan.trainable):
        params = list(group.parameters())
        base_lr = plan.lrs[group.name]
        plain = [p for p in params if not no_decay(names.get(id(p), ""), p)]
        flat = [p for p in params if no_decay(names.get(id(p), ""), p)]
        for subset, decay in ((plain, weight_decay), (flat, 0.0)):
            if subset:
                groups.append({"params": subset, "name": group.name, "depth": depth,
                               "base_lr": base_lr, "lr": base_lr, "weight_decay": decay})
    optimizer = torch.optim.AdamW(groups)
    if previous is not None:
        for parameter, state in previous.state.items():
            if any(parameter is p for g in groups for p in g["params"]):
                optimizer.state[parameter] = state
    return optimizer


class StageLR:
    """Linear warm-up then cosine decay within each stage, per optimizer step.

    Written by hand because torch's schedulers bind to one optimizer instance,
    and the optimizer is rebuilt at every unfreeze; this one only holds numbers
    and writes ``lr = base_lr × factor`` into whichever optimizer it is given.

    Parameters
    ----------
    steps_per_epoch
        Optimizer steps in one epoch.
    warmup_epochs
        Warm-up length at the start of each stage (at most half the stage).
    """

    def __init__(self, steps_per_epoch: int, warmup_epochs: float) -> None:
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.warmup_epochs = warmup_epochs
        self.start = 0
        self.total = 1
        self.warmup = 0

    def start_stage(self, first_epoch: int, end_epoch: int) -> None:
        """A new stage runs from ``first_epoch`` up to (not including) ``end_epoch``."""
        self.start = first_epoch * self.steps_per_epoch
        self.total = max(1, (end_epoch - first_epoch) * self.steps_per_epoch)
        self.warmup = min(round(self.warmup_epochs * self.steps_per_epoch), self.total // 2)

    def factor(self, step: int) -> float:
        """Multiplier of ``base_lr`` at global optimizer step ``step`` (0-based)."""
        s = step - self.start
        if s < self.warmup:
            return (s + 1) / (self.warmup + 1)
        progress = min(1.0, (s - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        factor = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "total": self.total, "warmup": self.warmup}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start, self.total, self.warmup = int(state["start"]), int(state["total"]), int(state["warmup"])

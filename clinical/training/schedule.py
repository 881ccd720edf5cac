"""Progressive layer freezing and discriminative (layer-wise) learning rates over layer groups.

Groups come from ``model.layer_groups()`` ordered input → output (stem, stage1…N,
head). Depth counts from the output: the head is depth 0, the last stage depth 1,
and so on; a group's learning rate is ``lr × layer_decay ** depth`` (timm's
layer-wise decay), so the layers closest to the input, whose pretrained features
are the most general, move the least.

Schedules
---------
``linear-probe``
    Only the head ever trains.
``full``
    Every group trains from the first epoch (still with discriminative rates).
``progressive``
    Stage 0 trains the head only; each later stage unfreezes the next group from
    the top, every ``unfreeze_every`` epochs or after ``unfreeze_patience`` epochs
    without a better validation score, until all (or ``max_trainable``) groups train.

What trains in stage ``k`` is a pure function of the schedule's parameters,
:meth:`FreezeSchedule.plan`, returning a :class:`StagePlan`; the schedule's
only state is which stage it is in and the plateau counters. A federated round
asks for its stage's plan directly instead of replaying or editing that state.

Frozen groups keep their BatchNorm running statistics: their norm layers are
put in eval mode after every ``model.train()``, since the statistics of a few
hundred site images would otherwise overwrite those learned in pretraining
while the weights that rely on them stay fixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from clinical.errors import ConfigurationError
from clinical.models.groups import LayerGroup
from clinical.training.config import TrainConfig

__all__ = ["FreezeSchedule", "StagePlan"]


@dataclass(frozen=True)
class StagePlan:
    """What trains in one stage: the top groups, each at its own base learning rate; the rest are frozen.

    Attributes
    ----------
    stage
        The stage's index (0: the head alone in a progressive schedule).
    trainable
        The groups that train, top first; ``trainable[d]`` is at depth ``d`` (the head at 0).
    frozen
        The other groups, input → output.
    lrs
        Base learning rate of each trainable group, by name: ``lr × layer_decay ** depth``.
    """

    stage: int
    trainable: tuple[LayerGroup, ...]
    frozen: tuple[LayerGroup, ...]
    lrs: dict[str, float]

    def apply(self, model: nn.Module) -> None:
        """Set ``requires_grad`` per group and freeze the norm statistics of frozen groups.

        Call after every ``model.train()`` (which puts every norm layer back in training mode).
        """
        for group in self.frozen:
            for parameter in group.parameters():
                parameter.requires_grad_(False)
        for group in self.trainable:
            for parameter in group.parameters():
                parameter.requires_grad_(True)
        if model.training:
            for group in self.frozen:
                for module in group.modules:
                    for norm in module.modules():
                        if isinstance(norm, _NormBase):
                            norm.eval()


class FreezeSchedule:
    """Which groups train, at which learning rate, and when the next one unfreezes.

    Parameters
    ----------
    groups
        Layer groups ordered input → output; the last one is the head.
    mode
        ``"progressive"``, ``"full"`` or ``"linear-probe"``.
    lr
        Learning rate of the head.
    layer_decay
        Factor per depth step, in (0, 1].
    unfreeze_every, unfreeze_patience
        Progressive only: stage length in epochs, or epochs without progress (exactly one).
    max_trainable
        Progressive only: stop unfreezing once this many groups (head included) train.

    Raises
    ------
    ConfigurationError
        For an unknown mode, fewer than one group, or a progressive schedule
        without exactly one unfreezing rule.
    """

    def __init__(
        self,
        groups: Sequence[LayerGroup],
        *,
        mode: str,
        lr: float,
        layer_decay: float,
        unfreeze_every: int | None = None,
        unfreeze_patience: int | None = None,
        max_trainable: int | None = None,
    ) -> None:
        if mode not in ("progressive", "full", "linear-probe"):
            raise ConfigurationError(f"Unknown schedule {mode!r}; allowed: 'progressive', 'full', 'linear-probe'.")
        if not groups:
            raise ConfigurationError("The model has no layer groups; the schedule needs at least the head.")
        if mode == "progressive" and (unfreeze_every is None) == (unfreeze_patience is None):
            raise ConfigurationError(
                "A progressive schedule needs exactly one of unfreeze_every or unfreeze_patience; "
                f"got {unfreeze_every} and {unfreeze_patience}."
            )
        self.groups = list(groups)
        self.mode = mode
        self.lr = lr
        self.layer_decay = layer_decay
        self.unfreeze_every = unfreeze_every
        self.unfreeze_patience = unfreeze_patience
        self.max_trainable = min(max_trainable or len(self.groups), len(self.groups))
        self.stage = 0
        self.stage_start = 0
        self._stage_best = -math.inf
        self._stale = 0

    @classmethod
    def from_recipe(cls, groups: Sequence[LayerGroup], config: TrainConfig) -> FreezeSchedule:
        """The recipe's schedule over ``groups``: the one place its schedule fields become a schedule."""
        return cls(groups, mode=config.schedule, lr=config.lr, layer_decay=config.layer_decay,
                   unfreeze_every=config.unfreeze_every, unfreeze_patience=config.unfreeze_patience,
                   max_trainable=config.max_trainable_groups)

    # --- what trains -------------------------------------------------------------------------
    @property
    def n_stages(self) -> int:
        """Stages of the schedule: one per group a progressive schedule unfreezes, else one."""
        return self.max_trainable if self.mode == "progressive" else 1

    def plan(self, stage: int) -> StagePlan:
        """The groups and learning rates of ``stage`` (0-based), whatever stage the schedule is in now.

        A stage past the last is the last: once every group it may unfreeze trains, nothing changes.

        Raises
        ------
        ConfigurationError
            For a negative stage.
        """
        if stage < 0:
            raise ConfigurationError(f"Stages count from 0; got {stage}.")
        stage = min(stage, self.n_stages - 1)
        n_trainable = {"full": len(self.groups), "linear-probe": 1}.get(self.mode, 1 + stage)
        top = tuple(self.groups[::-1][:n_trainable])
        return StagePlan(
            stage=stage,
            trainable=top,
            frozen=tuple(self.groups[: len(self.groups) - n_trainable]),
            lrs={group.name: self.lr * self.layer_decay**depth for depth, group in enumerate(top)},
        )

    @property
    def current(self) -> StagePlan:
        """The plan of the stage the schedule is in."""
        return self.plan(self.stage)

    @property
    def final(self) -> bool:
        """True when no further group will unfreeze."""
        return self.stage >= self.n_stages - 1

    def apply(self, model: nn.Module) -> None:
        """Apply the current stage's plan (see :meth:`StagePlan.apply`)."""
        self.current.apply(model)

    # --- when the next group unfreezes --------------------------------------------------------
    def stage_end(self, epochs: int) -> int:
        """First epoch after the current stage as planned (the cosine of a stage ends there)."""
        if self.final or self.unfreeze_every is None:
            return epochs
        return min(self.stage_start + self.unfreeze_every, epochs)

    def end_epoch(self, epoch: int, score: float) -> bool:
        """Record the validation ``score`` of ``epoch`` (0-based); return True when a group unfroze."""
        if self.final:
            return False
        if self.unfreeze_every is not None:
            due = epoch + 1 - self.stage_start >= self.unfreeze_every
        else:
            if score > self._stage_best:
                self._stage_best, self._stale = score, 0
            else:
                self._stale += 1
            due = self._stale >= self.unfreeze_patience
        if due:
            self.stage += 1
            self.stage_start = epoch + 1
            self._stage_best, self._stale = -math.inf, 0
        return due

    def report(self) -> dict[str, Any]:
        """Stage, trainable and frozen group names and each trainable group's base lr."""
        plan = self.current
        return {
            "stage": plan.stage,
            "trainable_groups": [g.name for g in plan.trainable],
            "frozen_groups": [g.name for g in plan.frozen],
            "group_lrs": dict(plan.lrs),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "stage_start": self.stage_start,
            "stage_best": self._stage_best,
            "stale": self._stale,
            "groups": [g.name for g in self.groups],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a schedule saved by :meth:`state_dict` (then call :meth:`apply`).

        Raises
        ------
        ConfigurationError
            When the saved group names differ from this model's.
        """
        names = [g.name for g in self.groups]
        if state["groups"] != names:
            raise ConfigurationError(
                f"The checkpoint's layer groups {state['groups']} differ from the model's {names}."
            )
        self.stage = int(state["stage"])
        self.stage_start = int(state["stage_start"])
        self._stage_best = float(state["stage_best"])
        self._stale = int(state["stale"])

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

Frozen groups keep their BatchNorm running statistics: their norm layers are
put in eval mode after every ``model.train()``, since the statistics of a few
hundred site images would otherwise overwrite those learned in pretraining
while the weights that rely on them stay fixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from clinical.errors import ConfigurationError
from clinical.models.groups import LayerGroup

__all__ = ["FreezeSchedule"]


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
        self.n_trainable = len(self.groups) if mode == "full" else 1
        self.stage = 0
        self.stage_start = 0
        self._stage_best = -math.inf
        self._stale = 0

    # --- what trains -------------------------------------------------------------------------
    def depth(self, index: int) -> int:
        """Depth of group ``index`` (0 for the head)."""
        return len(self.groups) - 1 - index

    def group_lr(self, index: int) -> float:
        """``lr × layer_decay ** depth`` of group ``index``."""
        return self.lr * self.layer_decay ** self.depth(index)

    def trainable(self) -> list[tuple[int, LayerGroup]]:
        """``(index, group)`` of the groups that train now, top first."""
        first = len(self.groups) - self.n_trainable
        return [(i, self.groups[i]) for i in range(len(self.groups) - 1, first - 1, -1)]

    def frozen(self) -> list[LayerGroup]:
        return self.groups[: len(self.groups) - self.n_trainable]

    @property
    def final(self) -> bool:
        """True when no further group will unfreeze."""
        return self.mode != "progressive" or self.n_trainable >= self.max_trainable

    def apply(self, model: nn.Module) -> None:
        """Set ``requires_grad`` per group and freeze the norm statistics of frozen groups.

        Call after every ``model.train()`` (which puts every norm layer back in training mode).
        """
        frozen = self.frozen()
        for group in frozen:
            for parameter in group.parameters():
                parameter.requires_grad_(False)
        for _, group in self.trainable():
            for parameter in group.parameters():
                parameter.requires_grad_(True)
        if model.training:
            for group in frozen:
                for module in group.modules:
                    for norm in module.modules():
                        if isinstance(norm, _NormBase):
                            norm.eval()

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
            self.n_trainable += 1
            self.stage += 1
            self.stage_start = epoch + 1
            self._stage_best, self._stale = -math.inf, 0
        return due

    def report(self) -> dict[str, Any]:
        """Stage, trainable and frozen group names and each trainable group's base lr."""
        return {
            "stage": self.stage,
            "trainable_groups": [g.name for _, g in self.trainable()],
            "frozen_groups": [g.name for g in self.frozen()],
            "group_lrs": {g.name: self.group_lr(i) for i, g in self.trainable()},
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_trainable": self.n_trainable,
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
        self.n_trainable = int(state["n_trainable"])
        self.stage = int(state["stage"])
        self.stage_start = int(state["stage_start"])
        self._stage_best = float(state["stage_best"])
        self._stale = int(state["stale"])

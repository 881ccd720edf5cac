"""How the engine reports progress without knowing who listens (MLflow lives in ``clinical.tracking``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from clinical.training.config import TrainConfig
    from clinical.training.result import FitResult

__all__ = ["BaseCallback", "Callback"]


@runtime_checkable
class Callback(Protocol):
    """What the engine calls, on the main process only (rank 0 under DDP).

    ``on_fit_start(config, info)``
        Once, before the first epoch. ``info`` holds ``fold``, ``classes``,
        ``n_train``/``n_val``/``n_test`` items, ``groups`` (layer group names,
        input → output), ``device``, ``world_size``, ``cohort_digest``,
        ``out``, ``resumed_from_epoch`` (``None`` for a fresh run) and
        ``pretrained_keys_loaded`` (0 when training from scratch).
    ``on_epoch_end(epoch, metrics, state)``
        After each epoch's validation and checkpoint. ``metrics`` holds
        ``train_loss``, ``val_loss`` and ``val_<metric>`` at the monitored level
        (``val_auroc``, ...), ``lr/<group>`` for each training group,
        ``train_seconds``, ``train_items_per_second`` and ``epoch_seconds``;
        ``state`` holds ``stage``, ``trainable_groups``, ``frozen_groups``,
        ``group_lrs`` (base lr per training group), ``unfroze`` (a group
        unfreezes from the next epoch), ``improved``, ``best_epoch``,
        ``best_score`` and ``stop`` (early stopping fired).
    ``on_checkpoint(path, best)``
        After a checkpoint is written (``best`` when it is the new best model).
    ``on_fit_end(result)``
        Once, with the :class:`~clinical.training.result.FitResult`.
    """

    def on_fit_start(self, config: TrainConfig, info: dict[str, Any]) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None: ...

    def on_checkpoint(self, path: Path, best: bool) -> None: ...

    def on_fit_end(self, result: FitResult) -> None: ...


class BaseCallback:
    """A callback that does nothing: subclass it and override what you need."""

    def on_fit_start(self, config: TrainConfig, info: dict[str, Any]) -> None:
        return None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        return None

    def on_checkpoint(self, path: Path, best: bool) -> None:
        return None

    def on_fit_end(self, result: FitResult) -> None:
        return None

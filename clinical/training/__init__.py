"""Fine-tuning engine: freezing schedule, parameter groups, mixing, checkpoints, AMP, DDP.

``fit(config, manifest=..., cohort_dir=..., split=..., fold=..., out=...)``
trains one fold (``clinical.workflows.cross_validate`` runs the folds and pools them). Progress goes to objects
following the :class:`Callback` protocol (the MLflow one lives in
``clinical.tracking``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clinical.lazy import lazy_exports

#: Name → module it comes from, loaded on first use (:mod:`clinical.lazy`): the CLI builds its flags
#: from :class:`TrainConfig` without importing torch.
_SOURCES = {
    "BaseCallback": "clinical.training.callbacks",
    "Callback": "clinical.training.callbacks",
    "FitResult": "clinical.training.result",
    "FreezeSchedule": "clinical.training.schedule",
    "StageLR": "clinical.training.optim",
    "StagePlan": "clinical.training.schedule",
    "TrainConfig": "clinical.training.config",
    "TrainStep": "clinical.training.step",
    "build_mixer": "clinical.training.mixing",
    "build_optimizer": "clinical.training.optim",
    "fit": "clinical.training.engine",
    "load_checkpoint": "clinical.training.checkpoint",
    "load_config": "clinical.training.config",
    "load_result": "clinical.training.result",
    "no_decay": "clinical.training.optim",
    "predict": "clinical.training.inference",
    "summarize": "clinical.training.result",
}

if TYPE_CHECKING:
    from clinical.training.callbacks import BaseCallback, Callback
    from clinical.training.checkpoint import load_checkpoint
    from clinical.training.config import TrainConfig, load_config
    from clinical.training.engine import fit
    from clinical.training.inference import predict
    from clinical.training.mixing import build_mixer
    from clinical.training.optim import StageLR, build_optimizer, no_decay
    from clinical.training.result import FitResult, load_result, summarize
    from clinical.training.schedule import FreezeSchedule, StagePlan
    from clinical.training.step import TrainStep

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)

__all__ = [
    "BaseCallback",
    "Callback",
    "FitResult",
    "FreezeSchedule",
    "StageLR",
    "StagePlan",
    "TrainConfig",
    "TrainStep",
    "build_mixer",
    "build_optimizer",
    "fit",
    "load_checkpoint",
    "load_config",
    "load_result",
    "no_decay",
    "predict",
    "summarize",
]

"""Fine-tuning engine: freezing schedule, parameter groups, mixing, checkpoints, AMP, DDP.

``fit(config, manifest=..., cohort_dir=..., split=..., fold=..., out=...)``
trains one fold (``clinical.workflows.cross_validate`` runs the folds and pools them). Progress goes to objects
following the :class:`Callback` protocol (the MLflow one lives in
``clinical.tracking``).
"""

from __future__ import annotations

from clinical.training.callbacks import BaseCallback, Callback
from clinical.training.checkpoint import load_checkpoint
from clinical.training.config import TrainConfig, load_config
from clinical.training.engine import fit
from clinical.training.mixing import build_mixer
from clinical.training.optim import StageLR, build_optimizer, no_decay
from clinical.training.predict import predict
from clinical.training.result import FitResult, load_result, summarize
from clinical.training.schedule import FreezeSchedule, StagePlan
from clinical.training.step import TrainStep

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

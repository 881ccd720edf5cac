"""Self-supervised pretraining of backbones on unlabelled items (SimCLR, BYOL) and the linear probe judging them.

It lives with training: each batch is the fine-tuning engine's :class:`~clinical.training.TrainStep`,
and a run checkpoints every epoch and continues from its checkpoint when rerun.
"""

from __future__ import annotations

from clinical.training.pretraining.augment import TwoViews, contrastive_view
from clinical.training.pretraining.byol import BYOL
from clinical.training.pretraining.loop import train_views
from clinical.training.pretraining.pretrain import METHODS, PretrainResult, checkpoint_path, pretrain
from clinical.training.pretraining.probe import linear_probe
from clinical.training.pretraining.simclr import SimCLR, nt_xent_loss

__all__ = [
    "BYOL",
    "METHODS",
    "PretrainResult",
    "SimCLR",
    "TwoViews",
    "checkpoint_path",
    "contrastive_view",
    "linear_probe",
    "nt_xent_loss",
    "pretrain",
    "train_views",
]

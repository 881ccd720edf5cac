"""Self-supervised pretraining of backbones on unlabelled items (SimCLR, BYOL) and the linear probe judging them."""

from __future__ import annotations

from clinical.models.pretraining.augment import TwoViews, contrastive_view
from clinical.models.pretraining.byol import BYOL
from clinical.models.pretraining.loop import train_views
from clinical.models.pretraining.pretrain import METHODS, PretrainResult, pretrain
from clinical.models.pretraining.probe import linear_probe
from clinical.models.pretraining.simclr import SimCLR, nt_xent_loss

__all__ = [
    "BYOL",
    "METHODS",
    "PretrainResult",
    "SimCLR",
    "TwoViews",
    "contrastive_view",
    "linear_probe",
    "nt_xent_loss",
    "pretrain",
    "train_views",
]

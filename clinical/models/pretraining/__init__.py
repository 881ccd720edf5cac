"""Self-supervised pretraining of backbones on unlabelled items (SimCLR)."""

from __future__ import annotations

from clinical.models.pretraining.augment import TwoViews, contrastive_view
from clinical.models.pretraining.pretrain import METHODS, PretrainResult, pretrain
from clinical.models.pretraining.simclr import SimCLR, nt_xent_loss, train_simclr

__all__ = [
    "METHODS",
    "PretrainResult",
    "SimCLR",
    "TwoViews",
    "contrastive_view",
    "nt_xent_loss",
    "pretrain",
    "train_simclr",
]

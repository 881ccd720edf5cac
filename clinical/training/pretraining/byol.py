"""BYOL (Grill et al. 2020): a backbone learns by predicting a slowly moving copy of itself on another view.

It needs no negatives, so it learns from small batches, which suits cohorts of a
few hundred items and a CPU. The target network is an exponential moving
average of the online one; its momentum rises from ``base_momentum`` to 1 on a
cosine over training, as in the paper.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from clinical.errors import ConfigurationError
from clinical.models.classifier import ClassifierModel

__all__ = ["BYOL"]


def _mlp(features: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)
    )


class BYOL(nn.Module):
    """Online encoder + projector + predictor, and an EMA target encoder + projector.

    Parameters
    ----------
    encoder
        The model whose ``forward_features`` is trained (the online encoder); its head is not used.
    projection_dim, hidden_dim
        Sizes of the projector and predictor MLPs (``hidden_dim`` defaults to twice the feature size).
    base_momentum
        Target momentum at the start of training, in ``[0, 1)``.

    Raises
    ------
    ConfigurationError
        For a momentum outside ``[0, 1)``.
    """

    def __init__(
        self,
        encoder: ClassifierModel,
        *,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        base_momentum: float = 0.99,
    ) -> None:
        super().__init__()
        if not 0 <= base_momentum < 1:
            raise ConfigurationError(f"'base_momentum' must be in [0, 1); got {base_momentum!r}.")
        hidden = hidden_dim or 2 * encoder.num_features
        self.encoder = encoder
        self.projector = _mlp(encoder.num_features, hidden, projection_dim)
        self.predictor = _mlp(projection_dim, hidden, projection_dim)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.base_momentum = base_momentum

    def _online(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.encoder.forward_features(x)))

    @torch.no_grad()
    def _target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_encoder.forward_features(x))

    def loss(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """Symmetrised ``2 - 2 cos`` between each view's prediction and the other view's target projection."""
        p1, p2 = self._online(view1), self._online(view2)
        t1, t2 = self._target(view1), self._target(view2)
        cos = F.cosine_similarity(p1, t2, dim=1) + F.cosine_similarity(p2, t1, dim=1)
        return (2 - cos).mean() * 2

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """Move the target towards the online network; ``progress`` runs from 0 to 1 over training."""
        momentum = 1 - (1 - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2
        pairs = ((self.encoder, self.target_encoder), (self.projector, self.target_projector))
        for online, target in pairs:
            for o, t in zip(online.parameters(), target.parameters(), strict=True):
                t.lerp_(o, 1 - momentum)
            for o, t in zip(online.buffers(), target.buffers(), strict=True):
                t.copy_(o)

"""Attention-based multiple-instance learning over tile embeddings: one slide label, many tiles.

A whole slide carries one (weak) label while its finding lies in a few tiles. Ilse et al.'s attention
pooling (arXiv:1802.04712) learns which tiles matter: the slide's embedding is the attention-weighted
mean of its tile embeddings, and the weights themselves say where the model looked. Hand-written (a
dozen lines) rather than MONAI's ``MILModel(mil_mode="att")`` because that one has no padding mask, so
slides with different tile counts cannot share a batch, and its attention layer is 2048 wide whatever
the embedding: on cached embeddings a padded batch of every slide trains in seconds.
"""

from __future__ import annotations

import torch
from torch import nn

from clinical.errors import ConfigurationError

__all__ = ["AttentionMIL"]


class AttentionMIL(nn.Module):
    """Attention pooling of a bag of tile embeddings, then a linear head.

    Parameters
    ----------
    num_features
        Length of one tile embedding (the backbone's ``num_features``).
    num_classes
        Logits out of the head.
    hidden
        Width of the attention layer (128 in Ilse et al.).
    dropout
        Dropout on the tile embeddings while training.

    Raises
    ------
    ConfigurationError
        When ``num_features``, ``num_classes`` or ``hidden`` is not a positive integer.
    """

    def __init__(self, num_features: int, num_classes: int = 2, *, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        for name, value in (("num_features", num_features), ("num_classes", num_classes), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer; got {value!r}.")
        self.num_features = num_features
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Sequential(nn.Linear(num_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.head = nn.Linear(num_features, num_classes)

    def attention(self, bags: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The pooling weights ``[B, N]`` (each row sums to 1 over its real tiles).

        ``bags`` is ``[B, N, num_features]``; ``mask`` (``[B, N]`` bool, True for a real tile) marks
        padding when the bags of a batch have different lengths.
        """
        if bags.ndim != 3 or bags.shape[2] != self.num_features:
            raise ConfigurationError(
                f"AttentionMIL takes bags [B, N tiles, {self.num_features} features]; got shape {list(bags.shape)}."
            )
        scores = self.score(bags)[..., 0]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, bags: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Slide logits ``[B, num_classes]``."""
        bags = self.dropout(bags)
        pooled = torch.einsum("bn,bnf->bf", self.attention(bags, mask), bags)
        return self.head(pooled)

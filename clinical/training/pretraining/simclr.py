"""SimCLR (Chen et al. 2020): a backbone learns by recognising two views of one item among a batch.

The NT-Xent loss is written here (a dozen lines) rather than taken from a
metric-learning package, to keep the dependency list as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clinical.errors import ConfigurationError
from clinical.models.classifier import ClassifierModel

__all__ = ["SimCLR", "nt_xent_loss"]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.2) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy over a batch of view pairs.

    ``z1[i]`` and ``z2[i]`` (``[B, dim]``) are projections of two views of item ``i``; each of
    the ``2B`` projections must pick its partner among the other ``2B - 1`` by cosine similarity.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


class SimCLR(nn.Module):
    """A :class:`ClassifierModel` backbone and a two-layer projection head used only for the loss.

    Parameters
    ----------
    encoder
        The model whose ``forward_features`` is trained; its head is not used.
    projection_dim
        Output size of the projection head.
    temperature
        NT-Xent temperature; lower values weigh the hardest negatives more.

    Raises
    ------
    ConfigurationError
        For a non-positive temperature.
    """

    def __init__(self, encoder: ClassifierModel, *, projection_dim: int = 128, temperature: float = 0.2) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigurationError(f"'temperature' must be > 0; got {temperature!r}.")
        self.encoder = encoder
        self.temperature = temperature
        hidden = encoder.num_features
        self.projector = nn.Sequential(
            nn.Linear(hidden, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, projection_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder.forward_features(x))

    def loss(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """NT-Xent between the projections of the two views."""
        return nt_xent_loss(self(view1), self(view2), temperature=self.temperature)

    def after_step(self, progress: float) -> None:
        """Nothing to update outside the optimiser."""

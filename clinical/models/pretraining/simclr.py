"""SimCLR (Chen et al. 2020): a backbone learns by recognising two views of one item among a batch.

The NT-Xent loss is written here (a dozen lines) rather than taken from a
metric-learning package, to keep the dependency list as it is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from clinical.errors import ConfigurationError
from clinical.models.classifier import ClassifierModel

__all__ = ["SimCLR", "nt_xent_loss", "train_simclr"]

logger = logging.getLogger(__name__)


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
    """

    def __init__(self, encoder: ClassifierModel, *, projection_dim: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.num_features
        self.projector = nn.Sequential(
            nn.Linear(hidden, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, projection_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder.forward_features(x))


def train_simclr(
    encoder: ClassifierModel,
    loader: Iterable[dict[str, torch.Tensor]],
    *,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    temperature: float = 0.2,
    device: str | torch.device = "cpu",
    on_epoch_start: Callable[[int], None] | None = None,
) -> list[float]:
    """Train ``encoder`` in place with SimCLR; return the mean loss of each epoch.

    Parameters
    ----------
    encoder
        Model to pretrain; its head is left untouched.
    loader
        Batches with ``view1`` and ``view2`` tensors (see :class:`~clinical.models.pretraining.augment.TwoViews`).
    epochs
        Passes over the loader; AdamW with a cosine learning-rate schedule over all steps.
    on_epoch_start
        Called with the epoch index before each epoch (to seed the loader).

    Raises
    ------
    ConfigurationError
        For ``epochs < 1`` or a non-positive temperature, or when a batch holds fewer than two items.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigurationError(f"'epochs' must be a positive integer; got {epochs!r}.")
    if not temperature > 0:
        raise ConfigurationError(f"'temperature' must be > 0; got {temperature!r}.")
    model = SimCLR(encoder).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, len(loader)) if hasattr(loader, "__len__") else epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    losses = []
    with tqdm(total=steps, desc="SimCLR", unit="batch", disable=None) as bar:
        for epoch in range(epochs):
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            total, batches = 0.0, 0
            for batch in loader:
                view1, view2 = batch["view1"].to(device), batch["view2"].to(device)
                if view1.shape[0] < 2:
                    raise ConfigurationError("A SimCLR batch needs at least two items; lower batch_size or add data.")
                loss = nt_xent_loss(model(view1), model(view2), temperature=temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item()
                batches += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            losses.append(total / max(batches, 1))
            logger.info("SimCLR epoch %d/%d: loss %.4f", epoch + 1, epochs, losses[-1])
    encoder.eval()
    return losses

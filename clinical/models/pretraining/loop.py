"""The training loop every self-supervised method shares: two views in, a loss out, AdamW on a cosine."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from clinical.errors import ConfigurationError

__all__ = ["train_views"]

logger = logging.getLogger(__name__)


def train_views(
    method: nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    *,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    device: str | torch.device = "cpu",
    on_epoch_start: Callable[[int], None] | None = None,
) -> list[float]:
    """Train ``method`` in place; return the mean loss of each epoch.

    Parameters
    ----------
    method
        A module holding the encoder being pretrained and whatever heads its loss needs, with
        ``loss(view1, view2)`` and ``after_step(progress)`` (progress from 0 to 1), as
        :class:`~clinical.models.pretraining.SimCLR` and :class:`~clinical.models.pretraining.BYOL` have.
    loader
        Batches with ``view1`` and ``view2`` tensors (see :class:`~clinical.models.pretraining.augment.TwoViews`).
    epochs
        Passes over the loader; the learning rate follows a cosine over all steps.
    on_epoch_start
        Called with the epoch index before each epoch (to seed the loader).

    Raises
    ------
    ConfigurationError
        For ``epochs < 1``, or when a batch holds fewer than two items.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigurationError(f"'epochs' must be a positive integer; got {epochs!r}.")
    name = type(method).__name__
    method.to(device).train()
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, len(loader)) if hasattr(loader, "__len__") else epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    losses, step = [], 0
    with tqdm(total=steps, desc=name, unit="batch", disable=None) as bar:
        for epoch in range(epochs):
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            total, batches = 0.0, 0
            for batch in loader:
                view1, view2 = batch["view1"].to(device), batch["view2"].to(device)
                if view1.shape[0] < 2:
                    raise ConfigurationError(f"A {name} batch needs at least two items; lower batch_size or add data.")
                loss = method.loss(view1, view2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                method.after_step(min(step / steps, 1.0))
                total += loss.item()
                batches += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            losses.append(total / max(batches, 1))
            logger.info("%s epoch %d/%d: loss %.4f", name, epoch + 1, epochs, losses[-1])
    method.eval()
    return losses

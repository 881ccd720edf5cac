"""The training loop every self-supervised method shares: two views in, a loss out, AdamW on a cosine.

Each batch is one :class:`~clinical.training.TrainStep` (AMP, GradScaler and
device placement as in fine-tuning), with the method's ``loss(view1, view2)``
as the loss. Given a ``checkpoint`` path, the loop writes its whole state there
after every epoch and, when the file is already there, continues from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clinical.errors import ConfigurationError
from clinical.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from clinical.training.optim import StageLR
from clinical.training.step import TrainStep

__all__ = ["train_views"]

logger = logging.getLogger(__name__)


def train_views(
    method: nn.Module,
    loader: DataLoader,
    *,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    device: torch.device | str = "cpu",
    amp: str = "off",
    on_epoch_start: Callable[[int], None] | None = None,
    checkpoint: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
) -> list[float]:
    """Train ``method`` in place; return the mean loss of each epoch.

    Parameters
    ----------
    method
        A module holding the encoder being pretrained and whatever heads its loss needs, with
        ``loss(view1, view2)`` and ``after_step(progress)`` (progress from 0 to 1), as
        :class:`~clinical.training.pretraining.SimCLR` and :class:`~clinical.training.pretraining.BYOL` have.
    loader
        Batches with ``view1`` and ``view2`` tensors (see :class:`~clinical.training.pretraining.augment.TwoViews`).
    epochs
        Passes over the loader; the learning rate follows a cosine over all steps.
    amp
        ``"off"``, ``"bf16"`` or ``"fp16"`` (CUDA only), as in fine-tuning.
    on_epoch_start
        Called with the epoch index before each epoch (to seed the loader).
    checkpoint
        File written after every epoch: the method's state (encoder, heads, BYOL's EMA target),
        the optimizer, scaler and step count (which fixes the learning rate), the RNG states,
        the epoch and the losses so far. When it exists, training continues after its epoch and
        ends as the uninterrupted run would have.
    settings
        What the run was asked to do (plain data), stored in the checkpoint; a checkpoint made
        with other settings is refused rather than continued.

    Raises
    ------
    ConfigurationError
        For ``epochs < 1``, when a batch holds fewer than two items, or when ``checkpoint``
        was written by a run with other settings.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigurationError(f"'epochs' must be a positive integer; got {epochs!r}.")
    name = type(method).__name__
    device = torch.device(device)
    method.to(device).train()
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": trainable, "base_lr": lr}], lr=lr, weight_decay=weight_decay)
    schedule = StageLR(len(loader), warmup_epochs=0)
    schedule.start_stage(0, epochs)  # one cosine over every step, no warm-up
    step = TrainStep(optimizer, device=device, amp=amp, lr=schedule, keys=("view1", "view2"))
    steps = epochs * schedule.steps_per_epoch
    settings = dict(settings or {})
    losses: list[float] = []
    if checkpoint is not None and Path(checkpoint).is_file():
        losses = _resume(Path(checkpoint), method, step, loader, settings, device)
        logger.info("%s continues after epoch %d of %d from %s.", name, len(losses), epochs, Path(checkpoint).name)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return method.loss(batch["view1"], batch["view2"])

    with tqdm(total=steps, initial=step.steps, desc=name, unit="batch", disable=None) as bar:
        for epoch in range(len(losses), epochs):
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            total, batches = 0.0, 0
            for batch in loader:
                if batch["view1"].shape[0] < 2:
                    raise ConfigurationError(f"A {name} batch needs at least two items; lower batch_size or add data.")
                value = step(batch, loss)
                method.after_step(min(step.steps / steps, 1.0))
                total += value
                batches += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{value:.3f}")
            losses.append(total / max(batches, 1))
            logger.info("%s epoch %d/%d: loss %.4f", name, epoch + 1, epochs, losses[-1])
            if checkpoint is not None:
                save_checkpoint(Path(checkpoint), {
                    "settings": settings, "epoch": epoch, "losses": losses, "method": method.state_dict(),
                    "step": step.state_dict(), "rng": rng_state(loader.generator),
                })
    method.eval()
    return losses


def _resume(
    path: Path, method: nn.Module, step: TrainStep, loader: DataLoader, settings: dict[str, Any], device: torch.device
) -> list[float]:
    """Load ``path`` into the method, the step and the RNGs; return the losses of the epochs it holds."""
    payload = load_checkpoint(path, map_location=device)
    if payload.get("settings") != settings:
        saved = payload.get("settings") or {}
        changed = sorted(k for k in settings.keys() | saved.keys() if saved.get(k) != settings.get(k))
        raise ConfigurationError(
            f"{path.name} was written by a pretraining run with other settings (differing: {changed}); "
            "rerun with the same settings to continue it, or delete it to start afresh."
        )
    method.load_state_dict(payload["method"])
    step.load_state_dict(payload["step"])
    set_rng_state(payload["rng"], loader.generator)
    return [float(v) for v in payload["losses"]]

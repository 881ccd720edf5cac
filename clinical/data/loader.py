"""DataLoaders with reproducible shuffling, sampling and augmentation.

Every epoch's randomness is a function of ``(seed, epoch)``: the sampler's
generator is reseeded at the start of each epoch, and MONAI's
``worker_init_fn`` seeds each worker's transforms from the loader's generator.
Training stopped after epoch k and resumed therefore draws the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import ThreadDataLoader
from monai.data.utils import worker_init_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, WeightedRandomSampler

from clinical.data.dataset import UNLABELLED, ManifestDataset
from clinical.errors import ConfigurationError

__all__ = ["balanced_weights", "epoch_seed", "make_loader", "seed_epoch"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: distinct per epoch, the same on every run and every DDP rank."""
    return (seed * 1_000_003 + epoch) % 2**63


def balanced_weights(labels: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Per-item sampling weights ``1 / count(class)`` so each class is drawn equally often.

    Raises
    ------
    ConfigurationError
        When some item is unlabelled (it cannot be balanced).
    """
    labels = np.asarray(labels)
    if (labels == UNLABELLED).any():
        raise ConfigurationError("A balanced sampler needs every training item labelled; drop unlabelled rows first.")
    counts = np.bincount(labels)
    return torch.as_tensor(1.0 / counts[labels], dtype=torch.double)


def make_loader(
    dataset: ManifestDataset,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    balanced: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    world_size: int = 1,
    rank: int = 0,
) -> DataLoader:
    """A DataLoader for training (shuffled, or class-balanced) or evaluation (in order).

    Call :func:`seed_epoch` at the start of each training epoch. A dataset whose cached items live
    on the GPU (``dataset.on_device``) is batched in a background thread by MONAI's
    ``ThreadDataLoader``, in the same order and with the same augmentation as the plain loader.

    Raises
    ------
    ConfigurationError
        For a balanced sampler under DDP (use a class-weighted loss there).
    """
    generator = torch.Generator().manual_seed(epoch_seed(seed, 0))
    sampler: Sampler | None = None
    if world_size > 1:
        if balanced:
            raise ConfigurationError(
                "A balanced sampler is not available with several processes; use class_balance='weighted-loss'."
            )
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed,
                                     drop_last=False)
    elif train and balanced:
        sampler = WeightedRandomSampler(balanced_weights(dataset.labels), len(dataset), generator=generator)
    elif train:
        sampler = RandomSampler(dataset, generator=generator)
    # BatchNorm cannot train on one item: a last training batch of one is dropped (the item is drawn in other epochs).
    per_epoch = len(sampler) if sampler is not None else len(dataset)
    on_device = dataset.on_device
    if on_device and num_workers:
        raise ConfigurationError("Items on the device cannot cross into worker processes; use num_workers=0.")
    return (ThreadDataLoader if on_device else DataLoader)(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=train and per_epoch > 1 and per_epoch % batch_size == 1,
        num_workers=num_workers,
        pin_memory=pin_memory and not on_device,
        worker_init_fn=worker_init_fn if num_workers else None,
        generator=generator,
        persistent_workers=False,
    )


def seed_epoch(loader: DataLoader, *, seed: int, epoch: int) -> None:
    """Make one epoch's order and augmentation depend only on ``(seed, epoch)``."""
    value = epoch_seed(seed, epoch)
    loader.generator.manual_seed(value)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
        loader.dataset.set_random_state(value % 2**32 + loader.sampler.rank)
    elif loader.num_workers == 0:
        loader.dataset.set_random_state(value % 2**32)

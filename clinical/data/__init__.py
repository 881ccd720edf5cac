"""Torch datasets over a manifest and split, MONAI transform presets, caching."""

from __future__ import annotations

from clinical.data.cache import ByteCappedCache, split_deterministic
from clinical.data.dataset import UNLABELLED, ManifestDataset, class_names
from clinical.data.loader import balanced_weights, epoch_seed, make_loader, seed_epoch
from clinical.data.presets import DEFAULT_SIZES, preset, spatial_dims_of
from clinical.data.slices import independent_slices, slice_items

__all__ = [
    "DEFAULT_SIZES",
    "UNLABELLED",
    "ByteCappedCache",
    "ManifestDataset",
    "balanced_weights",
    "class_names",
    "epoch_seed",
    "independent_slices",
    "make_loader",
    "preset",
    "seed_epoch",
    "slice_items",
    "spatial_dims_of",
    "split_deterministic",
]

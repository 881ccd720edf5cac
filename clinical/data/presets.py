"""MONAI dictionary-transform presets, one per item kind, for training and evaluation.

Every preset starts with the same deterministic part (to float32 tensor,
resize to the target size, then the intensity: by default a per-image channel-wise
z-score; with ``intensity="ingest"`` the cohort's own fixed scale), which the dataset
caches; training presets add random augmentation chosen for what is
anatomically or physically sensible for the kind:

- ``image`` (radiographs, CT/PET slices): small rotation, scale and shift; **no flips**
  (the heart is on the left; laterality markers), intensity jitter, noise.
- ``volume`` (CT/MR/PET volumes, ``(C, D, H, W)``): small 3D rotation and scale,
  left–right flip (last axis), intensity jitter, noise.
- ``tile`` (whole-slide tissue tiles): flips on both axes and 90° rotations (tissue
  has no orientation), per-channel intensity jitter for stain variation, noise; with
  ``stain="hed"`` also H&E stain jitter in stain space (:class:`~clinical.data.stain.RandHEDJitterd`),
  before the z-score, since it acts on RGB as ingested (the dataset then caches only the resize).
- ``photo`` (papyri, fundus and other photographs): small rotation and scale,
  **no flips** (script characters are chiral), per-channel intensity jitter, noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    NormalizeIntensityd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ScaleIntensityRanged,
    ToDeviced,
)

from clinical.cohort.manifest import ITEM_KINDS
from clinical.data.stain import RandHEDJitterd
from clinical.errors import ConfigurationError
from clinical.ingest.intensity import CACHE_MAX

__all__ = ["DEFAULT_SIZES", "INTENSITIES", "STAIN_AUGMENTATIONS", "preset", "spatial_dims_of", "spatial_size"]

#: Stain augmentations a ``tile`` preset can add (``None``: the RGB intensity jitter only).
STAIN_AUGMENTATIONS = ("hed",)

#: How a preset sets intensities. ``per-image`` z-scores each item and channel on its own: contrast is
#: kept, the absolute scale is not. ``ingest`` keeps the scale ingest wrote (the uint16 cache back to
#: [0, 1]: a CT window's HU, PET as SUVbw / 20), the same in every item, so a value means the same
#: uptake or density everywhere, as quantitative PET needs; for images and volumes, whose cache it is.
INTENSITIES = ("per-image", "ingest")

KEY = "image"

#: Target spatial size per kind when none is given (pixels; voxels D, H, W for volumes).
DEFAULT_SIZES: dict[str, tuple[int, ...]] = {
    "image": (224, 224),
    "volume": (64, 128, 128),
    "tile": (224, 224),
    "photo": (224, 224),
}


def spatial_dims_of(kind: str) -> int:
    """2 for images, tiles and photos; 3 for volumes."""
    _check_kind(kind)
    return 3 if kind == "volume" else 2


def spatial_size(kind: str, size: int | Sequence[int] | None = None) -> tuple[int, ...]:
    """The target size of ``kind`` on every spatial axis, in pixels (voxels ``D, H, W`` for volumes).

    The one place a size is normalised: one value (an int or a one-element
    sequence, as ``--image-size 224`` gives) is used on every axis, ``None``
    gives ``DEFAULT_SIZES[kind]``, and a full size is checked and kept.

    Raises
    ------
    ConfigurationError
        For an unknown kind, or a size of the wrong length or sign.
    """
    dims = spatial_dims_of(kind)
    if size is None:
        return DEFAULT_SIZES[kind]
    values = tuple(int(s) for s in size) if isinstance(size, Sequence) else (int(size),)
    if len(values) == 1:
        values *= dims
    if len(values) != dims or min(values) <= 0:
        raise ConfigurationError(
            f"The target size must be one positive int or {dims} of them for {dims}D items; got {size!r}."
        )
    return values


def preset(
    kind: str, *, train: bool, size: int | Sequence[int] | None = None, device: torch.device | str | None = None,
    stain: str | None = None, intensity: str = "per-image",
) -> Compose:
    """The transform chain for one item kind.

    Parameters
    ----------
    kind
        One of ``clinical.cohort.manifest.ITEM_KINDS``.
    train
        Add random augmentation after the deterministic part.
    size
        Target spatial size in pixels (voxels for volumes), as :func:`spatial_size` reads it.
    device
        Move the image there at the end of the deterministic part, so the dataset's cache
        holds device tensors and the augmentation runs on the device (MONAI's ``ToDeviced``).
    stain
        ``"hed"``: H&E stain jitter while training (``tile`` only; see the module docstring).
    intensity
        One of :data:`INTENSITIES`.

    Raises
    ------
    ConfigurationError
        For an unknown kind, stain or intensity, a stain for another kind than ``tile``, ``ingest``
        intensities for tiles or photos, or a size of the wrong length or sign.
    """
    dims = spatial_dims_of(kind)
    size = spatial_size(kind, size)
    if stain is not None and (stain not in STAIN_AUGMENTATIONS or kind != "tile"):
        raise ConfigurationError(f"stain augmentation must be one of {list(STAIN_AUGMENTATIONS)} and is for "
                                 f"'tile' items only; got stain={stain!r} for kind {kind!r}.")
    if intensity not in INTENSITIES or (intensity == "ingest" and kind not in ("image", "volume")):
        raise ConfigurationError(f"intensity must be one of {list(INTENSITIES)}, and 'ingest' is for images and "
                                 f"volumes (their uint16 cache); got intensity={intensity!r} for kind {kind!r}.")
    steps = [
        EnsureTyped(keys=KEY, data_type="tensor", dtype=torch.float32),
        Resized(keys=KEY, spatial_size=size, mode="area" if dims == 2 else "trilinear"),
        *([RandHEDJitterd(keys=KEY, prob=0.8)] if train and stain == "hed" else []),
        (NormalizeIntensityd(keys=KEY, channel_wise=True) if intensity == "per-image" else
         ScaleIntensityRanged(keys=KEY, a_min=0.0, a_max=CACHE_MAX, b_min=0.0, b_max=1.0)),
        _plain_tensor(),
    ]
    if device is not None:
        steps.append(ToDeviced(keys=KEY, device=device))
    if train:
        steps += [*_augmentation(kind, size, intensity), _plain_tensor()]
    return Compose(steps)


def _plain_tensor() -> EnsureTyped:
    """Drop MONAI's metadata: batches of plain tensors collate and train faster."""
    return EnsureTyped(keys=KEY, data_type="tensor", dtype=torch.float32, track_meta=False)


def _augmentation(kind: str, size: tuple[int, ...], intensity: str) -> list:
    degrees = math.radians
    shift = tuple(0.05 * s for s in size)  # up to 5 % of the side, in pixels
    # on the fixed [0, 1] scale, additive jitter a tenth of the z-score's (0.2 SUV, 4 HU): calibration, not lesions
    additive = 0.1 if intensity == "per-image" else 0.01
    noise = RandGaussianNoised(keys=KEY, prob=0.3, std=additive / 2)
    if kind == "image":
        return [
            RandAffined(keys=KEY, prob=0.7, rotate_range=degrees(10), scale_range=0.1, translate_range=shift,
                        padding_mode="zeros"),
            RandScaleIntensityd(keys=KEY, factors=0.1, prob=0.5),
            RandShiftIntensityd(keys=KEY, offsets=additive, prob=0.5),
            noise,
        ]
    if kind == "volume":
        return [
            RandAffined(keys=KEY, prob=0.5, rotate_range=(degrees(10),) * 3, scale_range=(0.1,) * 3,
                        translate_range=shift, padding_mode="zeros"),
            RandFlipd(keys=KEY, prob=0.5, spatial_axis=2),
            RandScaleIntensityd(keys=KEY, factors=0.1, prob=0.5),
            RandShiftIntensityd(keys=KEY, offsets=additive, prob=0.5),
            noise,
        ]
    if kind == "tile":
        return [
            RandFlipd(keys=KEY, prob=0.5, spatial_axis=0),
            RandFlipd(keys=KEY, prob=0.5, spatial_axis=1),
            RandRotate90d(keys=KEY, prob=0.5, max_k=3),
            RandScaleIntensityd(keys=KEY, factors=0.15, prob=0.7, channel_wise=True),
            RandShiftIntensityd(keys=KEY, offsets=additive, prob=0.5),
            noise,
        ]
    return [  # photo
        RandAffined(keys=KEY, prob=0.7, rotate_range=degrees(5), scale_range=0.1, translate_range=shift,
                    padding_mode="border"),
        RandScaleIntensityd(keys=KEY, factors=0.15, prob=0.7, channel_wise=True),
        RandShiftIntensityd(keys=KEY, offsets=additive, prob=0.5),
        noise,
    ]


def _check_kind(kind: str) -> None:
    if kind not in ITEM_KINDS:
        raise ConfigurationError(f"Unknown item kind {kind!r}; allowed: {list(ITEM_KINDS)}.")

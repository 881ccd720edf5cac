"""Random views for contrastive pretraining, from MONAI array transforms (2D and 3D alike).

SimCLR learns what stays the same between two random views of one item, so the
views must differ in what should not matter: framing and scale (random resized
crop), left–right flip, intensity scale, shift and contrast, blur and noise.
Inputs are channel-first tensors already resized and z-scored (the deterministic
part of ``clinical.data.preset(kind, train=False)``), so the intensity changes
are additive and multiplicative on z-scores rather than clamped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.transforms import (
    Compose,
    EnsureType,
    RandAdjustContrast,
    RandFlip,
    RandGaussianNoise,
    RandGaussianSmooth,
    Randomizable,
    RandScaleIntensity,
    RandShiftIntensity,
    RandSpatialCrop,
    Resize,
)

__all__ = ["TwoViews", "contrastive_view"]


def contrastive_view(size: Sequence[int], *, min_crop: float = 0.4, flip: bool = True) -> Compose:
    """One random view of a ``(C, *size)`` tensor, with the same spatial size out.

    Parameters
    ----------
    size
        Spatial size of the input and of the view (``(H, W)`` or ``(D, H, W)``), in pixels/voxels.
    min_crop
        Smallest crop side as a fraction of the input side, before resizing back to ``size``.
    flip
        Flip along the last (left–right) axis with probability 0.5.
    """
    size = tuple(int(s) for s in size)
    steps = [
        RandSpatialCrop(roi_size=[max(1, math.ceil(min_crop * s)) for s in size], random_size=True),
        Resize(spatial_size=size, mode="bilinear" if len(size) == 2 else "trilinear"),
    ]
    if flip:
        steps.append(RandFlip(prob=0.5, spatial_axis=len(size) - 1))
    steps += [
        RandScaleIntensity(factors=0.3, prob=0.8),
        RandShiftIntensity(offsets=0.3, prob=0.8),
        RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)),
        RandGaussianSmooth(prob=0.5, sigma_x=(0.1, 1.0), sigma_y=(0.1, 1.0), sigma_z=(0.1, 1.0)),
        RandGaussianNoise(prob=0.5, std=0.1),
        EnsureType(data_type="tensor", track_meta=False),
    ]
    return Compose(steps)


class TwoViews(Randomizable):
    """Dictionary step: replace ``item[key]`` by two independent random views, ``view1`` and ``view2``.

    It is ``Randomizable``, so ``ManifestDataset`` caches everything before it and
    ``clinical.data.seed_epoch`` seeds it.
    """

    def __init__(self, view: Compose, *, key: str = "image") -> None:
        self.view = view
        self.key = key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> TwoViews:
        self.view.set_random_state(seed=seed, state=state)
        return self

    def randomize(self, data: Any) -> None:
        """Each view draws its own parameters when applied."""

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        image = item[self.key]
        out = {k: v for k, v in item.items() if k != self.key}
        out["view1"] = self.view(image)
        out["view2"] = self.view(image)
        return out

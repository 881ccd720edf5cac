"""Resampling cached arrays to a target spacing and/or size (``torch.nn.functional.interpolate``).

The new size is computed from the spacing (``round(size × spacing / target)``),
then one interpolation does the work for both options: ``area`` (averaging, so
no aliasing) when every axis shrinks, else (bi/tri)linear. This is what MONAI's
``Resize`` calls; it is called directly because importing ``monai.transforms``
costs each worker process ten times more than the whole of torch. The returned
spacing follows the new size. ``target_size`` applies to the last ``len(target_size)``
spatial axes (a 2-tuple resizes a volume's slices and keeps its depth); axes whose
spacing is unknown (NaN) keep their size under ``target_spacing``, whose
last values apply to a 2D image when three are given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from clinical.errors import ConfigurationError

__all__ = ["resample", "validate_target"]


def validate_target(name: str, value: Sequence[float] | None) -> tuple[float, ...] | None:
    """Check a ``target_spacing``/``target_size`` option: 1 to 3 positive numbers, or None.

    Raises
    ------
    ConfigurationError
        When the value is not 1–3 positive finite numbers.
    """
    if value is None:
        return None
    values = tuple(float(v) for v in value)
    if not 1 <= len(values) <= 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigurationError(f"{name} must be 1 to 3 positive numbers (e.g. (1.0, 1.0, 1.0)); got {list(value)}.")
    return values


def resample(
    array: np.ndarray,
    spacing: Sequence[float],
    *,
    target_spacing: Sequence[float] | None = None,
    target_size: Sequence[float] | None = None,
) -> tuple[np.ndarray, list[float]]:
    """Resample a channels-first array; return it (same dtype) with its new spacing.

    A single ``target_spacing`` or ``target_size`` value applies to every spatial axis.
    """
    spatial = list(array.shape[1:])
    size = list(spatial)
    if target_spacing is not None:
        targets = _broadcast(target_spacing, len(spatial))
        size = [
            max(1, round(n * s / t)) if math.isfinite(s) else n for n, s, t in zip(size, spacing, targets, strict=True)
        ]
    if target_size is not None:
        sizes = [int(v) for v in target_size]
        sizes = sizes * len(spatial) if len(sizes) == 1 else sizes[-len(spatial) :]
        size[len(spatial) - len(sizes) :] = sizes
    if size == spatial:
        return array, list(spacing)
    import torch
    from torch.nn.functional import interpolate

    shrinking = all(m <= n for m, n in zip(size, spatial, strict=True))
    mode = "area" if shrinking else ("bilinear" if len(spatial) == 2 else "trilinear")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    with torch.no_grad():
        resized = interpolate(tensor, size=size, mode=mode, **({} if shrinking else {"align_corners": False}))
    resized = resized[0].numpy()
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        resized = np.clip(np.round(resized), info.min, info.max)
    new_spacing = [s * n / m for s, n, m in zip(spacing, spatial, size, strict=True)]
    return resized.astype(array.dtype), new_spacing


def _broadcast(values: Sequence[float], count: int) -> list[float]:
    values = [float(v) for v in values]
    if len(values) == 1:
        return values * count
    if len(values) < count:
        raise ConfigurationError(
            f"target_spacing has {len(values)} values but the array has {count} spatial axes; give 1 or {count}."
        )
    return values[-count:]

"""Intensity scaling shared by the DICOM and NIfTI decoders, and the cache dtype of their arrays.

Images without a known window (MR, PT, NM, NIfTI, DICOM without Window
Center/Width) are scaled to [0, 1] between the 0.5 and 99.5 percentiles of the
whole image or volume. MONAI's ``ScaleIntensityRangePercentiles`` is not used:
when the two percentiles coincide (a mostly uniform image) it warns and returns
``img - a_min`` unclipped, and it lets NaN through, where this falls back to the
minimum and maximum of the finite values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CACHE_MAX", "PERCENTILES", "percentile_scale", "unit_interval_to_uint16"]

#: Lower and upper percentiles mapped to 0 and 1.
PERCENTILES = (0.5, 99.5)
#: The cached value of 1.0: images and volumes are stored as uint16 over [0, 1].
CACHE_MAX = 65535.0


def percentile_scale(arr: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] between the :data:`PERCENTILES` of the finite values (else their min/max; else zeros).

    Non-finite values are left out of the percentiles; the shape is kept.
    """
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.zeros_like(arr)
    low, high = np.percentile(finite, PERCENTILES)
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros_like(arr)
    return np.clip((arr - low) / (high - low), 0.0, 1.0)


def unit_interval_to_uint16(values: np.ndarray) -> np.ndarray:
    """[0, 1] float → uint16 (× :data:`CACHE_MAX`), the cache dtype of images and volumes."""
    return np.round(np.clip(values, 0.0, 1.0) * CACHE_MAX).astype(np.uint16)

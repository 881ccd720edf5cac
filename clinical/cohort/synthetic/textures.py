"""Random fields the phantoms are painted with: smooth noise and fibre-like streaks.

Hand-written because no library we depend on draws band-limited noise of a
given correlation length quickly at slide sizes; the trick is to filter a
small grid and interpolate it up.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["smooth_noise", "soft_ellipse", "streak_noise"]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise of correlation length ``sigma`` pixels, zero mean and unit SD (float32)."""
    factor = max(1, int(sigma // 3))
    small = tuple(max(2, -(-s // factor) + 2) for s in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma / factor, mode="wrap")
    if factor > 1:
        field = ndimage.zoom(field, factor, order=1, mode="nearest", grid_mode=True)
    field = field[tuple(slice(0, s) for s in shape)]
    return ((field - field.mean()) / (field.std() + 1e-6)).astype(np.float32)


def streak_noise(
    rng: np.random.Generator, shape: tuple[int, int], along: float, across: float, axis: int
) -> np.ndarray:
    """Noise stretched along ``axis`` (0 rows, 1 columns): correlation ``along`` px that way, ``across`` across it."""
    factor = max(1, int(across))
    small = tuple(-(-s // factor) + 2 for s in shape)
    sigma = (along / factor, across / factor) if axis == 0 else (across / factor, along / factor)
    field = rng.standard_normal(small).astype(np.float32)
    for ax, s in enumerate(sigma):
        field = ndimage.gaussian_filter1d(field, s, axis=ax, mode="wrap")
    if factor > 1:
        field = ndimage.zoom(field, factor, order=1, mode="nearest", grid_mode=True)
    field = field[: shape[0], : shape[1]]
    return ((field - field.mean()) / (field.std() + 1e-6)).astype(np.float32)


def soft_ellipse(
    u: np.ndarray, v: np.ndarray, centre: tuple[float, float], radii: tuple[float, float], edge: float
) -> np.ndarray:
    """1 inside the ellipse, 0 outside, with a logistic edge of width ``edge`` (in the units of ``u``, ``v``)."""
    r = np.sqrt(((u - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2)
    return (1.0 / (1.0 + np.exp(-np.clip((1.0 - r) / edge, -30, 30)))).astype(np.float32)

"""The cluster (patient) bootstrap as weight matrices, its one-class resamples, and percentile intervals.

Items of one patient (slices, tiles, images) are correlated; resampling items
as if independent gives intervals that are too narrow. A resample here draws
whole groups with replacement, and is returned as the multiplicity of every
row, so that any metric of :mod:`clinical.stats` scores all resamples at once.
Written by hand because :func:`scipy.stats.bootstrap` resamples observations
independently and calls the statistic per resample; for the same reason its
BCa interval would take its acceleration from a jackknife over rows, not over
patients, so :func:`bca_interval` takes the patient jackknife of
:func:`jackknife_chunks` instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.stats import norm

from clinical.stats._weights import weight_matrix

__all__ = [
    "bca_interval",
    "jackknife_chunks",
    "lost_class",
    "percentile_interval",
    "resample_chunks",
    "resample_weights",
]

#: Weight-matrix entries drawn at once by :func:`resample_chunks` (memory bound: a few arrays of this many float64).
CHUNK_ENTRIES = 2_000_000


def _group_index(groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Group labels (any dtype) as indices 0 … G-1 and G; already-dense indices map to themselves."""
    labels, index = np.unique(np.asarray(groups), return_inverse=True)
    return index.reshape(-1), len(labels)


def _multiplicities(index: np.ndarray, n_groups: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    flat = (draws + n_groups * np.arange(n_boot)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_boot * n_groups).reshape(n_boot, n_groups)
    return counts[:, index].astype(np.float64)


def resample_weights(groups: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicity of every row in ``n_boot`` cluster-bootstrap resamples.

    Each resample draws as many groups as there are, with replacement; a row
    counts as often as its group was drawn. Pass ``np.arange(N)`` as groups
    for the ordinary (independent rows) bootstrap.

    Parameters
    ----------
    groups
        Group (patient) of each row, shape (N,), any labels.
    n_boot
        Resamples.
    rng
        Source of the draws; the same state gives the same resamples.

    Returns
    -------
    numpy.ndarray
        Shape (n_boot, N), float64.
    """
    index, n_groups = _group_index(groups)
    return _multiplicities(index, n_groups, n_boot, rng)


def resample_chunks(
    groups: np.ndarray, n_boot: int, rng: np.random.Generator, *, max_entries: int = CHUNK_ENTRIES
) -> Iterator[np.ndarray]:
    """The weights of :func:`resample_weights` in chunks of at most ``max_entries`` entries (at least one resample)."""
    index, n_groups = _group_index(groups)
    chunk = max(1, max_entries // max(1, index.size))
    for start in range(0, n_boot, chunk):
        yield _multiplicities(index, n_groups, min(chunk, n_boot - start), rng)


def lost_class(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Resamples in which a class present in the data has zero weight (AUROC undefined): shape (B,) bool.

    Parameters
    ----------
    labels
        Class index per row, shape (N,), or one column per label of a
        multi-label task, shape (N, L), where each label's values count
        separately. Negative values (unknown) are ignored.
    weights
        ``(B, N)`` weights, as from :func:`resample_weights`.
    """
    labels = np.asarray(labels)
    columns = labels.reshape(labels.shape[0], -1)
    present = [column == value for column in columns.T for value in np.unique(column) if value >= 0]
    w = weight_matrix(weights, labels.shape[0])
    if not present:
        return np.zeros(w.shape[0], dtype=bool)
    return (w @ np.column_stack(present).astype(np.float64) == 0).any(axis=1)


def percentile_interval(values: np.ndarray, ci: float) -> tuple[float, float]:
    """The central ``ci`` percentile interval of bootstrap values, ignoring NaN (NaN when none is finite)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def jackknife_chunks(groups: np.ndarray, *, max_entries: int = CHUNK_ENTRIES) -> Iterator[np.ndarray]:
    """Leave-one-group-out weights: row ``g`` of the (G, N) matrix drops group ``g`` (0) and keeps the rest (1).

    Given in chunks of at most ``max_entries`` entries (at least one row), groups in sorted label order.
    """
    index, n_groups = _group_index(groups)
    chunk = max(1, max_entries // max(1, index.size))
    for start in range(0, n_groups, chunk):
        left_out = np.arange(start, min(n_groups, start + chunk))
        yield (index[None, :] != left_out[:, None]).astype(np.float64)


def bca_interval(values: np.ndarray, point: float, jackknife: np.ndarray, ci: float) -> tuple[float, float]:
    """Bias-corrected and accelerated (BCa) interval of Efron (1987) from bootstrap and jackknife values.

    Parameters
    ----------
    values
        The statistic on each bootstrap resample (NaN ignored).
    point
        The statistic on the data.
    jackknife
        The statistic with each group (patient) left out in turn (NaN ignored): its skewness gives the
        acceleration, ``a = sum(d**3) / (6 sum(d**2)**1.5)`` with ``d = mean - jackknife``.
    ci
        Coverage.

    Returns
    -------
    (low, high)
        The bootstrap quantiles at ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for ``z = Phi^-1(alpha)``, where
        ``z0`` is the normal quantile of the share of resamples below ``point`` (ties count one half). Where
        that is undefined (every resample on one side, or no jackknife spread), the percentile interval.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    jack = np.asarray(jackknife, dtype=np.float64)
    jack = jack[np.isfinite(jack)]
    if finite.size == 0 or not np.isfinite(point):
        return percentile_interval(finite, ci)
    below = (np.count_nonzero(finite < point) + 0.5 * np.count_nonzero(finite == point)) / finite.size
    d = jack.mean() - jack if jack.size > 1 else np.zeros(1)
    spread = float((d**2).sum())
    acceleration = float((d**3).sum()) / (6.0 * spread**1.5) if spread > 0 else 0.0
    alpha = (1.0 - ci) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z0 = norm.ppf(below)
        z = norm.ppf([alpha, 1.0 - alpha])
        levels = norm.cdf(z0 + (z0 + z) / (1.0 - acceleration * (z0 + z)))
    if not np.all(np.isfinite(levels)) or not 0.0 < below < 1.0:
        return percentile_interval(finite, ci)
    low, high = np.quantile(finite, levels)
    return float(low), float(high)

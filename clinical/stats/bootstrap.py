"""The cluster (patient) bootstrap as weight matrices, its one-class resamples, and percentile intervals.

Items of one patient (slices, tiles, images) are correlated; resampling items
as if independent gives intervals that are too narrow. A resample here draws
whole groups with replacement, and is returned as the multiplicity of every
row, so that any metric of :mod:`clinical.stats` scores all resamples at once.
Written by hand because :func:`scipy.stats.bootstrap` resamples observations
independently and calls the statistic per resample.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from clinical.stats._weights import weight_matrix

__all__ = ["lost_class", "percentile_interval", "resample_chunks", "resample_weights"]

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

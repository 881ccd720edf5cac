"""The weight matrix every kernel function takes."""

from __future__ import annotations

import numpy as np

from clinical.errors import ConfigurationError

__all__ = ["weight_matrix"]


def weight_matrix(weights: np.ndarray | None, n_rows: int) -> np.ndarray:
    """``weights`` as a float64 ``(B, n_rows)`` matrix; None is one row of unit weights, a vector one row."""
    if weights is None:
        return np.ones((1, n_rows))
    matrix = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if matrix.ndim != 2 or matrix.shape[1] != n_rows:
        raise ConfigurationError(
            f"weights must have shape (n_resamples, {n_rows}), one column per row of the data; "
            f"got shape {np.shape(weights)}."
        )
    return matrix

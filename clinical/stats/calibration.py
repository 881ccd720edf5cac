"""Expected calibration error (Guo et al., 2017) per weight row, on equal-width bins.

Written by hand: scikit-learn has no ECE, and its ``calibration_curve``
returns neither the bin sizes nor takes sample weights.
"""

from __future__ import annotations

import numpy as np

from clinical.errors import ConfigurationError
from clinical.stats._weights import weight_matrix

__all__ = ["bin_edges", "bin_ids", "calibration_error"]


def bin_edges(n_bins: int) -> np.ndarray:
    """Equal-width bin edges on [0, 1], as :func:`sklearn.calibration.calibration_curve` uses them.

    Raises
    ------
    ConfigurationError
        ``n_bins`` is not a positive integer.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ConfigurationError(f"n_bins must be a positive integer; got {n_bins!r}.")
    return np.linspace(0.0, 1.0, n_bins + 1)


def bin_ids(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each probability, with scikit-learn's edge rule (an edge value goes to the lower bin)."""
    return np.searchsorted(bin_edges(n_bins)[1:-1], confidence)


def calibration_error(
    confidence: np.ndarray, outcome: np.ndarray, weights: np.ndarray | None = None, *, n_bins: int
) -> np.ndarray:
    """Expected calibration error for each row of ``weights``: ``sum_b |sum_{i in b} w_i (o_i - c_i)| / sum_i w_i``.

    That is, over equal-width bins ``b``, the bin's share of the weight times
    the gap between its observed frequency and its mean confidence.

    Parameters
    ----------
    confidence
        The probability that claims calibration, shape (N,) in [0, 1]: the
        positive-class probability (binary) or the top-label confidence.
    outcome
        Whether it came true, 0/1 per row, shape (N,).
    weights
        Non-negative ``(B, N)`` weights (bootstrap multiplicities); None for unit weights.
    n_bins
        Equal-width bins on [0, 1].

    Returns
    -------
    numpy.ndarray
        Shape (B,), each in [0, 1]; NaN for a row of zero total weight.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    w = weight_matrix(weights, confidence.shape[0])
    gaps = np.zeros((confidence.shape[0], n_bins))
    gaps[np.arange(confidence.shape[0]), bin_ids(confidence, n_bins)] = np.asarray(outcome, np.float64) - confidence
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.abs(w @ gaps).sum(axis=1) / total, np.nan)

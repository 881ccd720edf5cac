"""The statistics kernel: weighted ranking metrics, calibration error and the cluster bootstrap.

The lowest layer, on numpy, scipy and scikit-learn only, shared by
:mod:`clinical.evaluation` and the leakage audit of :mod:`clinical.splits`.
Every function takes a ``(B, N)`` weight matrix — one row per bootstrap
resample, the multiplicity of each of the ``N`` rows in it — and returns one
value per row, so a thousand resamples cost one sort and a few matrix
products. With unit weights (``weights=None``) each equals scikit-learn, its
test oracle.
"""

from __future__ import annotations

from clinical.stats.bootstrap import (
    bca_interval,
    jackknife_chunks,
    lost_class,
    percentile_interval,
    resample_chunks,
    resample_weights,
)
from clinical.stats.calibration import bin_edges, bin_ids, calibration_error
from clinical.stats.ranking import macro_auroc, one_vs_rest, ranking_metrics, roc_counts

__all__ = [
    "bca_interval",
    "bin_edges",
    "bin_ids",
    "calibration_error",
    "jackknife_chunks",
    "lost_class",
    "macro_auroc",
    "one_vs_rest",
    "percentile_interval",
    "ranking_metrics",
    "resample_chunks",
    "resample_weights",
    "roc_counts",
]

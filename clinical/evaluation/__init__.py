"""Metrics with bootstrap CIs at patient level, calibration, per-site tables, plots, Grad-CAM.

The input is a predictions frame (one row per item, see
:mod:`clinical.evaluation.predictions`); metrics are computed at the level the
clinic decides at (patient by default), with confidence intervals from a
bootstrap that resamples patients.
"""

from __future__ import annotations

import importlib

from clinical.evaluation.bootstrap import evaluate
from clinical.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_table,
)
from clinical.evaluation.compare import Comparison, FoldComparison, compare, compare_folds, delong_test
from clinical.evaluation.metrics import METRICS, choose_threshold, score
from clinical.evaluation.plots import (
    plot_calibration,
    plot_confusion,
    plot_forest,
    plot_pr,
    plot_roc,
    save_figure,
)
from clinical.evaluation.predictions import LEVELS, aggregate, validate_predictions
from clinical.evaluation.report import Report, format_mean_sd, format_metric, summarize_folds
from clinical.evaluation.sites import per_site

#: Grad-CAM needs torch and MONAI; it is imported on first use so that metrics stay light to import.
_LAZY = {"gradcam": "clinical.evaluation.activation_maps", "gradcam_figure": "clinical.evaluation.activation_maps"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LEVELS",
    "METRICS",
    "Comparison",
    "FoldComparison",
    "Report",
    "aggregate",
    "apply_temperature",
    "choose_threshold",
    "compare",
    "compare_folds",
    "delong_test",
    "evaluate",
    "expected_calibration_error",
    "fit_temperature",
    "format_mean_sd",
    "format_metric",
    "gradcam",
    "gradcam_figure",
    "per_site",
    "plot_calibration",
    "plot_confusion",
    "plot_forest",
    "plot_pr",
    "plot_roc",
    "reliability_table",
    "save_figure",
    "score",
    "summarize_folds",
    "validate_predictions",
]

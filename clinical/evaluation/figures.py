"""The figures every evaluated predictions frame gets, written as PNGs (tracked or not, the same files)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from clinical.errors import ClinicalError
from clinical.evaluation.plots import plot_calibration, plot_confusion, plot_forest, plot_pr, plot_roc, save_figure
from clinical.evaluation.sites import per_site

__all__ = ["save_plots"]

logger = logging.getLogger(__name__)


def save_plots(
    frame: pd.DataFrame, classes: list[str], folder: Path, *, level: str = "patient", aggregate: str = "mean"
) -> list[Path]:
    """ROC, PR, calibration, confusion and (with several sites) forest plots of one predictions frame, as PNGs.

    Items are combined into patients (studies) by ``aggregate``, as the metrics they illustrate were.
    """
    figures = {
        "roc": lambda: plot_roc(frame, classes, level=level, aggregate=aggregate),
        "pr": lambda: plot_pr(frame, classes, level=level, aggregate=aggregate),
        "calibration": lambda: plot_calibration(frame, classes, level=level, aggregate=aggregate),
        "confusion": lambda: plot_confusion(frame, classes, level=level, aggregate=aggregate),
    }
    if frame["site"].nunique() > 1:
        figures["sites"] = lambda: plot_forest(per_site(frame, classes, level=level, n_boot=200, aggregate=aggregate))
    paths = []
    for name, make in figures.items():
        try:
            paths.append(save_figure(make(), Path(folder) / f"{name}.png"))
        except ClinicalError as error:  # e.g. one class only in a tiny fold: the plot is undefined, the run is not
            logger.warning("No %s plot: %s", name, error)
    return paths

"""Per-item uncertainty in the evaluation: by quality band and grade, refer-when-uncertain, coverage curve.

The input is a predictions frame with an ``uncertainty`` column (from test-time augmentation,
:func:`clinical.training.tta.predict_tta`, or any other per-item spread). A screening service
that refers the most uncertain photographs to a human grader keeps a share of the items (the
*coverage*) for the model; the coverage–performance curve shows what the model achieves on what
it keeps, and the operating point fixes the uncertainty threshold on validation data.
Decisions here are per photograph (eye): an uncertain eye is re-photographed or graded by a person.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.exceptions import UndefinedMetricWarning

from clinical.errors import ConfigurationError, PredictionsError
from clinical.evaluation.metrics import predicted_class, score
from clinical.evaluation.plots import save_figure
from clinical.evaluation.predictions import labels_array, probs_array, validate_predictions

__all__ = [
    "QUALITY_BANDS",
    "UNCERTAINTY",
    "coverage_curve",
    "plot_by_group",
    "plot_coverage",
    "quality_band",
    "refer_threshold",
    "save_uncertainty_plots",
    "uncertainty_report",
    "with_quality",
]

logger = logging.getLogger(__name__)

#: The column every function here reads the per-item uncertainty from.
UNCERTAINTY = "uncertainty"
#: ``quality_score`` edges of the bands ``low`` (< 0.5), ``medium`` and ``high`` (≥ 0.9). On the synthetic fundus
#: cohort good photographs score 0.9–1, and defocused or badly exposed ones under 0.5.
QUALITY_BANDS = (0.5, 0.9)
_BAND_NAMES = ("low", "medium", "high")
#: Coverages the curve is computed at, from everything kept down to a third.
_COVERAGES = tuple(np.round(np.linspace(1.0, 0.3, 15), 4))


def quality_band(scores: pd.Series | np.ndarray, edges: Sequence[float] = QUALITY_BANDS) -> pd.Series:
    """``low`` / ``medium`` / ``high`` of each ``quality_score`` (ordered categories; NaN stays missing)."""
    edges = [float(e) for e in edges]
    if len(edges) != 2 or not 0.0 < edges[0] < edges[1] < 1.0:
        raise ConfigurationError(f"edges must be two increasing numbers in (0, 1); got {edges}.")
    values = pd.Series(scores, dtype="float64")
    return pd.cut(values, [-np.inf, *edges, np.inf], right=False, labels=list(_BAND_NAMES))


def with_quality(frame: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the manifest's ``quality_score`` of each item and its ``quality_band``.

    Raises
    ------
    PredictionsError
        When the manifest has no ``quality_score`` (it was not ingested from photographs).
    """
    if "quality_score" not in manifest.columns:
        raise PredictionsError("the manifest has no 'quality_score'; it is measured when photographs are ingested.")
    scores = manifest.set_index("item_id")["quality_score"]
    out = frame.copy()
    out["quality_score"] = out["item_id"].map(scores).astype("float64")
    out["quality_band"] = quality_band(out["quality_score"])
    return out


def _uncertain(frame: pd.DataFrame, classes: Sequence[str], column: str) -> tuple[pd.DataFrame, np.ndarray]:
    frame = validate_predictions(frame, classes)
    if column not in frame.columns:
        raise PredictionsError(
            f"the predictions have no {column!r} column; predict with clinical.training.tta.predict_tta "
            "(or add a per-item spread under that name)."
        )
    values = frame[column].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise PredictionsError(f"{int((~np.isfinite(values)).sum())} rows have a NaN or infinite {column!r}.")
    known = labels_array(frame, len(classes)) >= 0
    return frame[known].reset_index(drop=True), values[known]


def refer_threshold(val_frame: pd.DataFrame, classes: Sequence[str], *, coverage: float = 0.8,
                    column: str = UNCERTAINTY) -> float:
    """The uncertainty above which an item is referred, so that ``coverage`` of the validation items are kept.

    Choose it on validation data and apply it to the test set, like a probability threshold.
    """
    if not 0.0 < float(coverage) <= 1.0:
        raise ConfigurationError(f"coverage must be in (0, 1]; got {coverage!r}.")
    _, values = _uncertain(val_frame, classes, column)
    if not values.size:
        raise PredictionsError("no validation item has a known label; no threshold can be chosen.")
    return float(np.quantile(values, float(coverage), method="higher"))


def coverage_curve(
    frame: pd.DataFrame,
    classes: Sequence[str],
    *,
    coverages: Sequence[float] = _COVERAGES,
    column: str = UNCERTAINTY,
    threshold: float | None = None,
) -> pd.DataFrame:
    """Item-level metrics on the least uncertain items, at each coverage.

    Returns
    -------
    pandas.DataFrame
        One row per coverage: ``coverage`` (asked), ``kept`` (items kept), ``cutoff`` (largest uncertainty
        kept) and :func:`clinical.evaluation.score`'s ``auroc, auprc, sensitivity, specificity, balanced_accuracy``
        on the kept items (NaN where they hold one class only).
    """
    frame, values = _uncertain(frame, classes, column)
    order = np.argsort(values, kind="stable")
    rows = []
    for coverage in coverages:
        if not 0.0 < float(coverage) <= 1.0:
            raise ConfigurationError(f"coverages must lie in (0, 1]; got {coverage!r}.")
        kept = order[: max(1, math.ceil(float(coverage) * len(order)))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)  # a small kept set may hold one class
            metrics = score(frame.iloc[kept], classes, level="item", threshold=threshold)
        rows.append({"coverage": float(coverage), "kept": len(kept), "cutoff": float(values[kept].max()),
                     **{m: metrics[m] for m in ("auroc", "auprc", "sensitivity", "specificity", "balanced_accuracy")}})
    return pd.DataFrame(rows)


def uncertainty_report(
    frame: pd.DataFrame,
    classes: Sequence[str],
    *,
    by: str,
    column: str = UNCERTAINTY,
    threshold: float | None = None,
) -> pd.DataFrame:
    """Uncertainty and error of the items in each group of ``by`` (e.g. ``quality_band`` or ``grade``).

    Returns
    -------
    pandas.DataFrame
        One row per group: ``n``, ``uncertainty`` (mean), ``uncertainty_sd``, ``error`` (share misclassified
        at ``threshold``, or the argmax) and ``auroc`` (NaN where the group holds one class).
    """
    frame, values = _uncertain(frame, classes, column)
    if by not in frame.columns:
        raise PredictionsError(f"the predictions have no {by!r} column to group by; they have {list(frame.columns)}.")
    n_classes = len(classes)
    wrong = predicted_class(probs_array(frame, n_classes), threshold) != labels_array(frame, n_classes)
    rows = []
    for group, index in frame.groupby(by, observed=True, sort=True).indices.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            auroc = score(frame.iloc[index], classes, level="item", threshold=threshold)["auroc"]
        rows.append({by: group, "n": len(index), "uncertainty": float(values[index].mean()),
                     "uncertainty_sd": float(values[index].std()), "error": float(wrong[index].mean()),
                     "auroc": auroc})
    return pd.DataFrame(rows)


def plot_coverage(curve: pd.DataFrame, *, operating_coverage: float | None = None, title: str | None = None) -> Figure:
    """AUROC, sensitivity and specificity against coverage (the share the model keeps), as the curve gave them."""
    figure = Figure(figsize=(6.0, 4.6), layout="constrained")
    ax = figure.add_subplot()
    for metric, style in (("auroc", "-o"), ("sensitivity", "--"), ("specificity", ":")):
        ax.plot(curve["coverage"], curve[metric], style, label=metric if metric != "auroc" else "AUROC")
    if operating_coverage is not None:
        ax.axvline(operating_coverage, color="grey", lw=1, label=f"operating point ({operating_coverage:.0%} kept)")
    ax.set_xlabel("coverage (share of items the model decides; the rest are referred)")
    ax.set_ylabel("on the kept items")
    ax.set_xlim(1.02, min(curve["coverage"]) - 0.02)
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title or f"Refer when uncertain ({int(curve['kept'].max())} items)")
    return figure


def plot_by_group(report: pd.DataFrame, by: str, *, title: str | None = None) -> Figure:
    """Mean uncertainty (with its SD) and error rate of each group of an :func:`uncertainty_report`."""
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    names = [str(g) for g in report[by]]
    left.bar(names, report["uncertainty"], yerr=report["uncertainty_sd"], color="tab:blue", alpha=0.8)
    left.set_ylabel("mean uncertainty")
    right.bar(names, report["error"], color="tab:red", alpha=0.8)
    right.set_ylabel("error rate")
    right.set_ylim(0.0, 1.0)
    for ax in (left, right):
        ax.set_xlabel(by.replace("_", " "))
        for x, n in zip(names, report["n"], strict=True):
            ax.annotate(f"n={n}", (x, 0), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
    figure.suptitle(title or f"Uncertainty and error by {by.replace('_', ' ')}")
    return figure


def save_uncertainty_plots(
    frame: pd.DataFrame,
    classes: Sequence[str],
    folder: str | Path,
    *,
    operating_coverage: float | None = None,
    groups: Sequence[str] = ("quality_band", "grade"),
    column: str = UNCERTAINTY,
) -> list[Path]:
    """``coverage.png`` and one ``by_<group>.png`` per grouping column the frame has, in ``folder``."""
    paths = [save_figure(plot_coverage(coverage_curve(frame, classes, column=column),
                                       operating_coverage=operating_coverage), Path(folder) / "coverage.png")]
    for by in groups:
        if by in frame.columns:
            report = uncertainty_report(frame, classes, by=by, column=column)
            paths.append(save_figure(plot_by_group(report, by), Path(folder) / f"by_{by}.png"))
    return paths

"""Figures people look at: ROC and PR curves with bootstrap bands, reliability diagram, confusion matrix, forest plot.

Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot (no global state, rendered by the Agg canvas, safe in worker processes);
:func:`save_figure` writes it as PNG. Bands are pointwise percentile bands over
patient-bootstrap resamples, the same resamples as the CI in the legend.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from clinical.errors import ConfigurationError, PredictionsError
from clinical.evaluation.bootstrap import Units, check_bootstrap_options, prepare_units
from clinical.evaluation.calibration import DEFAULT_BINS, expected_calibration_error, reliability_table
from clinical.evaluation.metrics import predicted_class
from clinical.evaluation.predictions import Level
from clinical.evaluation.report import format_metric
from clinical.evaluation.sites import ALL_SITES, SITE_GAP
from clinical.stats import percentile_interval, ranking_metrics, resample_weights, roc_counts

__all__ = [
    "plot_calibration",
    "plot_confusion",
    "plot_forest",
    "plot_pr",
    "plot_roc",
    "save_figure",
]

logger = logging.getLogger(__name__)

Frames = pd.DataFrame | Mapping[str, pd.DataFrame]

_GRID = np.linspace(0.0, 1.0, 201)
_DISPLAY = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "balanced_accuracy": "balanced accuracy",
    "f1": "F1",
    "brier": "Brier score",
    "ece": "ECE",
}
_LEVEL_WORD = {"patient": "patients", "study": "studies", "series": "series", "item": "items"}


def save_figure(figure: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Write ``figure`` as PNG (parent folders are created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    return path


def _count(units: Units) -> str:
    """ "120 patients (max of items)" or "480 items of 120 patients": what was scored, and how items were combined."""
    how = "" if units.aggregate == "none" else f" ({units.aggregate} of items)"
    if units.level == "patient":
        return f"{units.n_patients} patients{how}"
    return f"{len(units.clusters)} {_LEVEL_WORD[units.level]} of {units.n_patients} patients{how}"


def _named(frames: Frames) -> dict[str, pd.DataFrame]:
    if isinstance(frames, pd.DataFrame):
        return {"model": frames}
    if not frames:
        raise ConfigurationError("no predictions to plot; pass a frame or a non-empty mapping name → frame.")
    return dict(frames)


def _binary_tasks(units: Units, name: str, several_models: bool) -> list[tuple[str, np.ndarray, ...]]:
    """(legend name, y 0/1, score, row mask) for each curve one model contributes."""
    n_classes = len(units.classes)
    if units.multilabel:
        return [
            (f"{name}: {c}" if several_models else c, units.y[:, k] == 1, units.probs[:, k], units.y[:, k] >= 0)
            for k, c in enumerate(units.classes)
        ]
    if n_classes == 2:
        everyone = np.ones(len(units.y), dtype=bool)
        label = name if several_models else units.classes[1]
        return [(label, units.y == 1, units.probs[:, 1], everyone)]
    if several_models:
        raise ConfigurationError("overlaying several models is supported for binary tasks; plot one model at a time.")
    everyone = np.ones(len(units.y), dtype=bool)
    return [(f"{c} vs rest", units.y == k, units.probs[:, k], everyone) for k, c in enumerate(units.classes)]


def _bands(y: np.ndarray, s: np.ndarray, w: np.ndarray, ci: float) -> tuple[np.ndarray, ...]:
    """Pointwise ROC (TPR at FPR grid) and PR (precision at recall grid) bands over the resamples."""
    tp, fp = roc_counts(y, s, w)
    keep = (tp[:, -1] > 0) & (fp[:, -1] > 0)
    tp, fp = tp[keep], fp[keep]
    tpr, fpr = tp / tp[:, -1:], fp / fp[:, -1:]
    precision = tp / np.maximum(tp + fp, 1e-12)
    roc = np.array([np.interp(_GRID, np.r_[0.0, f], np.r_[0.0, t]) for f, t in zip(fpr, tpr, strict=True)])
    recall_grid = np.maximum(_GRID, 1e-9)  # precision at recall 0 is undefined: start at the first true positive
    pr = np.array(
        [
            p[np.minimum(np.searchsorted(r, recall_grid, side="left"), len(r) - 1)]
            for r, p in zip(tpr, precision, strict=True)
        ]
    )
    alpha = 100 * (1 - ci) / 2
    return (*np.percentile(roc, [alpha, 100 - alpha], axis=0), *np.percentile(pr, [alpha, 100 - alpha], axis=0))


def _curve_figure(
    frames: Frames,
    classes: Sequence[str],
    *,
    kind: str,
    level: Level,
    n_boot: int,
    seed: int,
    ci: float,
    title: str | None,
    aggregate: str,
) -> Figure:
    check_bootstrap_options(n_boot, ci)
    named = _named(frames)
    figure = Figure(figsize=(6.0, 5.6), layout="constrained")
    ax = figure.add_subplot()
    colors = itertools.cycle([f"C{i}" for i in range(10)])
    prevalences = []
    for name, frame in named.items():
        units = prepare_units(frame, classes, level=level, how=aggregate)
        weights = resample_weights(units.clusters, n_boot, np.random.default_rng(seed))
        for label, y, s, mask in _binary_tasks(units, name, len(named) > 1):
            y, s, w = y[mask].astype(np.int64), s[mask], weights[:, mask]
            if not 0 < y.sum() < y.size:
                raise PredictionsError(f"{label!r} has only one class among its labelled {level}s; no curve exists.")
            auroc, ap = ranking_metrics(y, s, np.vstack([np.ones(y.size), w]))
            roc_low, roc_high, pr_low, pr_high = _bands(y, s, w, ci)
            color = next(colors)
            if kind == "roc":
                fpr, tpr, _ = roc_curve(y, s)
                text = format_metric(auroc[0], *percentile_interval(auroc[1:], ci))
                ax.plot(fpr, tpr, color=color, lw=2, label=f"{label}: AUROC {text}")
                ax.fill_between(_GRID, roc_low, roc_high, color=color, alpha=0.2, lw=0)
            else:
                precision, recall, _ = precision_recall_curve(y, s)
                text = format_metric(ap[0], *percentile_interval(ap[1:], ci))
                ax.step(recall, precision, where="post", color=color, lw=2, label=f"{label}: AUPRC {text}")
                ax.fill_between(_GRID, pr_low, pr_high, color=color, alpha=0.2, lw=0, step="post")
                prevalences.append((y.mean(), color))
    if kind == "roc":
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
        ax.set(xlabel="1 − specificity (false-positive rate)", ylabel="sensitivity (true-positive rate)")
    else:
        for prevalence, color in prevalences:
            ax.axhline(prevalence, ls="--", color=color, lw=1, alpha=0.7)
        ax.plot([], [], ls="--", color="0.6", lw=1, label="chance (prevalence)")
        ax.set(xlabel="recall (sensitivity)", ylabel="precision (positive predictive value)")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8, framealpha=0.9)
    default = "ROC curve" if kind == "roc" else "Precision–recall curve"
    ax.set_title(
        title
        or f"{default} — {_count(units)}\n"
        f"shaded: {ci:.0%} patient-bootstrap band ({n_boot} resamples)",
        fontsize=10,
    )
    return figure


def plot_roc(
    frames: Frames,
    classes: Sequence[str],
    *,
    level: Level = "patient",
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    title: str | None = None,
    aggregate: str = "mean",
) -> Figure:
    """ROC curve(s) with a patient-bootstrap band and the AUROC with its CI in the legend.

    Parameters
    ----------
    frames
        A predictions frame, or a mapping name → frame to overlay models (binary tasks).
        Multi-class frames give one one-vs-rest curve per class; multi-label one per label.
    classes
        Class names in class-index order.
    level, n_boot, seed, ci, aggregate
        As in :func:`clinical.evaluation.evaluate` (200 resamples suffice for a band); the default
        title names the aggregation.
    title
        Replaces the default title.
    """
    return _curve_figure(frames, classes, kind="roc", level=level, n_boot=n_boot, seed=seed, ci=ci, title=title,
                         aggregate=aggregate)


def plot_pr(
    frames: Frames,
    classes: Sequence[str],
    *,
    level: Level = "patient",
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    title: str | None = None,
    aggregate: str = "mean",
) -> Figure:
    """Precision–recall curve(s) with a patient-bootstrap band, AUPRC (average precision) with its CI.

    The dashed line at the prevalence is what a random classifier achieves.
    Parameters as in :func:`plot_roc`.
    """
    return _curve_figure(frames, classes, kind="pr", level=level, n_boot=n_boot, seed=seed, ci=ci, title=title,
                         aggregate=aggregate)


def plot_calibration(
    frames: Frames,
    classes: Sequence[str],
    *,
    level: Level = "patient",
    n_bins: int = DEFAULT_BINS,
    title: str | None = None,
    aggregate: str = "mean",
) -> Figure:
    """Reliability diagram with the ECE in the legend and the distribution of predictions below.

    Pass a mapping, e.g. ``{"before": val, "temperature-scaled": scaled}``, to
    overlay several. Binary tasks show the positive-class probability,
    multi-class tasks the top-label confidence.
    """
    named = _named(frames)
    figure = Figure(figsize=(6.0, 6.6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfect calibration")
    for i, (name, frame) in enumerate(named.items()):
        units = prepare_units(frame, classes, level=level, how=aggregate)
        if units.multilabel:
            raise ConfigurationError("plot_calibration supports single-label tasks.")
        table = reliability_table(frame, classes, level=level, n_bins=n_bins, aggregate=aggregate)
        ece = expected_calibration_error(units.y, units.probs, n_bins=n_bins)
        label = f"{name}: ECE {ece:.3f}" if len(named) > 1 else f"ECE {ece:.3f}"
        top.plot(table["prob_pred"], table["prob_true"], marker="o", color=f"C{i}", lw=2, label=label)
        confidence = units.probs[:, 1] if len(classes) == 2 else units.probs.max(axis=1)
        bottom.hist(confidence, bins=np.linspace(0, 1, n_bins + 1), color=f"C{i}", alpha=0.5, label=name)
    what = f"P({classes[1]})" if len(classes) == 2 else "top-label confidence"
    top.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(
        title
        or f"Reliability diagram — {_count(units)}, {n_bins} equal-width bins",
        fontsize=10,
    )
    bottom.set(xlabel=f"predicted {what}", ylabel=_LEVEL_WORD[level])
    bottom.grid(alpha=0.3)
    return figure


def plot_confusion(
    frame: pd.DataFrame,
    classes: Sequence[str],
    *,
    level: Level = "patient",
    threshold: float | None = None,
    title: str | None = None,
    aggregate: str = "mean",
) -> Figure:
    """Confusion matrix: counts, and the share of each true class (row) as colour and percentage."""
    units = prepare_units(frame, classes, level=level, how=aggregate)
    if units.multilabel:
        raise ConfigurationError("plot_confusion supports single-label tasks; a multi-label task has one per label.")
    n_classes = len(classes)
    pred = predicted_class(units.probs, threshold)
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (units.y, pred), 1)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.0 + 1.1 * n_classes
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n_classes):
        for j in range(n_classes):
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set(xticks=range(n_classes), yticks=range(n_classes), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(classes, rotation=30 if n_classes > 3 else 0, ha="right" if n_classes > 3 else "center")
    ax.set_yticklabels(classes)
    figure.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)
    rule = "argmax" if n_classes > 2 else f"P({classes[1]}) ≥ {0.5 if threshold is None else threshold:.3g}"
    ax.set_title(title or f"Confusion matrix — {_count(units)}, {rule}", fontsize=10)
    return figure


def plot_forest(site_table: pd.DataFrame, *, metric: str = "auroc", title: str | None = None) -> Figure:
    """Forest plot of one metric per site from :func:`clinical.evaluation.per_site`, pooled value as a diamond."""
    rows = site_table[(site_table["metric"] == metric) & (site_table["site"] != SITE_GAP)]
    if rows.empty:
        raise ConfigurationError(
            f"the site table has no rows for metric {metric!r}; it has {sorted(site_table['metric'].unique())}."
        )
    sites = rows[rows["site"] != ALL_SITES]
    pooled = rows[rows["site"] == ALL_SITES]
    figure = Figure(figsize=(7.5, 1.4 + 0.45 * len(rows)), layout="constrained")
    ax = figure.add_subplot()
    positions = np.arange(len(sites))[::-1] + 1.0
    ax.errorbar(
        sites["value"],
        positions,
        xerr=[sites["value"] - sites["low"], sites["high"] - sites["value"]],
        fmt="s",
        color="C0",
        ecolor="C0",
        capsize=3,
        markersize=6,
    )
    labels = [f"{r.site} (n={r.n})" for r in sites.itertuples()]
    texts = [format_metric(r.value, r.low, r.high) for r in sites.itertuples()]
    ticks = list(positions)
    if not pooled.empty:
        p = pooled.iloc[0]
        ax.fill([p["low"], p["value"], p["high"], p["value"]], [0, 0.25, 0, -0.25], color="C3", zorder=3)
        ax.axvline(p["value"], color="C3", ls="--", lw=1, alpha=0.7)
        labels.append(f"all sites (n={p['n']})")
        texts.append(format_metric(p["value"], p["low"], p["high"]))
        ticks.append(0.0)
    ax.set_yticks(ticks, labels)
    right = ax.secondary_yaxis("right")
    right.set_yticks(ticks, texts)
    right.tick_params(length=0)
    gap = site_table[(site_table["metric"] == metric) & (site_table["site"] == SITE_GAP)]
    subtitle = ""
    if not gap.empty:
        g = gap.iloc[0]
        subtitle = f"\ngap best − worst site: {format_metric(g['value'], g['low'], g['high'])}"
        if "p_value" in gap.columns and np.isfinite(g["p_value"]):
            subtitle += f", heterogeneity p = {g['p_value']:.2g}"
    ax.set_xlabel(_DISPLAY.get(metric, metric))
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(sites) + 0.7)
    how = rows["aggregate"].iloc[0]
    unit = "" if how == "none" else f" ({how} of items)"
    ax.set_title(title or f"{_DISPLAY.get(metric, metric)} per site{unit} with bootstrap CI{subtitle}", fontsize=10)
    return figure

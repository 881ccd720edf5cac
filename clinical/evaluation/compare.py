"""Paired comparison of two models on the same patients (the promotion gate asks "is A better than B?").

DeLong's test compares two correlated AUROCs of a binary task analytically;
the paired bootstrap resamples patients once and scores both models on every
resample, for any metric and any task.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from scipy.stats import t as student_t

from clinical.errors import ConfigurationError, PredictionsError
from clinical.evaluation._weighted import weighted_metrics
from clinical.evaluation.bootstrap import (
    Units,
    check_bootstrap_options,
    degenerate,
    point_metrics,
    prepare_units,
    weight_chunks,
)
from clinical.evaluation.calibration import DEFAULT_BINS
from clinical.evaluation.metrics import DEFAULT_THRESHOLD, check_threshold
from clinical.evaluation.predictions import LEVEL_KEYS, Level
from clinical.stats import percentile_interval

__all__ = ["Comparison", "FoldComparison", "compare", "compare_folds", "delong_test"]

logger = logging.getLogger(__name__)

#: Metrics where lower is better; the difference is still A − B, so a better A has a negative difference.
LOWER_IS_BETTER = ("brier", "ece")


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare`: ``difference = value_a - value_b`` with its CI and a two-sided p-value.

    ``aggregate`` says how items became one probability per patient (study); ``"none"`` at item level.
    """

    metric: str
    method: str
    value_a: float
    value_b: float
    difference: float
    low: float
    high: float
    p_value: float
    n_units: int
    n_patients: int
    level: str
    aggregate: str = "mean"

    def to_dict(self) -> dict[str, float | str | int]:
        """Plain values for logging (the metric name and method as strings)."""
        return asdict(self)


@dataclass(frozen=True)
class FoldComparison:
    """Result of :func:`compare_folds`: the mean per-fold difference A − B, its CI and a two-sided p-value."""

    mean_a: float
    mean_b: float
    difference: float
    low: float
    high: float
    p_value: float
    t: float
    df: int
    n_folds: int
    test_train_ratio: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain values for logging."""
        return asdict(self)


def _fold_sizes(name: str, value: int | Sequence[int], k: int) -> np.ndarray:
    sizes = np.broadcast_to(np.asarray(value, dtype=np.float64), (k,)) if np.ndim(value) == 0 else np.asarray(value)
    if sizes.shape != (k,) or not np.all(np.isfinite(sizes)) or (sizes <= 0).any():
        raise ConfigurationError(
            f"The '{name}' parameter of compare_folds must be a positive count, or one per fold ({k}); got {value!r}."
        )
    return sizes.astype(np.float64)


def compare_folds(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    n_train: int | Sequence[int],
    n_test: int | Sequence[int],
    *,
    ci: float = 0.95,
) -> FoldComparison:
    """Corrected resampled t-test of two recipes scored on the same cross-validation folds.

    The folds' training sets overlap, so their scores are correlated and the plain paired t-test over folds
    is far too liberal. Nadeau & Bengio (2003), "Inference for the generalization error", Machine Learning
    52(3), inflate the variance of the mean difference from ``s² / k`` to ``s² (1/k + n_test/n_train)``;
    with repeated cross-validation ``k`` counts every (repeat, fold) — Bouckaert & Frank (2004).
    Use it to say "recipe A beat recipe B over the folds, p = …" (in-domain against ImageNet pretraining);
    DeLong's test (:func:`compare`) compares two models on one set of pooled predictions instead.

    Parameters
    ----------
    scores_a, scores_b
        One metric (e.g. the AUROC) per fold, shape (k,), fold ``i`` of both on the same patients.
    n_train, n_test
        Patients trained on and tested on, one count for all folds or one per fold (the mean of the
        ratios ``n_test / n_train`` is used).
    ci
        Coverage of the t interval of the difference.

    Returns
    -------
    FoldComparison
        ``difference = mean(scores_a - scores_b)``, its interval, ``t`` on ``df = k − 1`` degrees of freedom
        and the two-sided ``p_value``. With zero variance the interval is the point and ``p_value`` is 0 for
        a non-zero difference, 1 for none.

    Raises
    ------
    ConfigurationError
        Fewer than two folds, scores of different lengths or not finite, bad counts or ``ci``.
    """
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ConfigurationError(
            f"compare_folds needs one score per fold for each recipe, at least 2 folds, same length; got shapes "
            f"{a.shape} and {b.shape}."
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ConfigurationError("compare_folds got NaN or infinite fold scores; drop those folds from both.")
    if not 0.0 < ci < 1.0:
        raise ConfigurationError(f"ci must be in (0, 1), e.g. 0.95; got {ci!r}.")
    k = a.size
    ratio = float(np.mean(_fold_sizes("n_test", n_test, k) / _fold_sizes("n_train", n_train, k)))
    d = a - b
    difference = float(d.mean())
    se = float(np.sqrt((1.0 / k + ratio) * d.var(ddof=1)))
    df = k - 1
    if se <= 1e-15:
        statistic = 0.0 if abs(difference) <= 1e-12 else float(np.copysign(np.inf, difference))
        p_value = 1.0 if abs(difference) <= 1e-12 else 0.0
        low = high = difference
    else:
        statistic = difference / se
        p_value = float(2.0 * student_t.sf(abs(statistic), df))
        half = float(student_t.ppf(0.5 + ci / 2.0, df)) * se
        low, high = difference - half, difference + half
    return FoldComparison(float(a.mean()), float(b.mean()), difference, low, high, p_value, statistic, df, k, ratio)


def delong_test(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, *, ci: float = 0.95) -> tuple:
    """DeLong's test for two correlated AUROCs on the same cases.

    Written by hand — scikit-learn, scipy and statsmodels have no DeLong test —
    following the fast algorithm of Sun & Xu (2014), "Fast implementation of
    DeLong's algorithm for comparing the areas under correlated receiver
    operating characteristic curves", IEEE Signal Processing Letters 21(11):
    midranks give the structural components in O(N log N).

    Parameters
    ----------
    y
        0/1 per case, shape (N,); cases must be independent (patients, not slices).
    score_a, score_b
        Positive-class scores of the two models, shape (N,).
    ci
        Coverage of the normal-approximation interval of the difference.

    Returns
    -------
    (auc_a, auc_b, difference, low, high, p_value)
        With zero variance (both models rank every pair the same way each time, e.g. a perfect against a
        constant model) the interval is the point and ``p_value`` is 0 for a non-zero difference, 1 for none.
    """
    y = np.asarray(y).astype(bool)
    scores = np.vstack([score_a, score_b]).astype(np.float64)
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise PredictionsError(f"DeLong's test needs at least 2 positive and 2 negative cases; got {m} and {n}.")
    tx = rankdata(pos, axis=1)  # midranks within positives
    ty = rankdata(neg, axis=1)  # midranks within negatives
    tz = rankdata(np.hstack([pos, neg]), axis=1)  # midranks among all
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n  # structural components of the positives
    v01 = 1.0 - (tz[:, m:] - ty) / m  # of the negatives
    cov = np.cov(v10) / m + np.cov(v01) / n
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if variance <= 1e-15:
        # No variance: the difference is known exactly. A non-zero one (a perfect against a constant model) is
        # certain, p = 0, as R's pROC reports; a zero one (identical rankings) gives nothing to test, p = 1.
        p_value = 0.0 if abs(difference) > 1e-12 else 1.0
        return float(aucs[0]), float(aucs[1]), difference, difference, difference, p_value
    se = np.sqrt(variance)
    z = norm.ppf(0.5 + ci / 2.0)
    p_value = float(2.0 * norm.sf(abs(difference) / se))
    return float(aucs[0]), float(aucs[1]), difference, float(difference - z * se), float(difference + z * se), p_value


def _paired_units(
    frame_a: pd.DataFrame, frame_b: pd.DataFrame, classes: list[str], level: str, how: str
) -> tuple[Units, Units]:
    """Both models' units in the same order; the same patients and labels are required."""
    a = prepare_units(frame_a, classes, level=level, how=how)
    b = prepare_units(frame_b, classes, level=level, how=how)
    key = LEVEL_KEYS[level]
    keys_a, keys_b = a.frame[key], b.frame[key]
    if len(keys_a) != len(keys_b) or set(keys_a) != set(keys_b):
        only_a, only_b = len(set(keys_a) - set(keys_b)), len(set(keys_b) - set(keys_a))
        raise PredictionsError(
            f"a paired comparison needs both models' predictions on the same labelled {level}s; {only_a} are only "
            f"in frame_a and {only_b} only in frame_b. Predict both models on the same test set."
        )
    order = pd.Index(keys_b).get_indexer(keys_a)
    b = Units(
        b.frame.iloc[order].reset_index(drop=True),
        b.y[order],
        b.probs[order],
        a.clusters,
        b.classes,
        b.multilabel,
        level,
        b.aggregate,
    )
    if not np.array_equal(a.y, b.y):
        raise PredictionsError(f"the two frames disagree on the labels of some {level}s; compare on one test set.")
    return a, b


def compare(
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame,
    classes: Sequence[str],
    *,
    level: Level = "patient",
    method: Literal["delong", "bootstrap"] = "delong",
    metric: str = "auroc",
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
    ci: float = 0.95,
    aggregate: str = "mean",
) -> Comparison:
    """Compare model A with model B on the same patients: ``difference = metric(A) - metric(B)``.

    Parameters
    ----------
    frame_a, frame_b
        Predictions of the two models on the same items (same labels).
    classes
        Class names in class-index order.
    level
        Level of the metric (default patient).
    method
        ``"delong"`` (binary AUROC only; cases must be independent, so use patient
        or study level) or ``"bootstrap"`` (paired patient bootstrap, any metric of
        :func:`clinical.evaluation.score`).
    metric
        Metric to compare; for ``brier`` and ``ece`` lower is better, so a better A
        has a negative difference.
    n_boot, seed, threshold, ci, aggregate
        As in :func:`clinical.evaluation.evaluate`; both models' items are combined the same way.

    Returns
    -------
    Comparison
        Values of both models, the difference, its CI and a two-sided p-value
        (bootstrap: twice the share of resampled differences on the far side of 0,
        at least ``1 / (n_boot + 1)``).

    Raises
    ------
    ConfigurationError
        DeLong asked for a metric other than AUROC or a task that is not binary.
    PredictionsError
        The frames do not cover the same labelled patients.
    """
    classes = list(classes)
    check_bootstrap_options(n_boot, ci)
    if method not in ("delong", "bootstrap"):
        raise ConfigurationError(f"method must be 'delong' or 'bootstrap'; got {method!r}.")
    a, b = _paired_units(frame_a, frame_b, classes, level, aggregate)
    if method == "delong":
        if metric != "auroc" or len(classes) != 2 or a.multilabel:
            raise ConfigurationError(
                f"DeLong's test compares binary AUROCs; got metric={metric!r} with {len(classes)} classes. "
                "Use method='bootstrap'."
            )
        if a.n_patients < len(a.clusters):
            logger.warning(
                "DeLong's test assumes independent cases, but %d %ss come from %d patients; prefer "
                "level='patient' or method='bootstrap'.",
                len(a.clusters),
                level,
                a.n_patients,
            )
        auc_a, auc_b, difference, low, high, p_value = delong_test(a.y, a.probs[:, 1], b.probs[:, 1], ci=ci)
        return Comparison(
            metric, method, auc_a, auc_b, difference, low, high, p_value, len(a.clusters), a.n_patients, level,
            a.aggregate,
        )

    check_threshold(threshold, len(classes), a.multilabel)
    point_a = point_metrics(a, threshold=threshold)
    point_b = point_metrics(b, threshold=threshold)
    if metric not in point_a:
        raise ConfigurationError(f"unknown metric {metric!r}; available: {list(point_a)}.")
    t = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    differences = []
    for weights in weight_chunks(a, n_boot, seed):
        kept = weights[~degenerate(a, weights)]
        values = [
            weighted_metrics(
                u.y, u.probs, kept, classes=classes, multilabel=u.multilabel, threshold=t, n_bins=DEFAULT_BINS
            )[metric]
            for u in (a, b)
        ]
        differences.append(values[0] - values[1])
    d = np.concatenate(differences)
    d = d[np.isfinite(d)]
    low, high = percentile_interval(d, ci)
    far_side = min(int((d <= 0).sum()), int((d >= 0).sum()))
    p_value = min(1.0, 2.0 * (far_side + 1) / (d.size + 1))
    difference = point_a[metric] - point_b[metric]
    return Comparison(
        metric,
        method,
        point_a[metric],
        point_b[metric],
        difference,
        low,
        high,
        p_value,
        len(a.clusters),
        a.n_patients,
        level,
        a.aggregate,
    )

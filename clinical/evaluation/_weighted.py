"""Every metric of :func:`clinical.evaluation.score` under row weights, vectorised over many weight vectors.

A bootstrap resample is a vector of multiplicities (how often each row was
drawn), so every resampled metric is a weighted metric. AUROC, average
precision and ECE come from the statistics kernel (:mod:`clinical.stats`);
the confusion-matrix metrics and the Brier score are a few matrix products
here. With unit weights they equal scikit-learn's values (checked in the
tests), and :func:`clinical.evaluation.score` stays the scikit-learn reference.
"""

from __future__ import annotations

import numpy as np

from clinical.evaluation.calibration import confidence_and_outcome
from clinical.stats import calibration_error, one_vs_rest, ranking_metrics

__all__ = ["weighted_metrics"]


def _divide(num: np.ndarray, den: np.ndarray, empty: float = np.nan) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _binary(y: np.ndarray, p: np.ndarray, w: np.ndarray, threshold: float, n_bins: int) -> dict[str, np.ndarray]:
    auroc, ap = ranking_metrics(y, p, w)
    pred = p >= threshold
    pos = y == 1
    tp = w @ (pos & pred)
    fn = w @ (pos & ~pred)
    fp = w @ (~pos & pred)
    tn = w @ (~pos & ~pred)
    sens, spec = _divide(tp, tp + fn), _divide(tn, tn + fp)
    total = w.sum(axis=1)
    return {
        "auroc": auroc,
        "auprc": ap,
        "balanced_accuracy": (sens + spec) / 2,
        "f1": _divide(2 * tp, 2 * tp + fp + fn, empty=0.0),
        "sensitivity": sens,
        "specificity": spec,
        "brier": _divide(w @ (p - y) ** 2, total),
        "ece": calibration_error(p, y, w, n_bins=n_bins),
    }


def _multiclass(y: np.ndarray, probs: np.ndarray, w: np.ndarray, classes: list[str], n_bins: int) -> dict:
    n_classes = len(classes)
    pred = probs.argmax(axis=1)
    cells = np.zeros((y.size, n_classes * n_classes))
    cells[np.arange(y.size), y * n_classes + pred] = 1.0
    cm = (w @ cells).reshape(-1, n_classes, n_classes)  # (B, true, predicted)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    actual, predicted, total = cm.sum(axis=2), cm.sum(axis=1), cm.sum(axis=(1, 2))
    recall = _divide(tp, actual)
    specificity = _divide(total[:, None] - actual - predicted + tp, total[:, None] - actual)
    f1 = _divide(2 * tp, actual + predicted, empty=0.0)
    out: dict[str, np.ndarray] = {}
    aurocs, aps = one_vs_rest(y, probs, w)
    for k, name in enumerate(classes):
        out |= {
            f"auroc_{name}": aurocs[:, k],
            f"auprc_{name}": aps[:, k],
            f"sensitivity_{name}": recall[:, k],
            f"specificity_{name}": specificity[:, k],
            f"f1_{name}": f1[:, k],
        }
    confidence, outcome = confidence_and_outcome(y, probs)
    onehot = np.eye(n_classes)[y]
    with np.errstate(all="ignore"):  # all-NaN rows (a class absent) stay NaN
        balanced = np.nanmean(recall, axis=1)
        head = {
            "auroc": np.nanmean(aurocs, axis=1),
            "auprc": np.nanmean(aps, axis=1),
            "balanced_accuracy": balanced,
            "f1": f1.mean(axis=1),
            "sensitivity": balanced,
            "specificity": np.nanmean(specificity, axis=1),
            "brier": _divide(w @ ((probs - onehot) ** 2).sum(axis=1), total),
            "ece": calibration_error(confidence, outcome, w, n_bins=n_bins),
        }
    return head | out


def _multilabel(y: np.ndarray, probs: np.ndarray, w: np.ndarray, classes: list[str], threshold: float, n_bins: int):
    per_label: list[dict[str, np.ndarray]] = []
    out: dict[str, np.ndarray] = {}
    for k, name in enumerate(classes):
        known = y[:, k] >= 0
        values = _binary(y[known, k], probs[known, k], w[:, known], threshold, n_bins)
        per_label.append(values)
        out |= {f"{metric}_{name}": v for metric, v in values.items()}
    with np.errstate(all="ignore"):
        head = {m: np.nanmean(np.column_stack([v[m] for v in per_label]), axis=1) for m in per_label[0]}
    return head | out


def weighted_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    weights: np.ndarray,
    *,
    classes: list[str],
    multilabel: bool,
    threshold: float,
    n_bins: int,
) -> dict[str, np.ndarray]:
    """Every metric of :func:`clinical.evaluation.score` for each row of ``weights`` (shape (B, N)).

    ``y`` is (N,) class indices (single-label, all known) or (N, C) 0/1 with -1
    for unknown (multi-label). Returns arrays of shape (B,), named as in ``score``.
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if multilabel:
        return _multilabel(y, probs, weights, classes, threshold, n_bins)
    if len(classes) == 2:
        return _binary(y, probs[:, 1], weights, threshold, n_bins)
    return _multiclass(y, probs, weights, classes, n_bins)

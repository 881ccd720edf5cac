"""Point metrics at the level the clinic decides at, and the operating point.

:func:`score` is what the training engine calls every epoch (early stopping);
it uses scikit-learn's metric functions. :func:`choose_threshold` picks the
operating point on validation data; apply the same threshold to the test set.

Conventions
-----------
Binary tasks: the positive class is index 1, ``threshold`` applies to ``prob_1``
(default 0.5). Multi-class: one-vs-rest macro AUROC/AUPRC, macro F1, predicted
class = argmax, plus per-class values named ``<metric>_<class>``. Multi-label:
every label is a binary task at ``threshold`` (default 0.5), macro-averaged.
Metrics that are undefined on the data (one class only) are NaN, with an
:class:`sklearn.exceptions.UndefinedMetricWarning`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    roc_auc_score,
    roc_curve,
)

from clinical.errors import ConfigurationError, PredictionsError
from clinical.evaluation.calibration import DEFAULT_BINS, expected_calibration_error
from clinical.evaluation.predictions import Level, is_multilabel, labels_array, probs_array
from clinical.evaluation.predictions import aggregate as aggregate_items

__all__ = [
    "DEFAULT_THRESHOLD",
    "METRICS",
    "check_threshold",
    "choose_threshold",
    "predicted_class",
    "score",
]

logger = logging.getLogger(__name__)

#: The headline metrics, in the order reports list them.
METRICS = ("auroc", "auprc", "balanced_accuracy", "f1", "sensitivity", "specificity", "brier", "ece")

#: Binary threshold on prob_1 when none was chosen on validation data.
DEFAULT_THRESHOLD = 0.5


def check_threshold(threshold: float | None, n_classes: int, multilabel: bool) -> float:
    """The threshold to use (0.5 when None); refused for multi-class tasks, which predict the argmax."""
    if threshold is None:
        return DEFAULT_THRESHOLD
    if n_classes > 2 and not multilabel:
        raise ConfigurationError(
            f"threshold applies to binary or multi-label tasks; this task has {n_classes} exclusive classes and "
            "predicts the argmax. Pass threshold=None."
        )
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigurationError(f"threshold must be a probability in [0, 1]; got {threshold!r}.")
    return float(threshold)


def predicted_class(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Predicted class index: ``prob_1 >= threshold`` for 2 classes, the argmax otherwise."""
    if probs.shape[1] == 2:
        return (probs[:, 1] >= (DEFAULT_THRESHOLD if threshold is None else threshold)).astype(np.int64)
    return probs.argmax(axis=1)


def _undefined(name: str, reason: str) -> float:
    warnings.warn(f"{name} is undefined: {reason}; reporting NaN.", UndefinedMetricWarning, stacklevel=3)
    return float("nan")


def _binary(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Metrics of one binary task: y in {0, 1}, p the positive-class probability."""
    both = 0 < y.sum() < y.size
    pred = (p >= threshold).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "auroc": roc_auc_score(y, p) if both else _undefined("AUROC", "only one class present"),
        "auprc": average_precision_score(y, p) if both else _undefined("AUPRC", "only one class present"),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if both else float("nan"),
        "f1": float(f1_score(y, pred, zero_division=0.0)),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "brier": float(brier_score_loss(y, p, pos_label=1)),
    }


def _multiclass(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    n_classes = len(classes)
    pred = probs.argmax(axis=1)
    labels = list(range(n_classes))
    out: dict[str, float] = {}
    cm = confusion_matrix(y, pred, labels=labels)
    per_class: dict[str, list[float]] = {m: [] for m in ("auroc", "auprc", "sensitivity", "specificity")}
    for k, name in enumerate(classes):
        yk = (y == k).astype(np.int64)
        both = 0 < yk.sum() < yk.size
        tp = cm[k, k]
        fn = cm[k].sum() - tp
        fp = cm[:, k].sum() - tp
        tn = cm.sum() - tp - fn - fp
        values = {
            "auroc": roc_auc_score(yk, probs[:, k]) if both else _undefined(f"AUROC of {name!r}", "class absent"),
            "auprc": average_precision_score(yk, probs[:, k]) if both else float("nan"),
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        }
        for metric, value in values.items():
            per_class[metric].append(float(value))
            out[f"{metric}_{name}"] = float(value)
    f1s = f1_score(y, pred, labels=labels, average=None, zero_division=0.0)
    for name, value in zip(classes, f1s, strict=True):
        out[f"f1_{name}"] = float(value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true": handled below
        balanced = float(balanced_accuracy_score(y, pred))
    head = {
        "auroc": float(np.nanmean(per_class["auroc"])) if np.isfinite(per_class["auroc"]).any() else float("nan"),
        "auprc": float(np.nanmean(per_class["auprc"])) if np.isfinite(per_class["auprc"]).any() else float("nan"),
        "balanced_accuracy": balanced,
        "f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0.0)),
        "sensitivity": balanced,  # macro recall over the classes present, as balanced accuracy defines it
        "specificity": float(np.nanmean(per_class["specificity"])),
        "brier": float(brier_score_loss(y, probs, labels=labels)),
    }
    return {**head, **out}


def _multilabel(y: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float) -> dict[str, float]:
    per_label: dict[str, list[float]] = {m: [] for m in (*METRICS,)}
    out: dict[str, float] = {}
    for k, name in enumerate(classes):
        known = y[:, k] >= 0
        yk, pk = y[known, k], probs[known, k]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            values = _binary(yk, pk, threshold)
        if not 0 < yk.sum() < yk.size:
            _undefined(f"AUROC of label {name!r}", "only one value present")
        values["ece"] = expected_calibration_error(yk, np.column_stack([1 - pk, pk]))
        for metric, value in values.items():
            per_label[metric].append(float(value))
            out[f"{metric}_{name}"] = float(value)
    head = {m: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for m, v in per_label.items()}
    return {**head, **out}


def score(
    frame: pd.DataFrame,
    classes: Sequence[str],
    *,
    level: Level = "patient",
    threshold: float | None = None,
    n_bins: int = DEFAULT_BINS,
    aggregate: str = "mean",
) -> dict[str, float]:
    """Point metrics of a predictions frame at ``level`` (fast enough to run every epoch).

    Parameters
    ----------
    frame
        A predictions frame (see :mod:`clinical.evaluation.predictions`); rows
        with an unknown label are ignored.
    classes
        Class names in class-index order.
    level
        ``"patient"`` (default), ``"study"`` or ``"series"`` (a whole slide) combine item
        probabilities first; ``"item"`` scores items as they are.
    threshold
        Operating point on ``prob_1`` (binary) or on every label (multi-label),
        usually from :func:`choose_threshold` on validation data; 0.5 when None.
        Must be None for multi-class tasks (argmax).
    n_bins
        Bins of the expected calibration error.
    aggregate
        How a patient's (study's) item probabilities become its probability at ``level="patient"``
        (``"study"``): one of :data:`clinical.evaluation.predictions.AGGREGATIONS` — ``"mean"`` (default),
        ``"median"``, ``"max"`` (a finding seen on any slice) or ``"top3"``/``"top10"`` (the mean of the
        highest, for a finding on a few tiles of a slide). Ignored at item level.

    Returns
    -------
    dict[str, float]
        :data:`METRICS` (``auroc, auprc, balanced_accuracy, f1, sensitivity,
        specificity, brier, ece``), per-class values ``<metric>_<class>`` for
        multi-class and multi-label tasks, ``n`` (units scored) and ``threshold``
        (binary and multi-label).

    Raises
    ------
    PredictionsError
        The frame breaks the contract, or no unit has a known label.
    ConfigurationError
        ``level`` or ``threshold`` is not allowed.
    """
    classes = list(classes)
    frame = aggregate_items(frame, classes, level=level, how=aggregate)
    multilabel = is_multilabel(frame)
    t = check_threshold(threshold, len(classes), multilabel)
    y = labels_array(frame, len(classes))
    probs = probs_array(frame, len(classes))
    known = (y >= 0).any(axis=1) if multilabel else y >= 0
    if not known.any():
        raise PredictionsError(f"no {level} has a known label; nothing to score.")
    y, probs = y[known], probs[known]
    if multilabel:
        out = _multilabel(y, probs, classes, t)
    elif len(classes) == 2:
        out = _binary(y, probs[:, 1], t)
        out["ece"] = expected_calibration_error(y, probs, n_bins=n_bins)
    else:
        out = _multiclass(y, probs, classes)
        out["ece"] = expected_calibration_error(y, probs, n_bins=n_bins)
    out = {m: float(out[m]) for m in METRICS} | {k: float(v) for k, v in out.items() if k not in METRICS}
    out["n"] = float(known.sum())
    if multilabel or len(classes) == 2:
        out["threshold"] = t
    return out


def choose_threshold(
    val_frame: pd.DataFrame,
    classes: Sequence[str],
    *,
    level: Level = "patient",
    method: Literal["youden", "sensitivity", "specificity"] = "youden",
    target: float = 0.9,
    aggregate: str = "mean",
) -> float:
    """Choose the operating point on validation data (binary tasks).

    Parameters
    ----------
    val_frame
        Validation predictions; never the test set.
    classes
        Two class names; the positive class is index 1.
    level
        Level at which the clinic decides (probabilities are averaged first).
    method
        ``"youden"`` maximises sensitivity + specificity − 1 (Youden's J);
        ``"sensitivity"`` takes the highest threshold whose sensitivity reaches
        ``target`` (screening: miss few positives, then be as specific as possible);
        ``"specificity"`` the lowest threshold whose specificity reaches ``target``.
    target
        Required sensitivity or specificity in (0, 1].
    aggregate
        How items become one probability per patient (study), as the test metrics will combine them.

    Returns
    -------
    float
        A threshold on ``prob_1`` in [0, 1]: predict positive when ``prob_1 >= threshold``.

    Raises
    ------
    ConfigurationError
        Not a binary task, or ``method``/``target`` not allowed.
    PredictionsError
        The validation data hold only one class.
    """
    classes = list(classes)
    if method not in ("youden", "sensitivity", "specificity"):
        raise ConfigurationError(f"method must be 'youden', 'sensitivity' or 'specificity'; got {method!r}.")
    if not 0.0 < target <= 1.0:
        raise ConfigurationError(f"target must be in (0, 1]; got {target!r}.")
    frame = aggregate_items(val_frame, classes, level=level, how=aggregate)
    if len(classes) != 2 or is_multilabel(frame):
        raise ConfigurationError(f"choose_threshold needs a binary task; got classes {classes}.")
    y = labels_array(frame, 2)
    p = probs_array(frame, 2)[:, 1]
    y, p = y[y >= 0], p[y >= 0]
    if not 0 < y.sum() < y.size:
        raise PredictionsError(f"the validation {level}s hold only one class; no operating point can be chosen.")
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    thresholds = np.clip(thresholds, 0.0, 1.0)  # the first threshold is +inf: "predict nobody positive"
    if method == "youden":
        best = int(np.argmax(tpr - fpr))
    elif method == "sensitivity":
        best = int(np.flatnonzero(tpr >= target - 1e-12)[0])
    else:
        best = int(np.flatnonzero(1.0 - fpr >= target - 1e-12)[-1])
    threshold = float(thresholds[best])
    logger.info(
        "operating point (%s): threshold %.4f, sensitivity %.3f, specificity %.3f on %d validation %ss",
        method,
        threshold,
        tpr[best],
        1.0 - fpr[best],
        y.size,
        level,
    )
    return threshold

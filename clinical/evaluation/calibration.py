"""Calibration: expected calibration error, reliability-diagram data, temperature scaling.

A probability of 0.8 should come true 80 % of the time; clinicians read
probabilities, not ranks. Temperature scaling (Guo et al., 2017) divides the
logits by one scalar fitted on the validation set: it fixes over-confidence
without changing the predicted class (nor, for binary tasks, the ranking and
so the AUROC).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression

from clinical.errors import ConfigurationError, PredictionsError
from clinical.evaluation.predictions import (
    Level,
    is_multilabel,
    labels_array,
    prob_columns,
    probs_array,
)
from clinical.evaluation.predictions import aggregate as aggregate_items
from clinical.stats import bin_edges, calibration_error

__all__ = [
    "DEFAULT_BINS",
    "apply_temperature",
    "calibration_slope_intercept",
    "confidence_and_outcome",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_table",
]

logger = logging.getLogger(__name__)

#: Equal-width probability bins for ECE and the reliability diagram.
DEFAULT_BINS = 10

#: Temperatures are searched in this range (log-space); outside it the model is broken, not miscalibrated.
_TEMPERATURE_BOUNDS = (0.05, 20.0)

#: Probabilities are clipped here before taking logs, so that a hard 0 does not become -inf.
_PROB_FLOOR = 1e-12


def confidence_and_outcome(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The probability that is calibrated, and whether it came true.

    Binary (2 columns): the positive-class probability and the label.
    Multi-class: the top-label confidence and whether the top label was right.
    """
    if probs.shape[1] == 2:
        return probs[:, 1], (y == 1).astype(np.float64)
    return probs.max(axis=1), (probs.argmax(axis=1) == y).astype(np.float64)


def expected_calibration_error(
    y: np.ndarray, probs: np.ndarray, *, n_bins: int = DEFAULT_BINS, weights: np.ndarray | None = None
) -> float:
    """Expected calibration error: the bin-size-weighted mean gap between confidence and accuracy.

    Parameters
    ----------
    y
        Integer class index per row, shape (N,).
    probs
        Probabilities, shape (N, C). Binary tasks use the positive-class probability;
        multi-class tasks the top-label confidence (Guo et al., 2017).
    n_bins
        Equal-width bins on [0, 1].
    weights
        Optional non-negative weight per row (bootstrap multiplicities).

    Returns
    -------
    float
        ECE in [0, 1]; NaN for zero total weight.
    """
    confidence, outcome = confidence_and_outcome(np.asarray(y), np.asarray(probs, dtype=np.float64))
    return float(calibration_error(confidence, outcome, weights, n_bins=n_bins)[0])


def reliability_table(
    frame: pd.DataFrame,
    classes: Sequence[str],
    *,
    level: Level = "patient",
    n_bins: int = DEFAULT_BINS,
    strategy: str = "uniform",
    aggregate: str = "mean",
) -> pd.DataFrame:
    """Data for a reliability diagram, from :func:`sklearn.calibration.calibration_curve`.

    At patient (study) level the items are first combined by ``aggregate`` (``"mean"``, ``"median"``
    or ``"max"``): a max over slices is calibrated differently from their mean.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``prob_pred`` (mean predicted probability),
        ``prob_true`` (observed frequency) and ``count`` (units in the bin). Binary
        tasks use the positive-class probability; multi-class tasks the top-label
        confidence against top-label correctness.
    """
    frame = aggregate_items(frame, classes, level=level, how=aggregate)
    if is_multilabel(frame):
        raise ConfigurationError("reliability_table supports single-label tasks; pass one label's frame at a time.")
    y = labels_array(frame, len(classes))
    known = y >= 0
    confidence, outcome = confidence_and_outcome(y[known], probs_array(frame, len(classes))[known])
    if len(np.unique(outcome)) < 2:
        raise PredictionsError(
            f"a reliability diagram needs both outcomes among the {int(known.sum())} labelled {level}s; got one."
        )
    prob_true, prob_pred = calibration_curve(outcome, confidence, n_bins=n_bins, strategy=strategy)
    quantile_edges = np.percentile(confidence, np.linspace(0, 100, n_bins + 1))  # as calibration_curve makes them
    edges = bin_edges(n_bins) if strategy == "uniform" else quantile_edges
    counts = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=n_bins)  # the edge rule of bin_ids
    return pd.DataFrame({"prob_pred": prob_pred, "prob_true": prob_true, "count": counts[counts > 0]})


def calibration_slope_intercept(
    frame: pd.DataFrame, classes: Sequence[str], *, level: Level = "patient", aggregate: str = "mean"
) -> tuple[float, float]:
    """Calibration slope and intercept (Cox, 1958): the logistic fit of the outcome on the predicted log-odds.

    A slope below 1 says the predictions are too extreme (over-fitting), above 1 too timid; the
    intercept (at that slope) says whether risks are too high (< 0) or too low (> 0) overall. Perfect:
    slope 1, intercept 0. Binary tasks, the positive class, after items are combined by ``aggregate``.

    Raises
    ------
    ConfigurationError
        For a multi-class or multi-label task (there is no single log-odds to recalibrate).
    PredictionsError
        When the labelled units hold one outcome only.
    """
    frame = aggregate_items(frame, classes, level=level, how=aggregate)
    if is_multilabel(frame) or len(classes) != 2:
        raise ConfigurationError(f"Calibration slope and intercept are defined for binary tasks; got {len(classes)} "
                                 "classes.")
    y = labels_array(frame, 2)
    known = y >= 0
    p = np.clip(probs_array(frame, 2)[known, 1], _PROB_FLOOR, 1 - _PROB_FLOOR)
    if len(np.unique(y[known])) < 2:
        raise PredictionsError(f"a calibration slope needs both outcomes among the {int(known.sum())} labelled "
                               f"{level}s; got one.")
    fit = LogisticRegression(C=np.inf).fit(np.log(p / (1 - p))[:, None], y[known])
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def _as_log_probs(values: np.ndarray) -> np.ndarray:
    """Logits as given, or log-probabilities when every row is a probability vector.

    A temperature applied to log-probabilities equals one applied to the logits
    (softmax is shift-invariant per row), so either input works.
    """
    if values.ndim != 2 or values.shape[1] < 2:
        raise ConfigurationError(
            f"expected logits or probabilities of shape (N, C) with C >= 2; got shape {values.shape}. "
            "For a single sigmoid output, stack [-logit / 2, logit / 2] or [1 - p, p]."
        )
    if not np.all(np.isfinite(values)):
        raise ConfigurationError("logits or probabilities contain NaN or infinite values.")
    looks_like_probs = values.min() >= 0.0 and values.max() <= 1.0 and np.allclose(values.sum(axis=1), 1.0, atol=1e-3)
    return np.log(np.clip(values, _PROB_FLOOR, 1.0)) if looks_like_probs else values


def _frame_inputs(frame: pd.DataFrame, n_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    if is_multilabel(frame):
        raise ConfigurationError("temperature scaling here is for single-label (softmax) tasks; got label_k columns.")
    n_classes = n_classes or sum(c.startswith("prob_") for c in frame.columns)
    return probs_array(frame, n_classes), labels_array(frame, n_classes)


def fit_temperature(logits_or_probs: np.ndarray | pd.DataFrame, labels: np.ndarray | None = None) -> float:
    """Fit the temperature T that minimises the validation negative log-likelihood of ``softmax(z / T)``.

    Parameters
    ----------
    logits_or_probs
        Validation logits or probabilities, shape (N, C) — probabilities are
        recognised (rows in [0, 1] summing to 1) and turned into log-probabilities —
        or a predictions frame (its ``prob_`` columns and ``label``).
    labels
        Integer class index per row, shape (N,); must be None for a frame. Rows
        with a negative label (unknown) are ignored.

    Returns
    -------
    float
        T > 1 softens over-confident predictions, T < 1 sharpens under-confident ones.

    Raises
    ------
    ConfigurationError
        Shapes disagree, labels are outside ``0 … C-1``, or no labelled row is left.
    """
    if isinstance(logits_or_probs, pd.DataFrame):
        if labels is not None:
            raise ConfigurationError("labels must be None when a predictions frame is given; they come from it.")
        values, labels = _frame_inputs(logits_or_probs, None)
    else:
        if labels is None:
            raise ConfigurationError("labels are required with an array of logits or probabilities.")
        values = np.asarray(logits_or_probs, dtype=np.float64)
    z = _as_log_probs(np.asarray(values, dtype=np.float64))
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if y.shape[0] != z.shape[0]:
        raise ConfigurationError(f"got {z.shape[0]} rows of logits but {y.shape[0]} labels.")
    known = y >= 0
    z, y = z[known], y[known]
    if y.size == 0:
        raise ConfigurationError("no labelled rows to fit a temperature on.")
    if y.max() >= z.shape[1]:
        raise ConfigurationError(f"labels must be class indices below {z.shape[1]}; got {int(y.max())}.")

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[np.arange(y.size), y].mean())

    low, high = np.log(_TEMPERATURE_BOUNDS)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    temperature = float(np.exp(result.x))
    if np.isclose(result.x, low, atol=1e-2) or np.isclose(result.x, high, atol=1e-2):
        logger.warning(
            "fitted temperature %.3g sits at the edge of the search range %s; check the model.",
            temperature,
            _TEMPERATURE_BOUNDS,
        )
    logger.info("temperature scaling: T=%.3f (NLL %.4f -> %.4f)", temperature, nll(0.0), float(result.fun))
    return temperature


def apply_temperature(logits_or_probs: np.ndarray | pd.DataFrame, temperature: float) -> np.ndarray | pd.DataFrame:
    """Return ``softmax(z / T)``: calibrated probabilities with the same ranking.

    Parameters
    ----------
    logits_or_probs
        Logits or probabilities of shape (N, C), or a predictions frame (a copy
        with its ``prob_`` columns replaced is returned).
    temperature
        From :func:`fit_temperature`; must be positive.
    """
    if not temperature > 0 or not np.isfinite(temperature):
        raise ConfigurationError(f"temperature must be a positive finite number; got {temperature!r}.")
    if isinstance(logits_or_probs, pd.DataFrame):
        values, _ = _frame_inputs(logits_or_probs, None)
        out = logits_or_probs.copy()
        out[prob_columns(values.shape[1])] = softmax(_as_log_probs(values) / temperature, axis=1)
        return out
    return softmax(_as_log_probs(np.asarray(logits_or_probs, dtype=np.float64)) / temperature, axis=1)

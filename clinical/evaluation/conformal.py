"""Split-conformal prediction sets: every class the calibration data cannot rule out at level ``1 − alpha``.

A screening programme can act on a set: ``{referable}`` or ``{non-referable}`` is a decision, both classes
mean "refer to a grader". With exchangeable calibration and test items the set holds the true class with
probability at least ``1 − alpha`` (and at most ``1 − alpha + 1/(n+1)`` without smoothing), whatever the
model. The conformal step is crepes' :class:`~crepes.ConformalClassifier` on the hinge nonconformity
``1 − p(class)``; the calibration items must be ones the model was not trained on (a validation fold).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from crepes import ConformalClassifier
from crepes.extras import hinge

from clinical.errors import ConfigurationError, PredictionsError
from clinical.evaluation.predictions import is_multilabel, labels_array, probs_array, validate_predictions

__all__ = ["SET_SIZE", "conformal_sets", "set_columns", "set_coverage"]

#: Column holding how many classes a row's set has (0 is possible at large ``alpha``).
SET_SIZE = "set_size"


def set_columns(n_classes: int) -> list[str]:
    """Names of the membership columns, ``set_0 … set_{C-1}`` (1 when the class is in the row's set)."""
    return [f"set_{k}" for k in range(n_classes)]


def conformal_sets(
    calibration: pd.DataFrame,
    frame: pd.DataFrame,
    classes: Sequence[str],
    *,
    alpha: float = 0.1,
    smoothing: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """``frame`` with the conformal set of every row at level ``1 − alpha``, calibrated on ``calibration``.

    Parameters
    ----------
    calibration
        Item-level predictions of held-out, labelled items (rows with unknown labels are left out).
    frame
        The predictions to give sets to (e.g. the test fold).
    classes
        Class names in class-index order.
    alpha
        Allowed miscoverage in (0, 1): 0.1 asks for sets that hold the truth 90 % of the time.
    smoothing
        Randomised p-values (coverage exactly ``1 − alpha`` on average, seeded by ``seed``); without them the
        sets are conservative.

    Returns
    -------
    pandas.DataFrame
        A copy of ``frame`` with ``set_0 … set_{C-1}`` (0/1) and :data:`SET_SIZE`.

    Raises
    ------
    ConfigurationError
        ``alpha`` outside (0, 1), or a multi-label task (sets are for exclusive classes).
    PredictionsError
        A frame breaks the predictions contract, or the calibration has no labelled row.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ConfigurationError(f"alpha must be a number in (0, 1), e.g. 0.1 for 90 % sets; got {alpha!r}.")
    classes = list(classes)
    calibration = validate_predictions(calibration, classes)
    frame = validate_predictions(frame, classes)
    if is_multilabel(calibration) or is_multilabel(frame):
        raise ConfigurationError("conformal sets need exclusive classes (one label column); this task is multi-label.")
    n_classes = len(classes)
    y = labels_array(calibration, n_classes)
    known = y >= 0
    if not known.any():
        raise PredictionsError("the calibration frame has no labelled row; conformal sets need labelled items.")
    scores = hinge(probs_array(calibration, n_classes)[known], np.arange(n_classes), y[known])
    conformal = ConformalClassifier().fit(scores, seed=seed)
    sets = conformal.predict_set(hinge(probs_array(frame, n_classes)), confidence=1.0 - float(alpha),
                                 smoothing=smoothing, seed=seed)
    out = frame.copy()
    out[set_columns(n_classes)] = np.asarray(sets, dtype=np.int64)
    out[SET_SIZE] = out[set_columns(n_classes)].sum(axis=1)
    return out


def set_coverage(frame: pd.DataFrame, n_classes: int) -> float:
    """Share of labelled rows whose true class is in their set (the empirical coverage)."""
    y = labels_array(frame, n_classes)
    known = y >= 0
    if not known.any():
        raise PredictionsError("no row has a known label; coverage is undefined.")
    members = frame[set_columns(n_classes)].to_numpy()[known]
    return float(members[np.arange(int(known.sum())), y[known]].mean())

"""Screening at eye and patient level: a patient is referable when either eye is.

Eyes of one patient carry their own labels, so :func:`clinical.evaluation.aggregate` (which needs one label
per patient) does not apply; and its ``max`` renormalises both class columns, which is not "the worse eye".
Here a patient's label is the highest of its eyes' and its ``prob_1`` the highest ``prob_1``: the patient
is referred when the worse eye is. Both levels get patient-bootstrap CIs (at eye level the bootstrap
resamples patients with both their eyes).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from clinical.errors import ConfigurationError
from clinical.evaluation.bootstrap import evaluate
from clinical.evaluation.predictions import is_multilabel, validate_predictions
from clinical.evaluation.report import Report

__all__ = ["screen", "worse_eye"]


def worse_eye(frame: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """One row per patient: the highest label and the highest ``prob_1`` of its items (eyes), and ``n_items``.

    Raises
    ------
    ConfigurationError
        Unless the task is binary single-label (referable or not).
    """
    classes = list(classes)
    frame = validate_predictions(frame, classes)
    if len(classes) != 2 or is_multilabel(frame):
        raise ConfigurationError(f"screening needs a binary task (negative, positive); got classes {classes}.")
    grouped = frame.groupby("patient_key", sort=True, observed=True)
    out = grouped.agg(label=("label", "max"), prob_1=("prob_1", "max"), n_items=("prob_1", "size"))
    if "site" in frame.columns:
        out["site"] = grouped["site"].agg(lambda s: "+".join(sorted(set(s.dropna()))))
    out["prob_0"] = 1.0 - out["prob_1"]
    out = out.reset_index()
    out["item_id"] = out["patient_key"]
    return out


def screen(
    frame: pd.DataFrame, classes: Sequence[str], *, threshold: float | None = None, n_boot: int = 2000, seed: int = 0
) -> dict[str, Report]:
    """Metrics with patient-bootstrap CIs per eye (``"eye"``) and per patient, worse eye (``"patient"``)."""
    return {
        "eye": evaluate(frame, classes, level="item", threshold=threshold, n_boot=n_boot, seed=seed),
        "patient": evaluate(worse_eye(frame, classes), classes, level="item", threshold=threshold, n_boot=n_boot,
                            seed=seed),
    }

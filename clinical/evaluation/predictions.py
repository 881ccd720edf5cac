"""The predictions frame: the contract between the training engine and evaluation.

One row per item (image, slice, volume, tile) with the columns

``item_id, patient_key, study_key, series_key, site``
    identifiers copied from the cohort manifest (keyed hashes, never PHI); a
    series is a DICOM series, or one whole slide whose tiles are the items;
``label``
    integer class index, ``<NA>`` when unknown (single-label tasks), or
``label_0 … label_{C-1}``
    0/1 columns instead of ``label`` (multi-label tasks);
``prob_0 … prob_{C-1}``
    class probabilities in class-index order (rows sum to 1 for single-label
    tasks; independent per-label probabilities for multi-label tasks).

Class names travel separately as ``classes: list[str]``. Clinics decide per
patient, per study or per slide, so metrics are computed after :func:`aggregate`
has combined the items of each patient (study, series).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from clinical.errors import ConfigurationError, PredictionsError

__all__ = [
    "AGGREGATIONS",
    "LEVELS",
    "LEVEL_KEYS",
    "Level",
    "aggregate",
    "check_level",
    "is_multilabel",
    "label_columns",
    "labels_array",
    "prob_columns",
    "probs_array",
    "validate_predictions",
]

logger = logging.getLogger(__name__)

Level = Literal["patient", "study", "series", "item"]

#: Levels at which metrics can be computed, and the column that identifies one unit at each.
LEVEL_KEYS: dict[str, str] = {
    "patient": "patient_key", "study": "study_key", "series": "series_key", "item": "item_id"
}
LEVELS = tuple(LEVEL_KEYS)

#: How item probabilities are combined into one per patient, study or series; ``top<k>`` is the mean of the
#: k highest (of all items when a unit has fewer), between the mean and the max: a slide whose finding covers
#: a few tiles is not averaged away, and one odd tile does not decide it.
AGGREGATIONS = ("mean", "median", "max", "top3", "top10")

#: Probabilities of a single-label row must sum to 1 within this tolerance (float32 softmax outputs).
_SUM_TOLERANCE = 1e-3


def prob_columns(n_classes: int) -> list[str]:
    """Names of the probability columns, ``prob_0 … prob_{C-1}``."""
    return [f"prob_{k}" for k in range(n_classes)]


def label_columns(n_classes: int) -> list[str]:
    """Names of the multi-label target columns, ``label_0 … label_{C-1}``."""
    return [f"label_{k}" for k in range(n_classes)]


def is_multilabel(frame: pd.DataFrame) -> bool:
    """True when targets are ``label_0 …`` 0/1 columns rather than one ``label`` column."""
    return "label" not in frame.columns and "label_0" in frame.columns


def _check_classes(classes: Sequence[str]) -> list[str]:
    classes = list(classes)
    if len(classes) < 2:
        raise ConfigurationError(
            f"classes must name at least 2 classes in class-index order; got {len(classes)}. "
            "A binary task has classes like ['negative', 'positive']."
        )
    if len(set(classes)) != len(classes):
        raise ConfigurationError(f"classes must be unique; got {classes}.")
    return classes


def check_level(level: str) -> str:
    """Raise :class:`ConfigurationError` unless ``level`` is one of :data:`LEVELS`."""
    if level not in LEVEL_KEYS:
        raise ConfigurationError(f"level must be one of {list(LEVELS)}; got {level!r}.")
    return level


def validate_predictions(frame: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Check a predictions frame against the contract and return it with clean dtypes.

    ``patient_key`` and the probability columns are required; ``item_id``,
    ``study_key``, ``series_key`` and ``site`` are required only by the functions that use them
    (an aggregated frame has no ``item_id``).

    Parameters
    ----------
    frame
        One row per item (or per patient/study after :func:`aggregate`).
    classes
        Class names in class-index order; ``len(classes)`` probability columns are expected.

    Returns
    -------
    pandas.DataFrame
        A copy with probabilities as float64, ``label`` as nullable ``Int64`` (or
        ``label_k`` as ``Int64``) and identifier columns as strings.

    Raises
    ------
    PredictionsError
        A required column is missing, a probability is outside [0, 1] or NaN, a
        single-label row does not sum to 1, or a label is outside ``0 … C-1``.
    ConfigurationError
        ``classes`` has fewer than 2 or duplicate names.
    """
    classes = _check_classes(classes)
    n_classes = len(classes)
    if not isinstance(frame, pd.DataFrame):
        raise PredictionsError(f"predictions must be a pandas DataFrame; got {type(frame).__name__}.")
    pcols = prob_columns(n_classes)
    multilabel = is_multilabel(frame)
    lcols = label_columns(n_classes) if multilabel else ["label"]
    missing = [c for c in ["patient_key", *lcols, *pcols] if c not in frame.columns]
    if missing:
        raise PredictionsError(
            f"predictions frame lacks columns {missing} for {n_classes} classes {classes}; it has "
            f"{list(frame.columns)}. Expected patient_key, label (or label_0…label_{n_classes - 1}) and "
            f"prob_0…prob_{n_classes - 1}."
        )
    extra_probs = [c for c in frame.columns if c.startswith("prob_") and c not in pcols]
    if extra_probs:
        raise PredictionsError(
            f"predictions frame has probability columns {extra_probs} beyond the {n_classes} classes {classes}; "
            "pass the full class list."
        )
    out = frame.copy()
    for column in ("item_id", "patient_key", "study_key", "series_key", "site"):
        if column in out.columns:
            out[column] = out[column].astype("string")
    if out["patient_key"].isna().any():
        raise PredictionsError(
            f"patient_key is missing in {int(out['patient_key'].isna().sum())} rows; every item needs its patient."
        )
    probs = out[pcols].to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.all(np.isfinite(probs)):
        bad = int((~np.isfinite(probs)).any(axis=1).sum())
        raise PredictionsError(f"{bad} rows have NaN or infinite probabilities.")
    if probs.size and (probs.min() < 0.0 or probs.max() > 1.0):
        raise PredictionsError(
            f"probabilities must lie in [0, 1]; got values from {probs.min():.4g} to {probs.max():.4g}. "
            "Apply softmax (single-label) or sigmoid (multi-label) to logits first."
        )
    if not multilabel and probs.size:
        worst = float(np.abs(probs.sum(axis=1) - 1.0).max())
        if worst > _SUM_TOLERANCE:
            raise PredictionsError(
                f"probabilities of a single-label row must sum to 1; the worst row is off by {worst:.4g}. "
                "Apply softmax to logits, or give label_0… columns for a multi-label task."
            )
    out[pcols] = probs
    for column in lcols:
        try:
            labels = pd.array(out[column], dtype="Int64")
        except (TypeError, ValueError) as error:
            raise PredictionsError(
                f"column {column!r} must hold integer class indices (or <NA>); could not read it as integers ({error})."
            ) from None
        known = labels[~labels.isna()]
        upper = 1 if multilabel else n_classes - 1
        if len(known) and (known.min() < 0 or known.max() > upper):
            raise PredictionsError(
                f"column {column!r} must hold values in 0…{upper}; got values from {known.min()} to {known.max()}."
            )
        out[column] = labels
    return out


def labels_array(frame: pd.DataFrame, n_classes: int) -> np.ndarray:
    """Targets as an int array: shape (N,) for single-label, (N, C) for multi-label; -1 where unknown."""
    cols = label_columns(n_classes) if is_multilabel(frame) else ["label"]
    values = frame[cols].astype("Int64").fillna(-1).to_numpy(dtype=np.int64)
    return values if is_multilabel(frame) else values[:, 0]


def probs_array(frame: pd.DataFrame, n_classes: int) -> np.ndarray:
    """Probabilities as a float64 array of shape (N, C)."""
    return frame[prob_columns(n_classes)].to_numpy(dtype=np.float64)


def aggregate(
    frame: pd.DataFrame,
    classes: Sequence[str] | None = None,
    *,
    level: Level = "patient",
    how: str = "mean",
) -> pd.DataFrame:
    """Combine item predictions into one row per patient, study or series (a whole slide).

    Clinics decide per patient (or per study, per slide), and items of one patient
    are not independent, so metrics at those levels combine the items first.

    Parameters
    ----------
    frame
        A predictions frame (see the module docstring).
    classes
        Class names; when None, the number of ``prob_`` columns decides.
    level
        ``"patient"`` groups by ``patient_key``, ``"study"`` by ``study_key`` and
        ``"series"`` by ``series_key`` (both keeping ``patient_key`` for the cluster
        bootstrap), ``"item"`` returns the validated frame unchanged.
    how
        ``"mean"`` (default), ``"median"``, ``"max"`` or ``"top<k>"`` (the mean of the k
        highest) of the probabilities. A binary task combines the positive class and takes
        its complement, so ``max`` is the most suspicious item's probability (a patient with
        one eye at 0.8 and one at 0.4 is 0.8). Multi-class single-label tasks combine each
        class and renormalise to sum to 1; multi-label tasks combine each label alone.

    Returns
    -------
    pandas.DataFrame
        One row per unit with ``patient_key`` (and ``study_key`` or ``series_key``),
        ``site``, the label column(s), the probability columns and ``n_items``.
        A unit's label is its known label; unknown (``<NA>``) items do not conflict.
        A unit whose items come from several sites gets the sites joined by ``+``.

    Raises
    ------
    PredictionsError
        The items of one unit carry different known labels, a study or series
        spans several patients, or the grouping column is missing.
    ConfigurationError
        ``level`` or ``how`` is not one of the allowed values.
    """
    check_level(level)
    if how not in AGGREGATIONS:
        raise ConfigurationError(f"how must be one of {list(AGGREGATIONS)}; got {how!r}.")
    if classes is None:
        classes = [str(k) for k in range(sum(c.startswith("prob_") for c in frame.columns))]
    frame = validate_predictions(frame, classes)
    n_classes = len(classes)
    key = LEVEL_KEYS[level]
    if key not in frame.columns:
        raise PredictionsError(f"level={level!r} needs a {key!r} column; the frame has {list(frame.columns)}.")
    if level == "item":
        return frame
    multilabel = is_multilabel(frame)
    lcols = label_columns(n_classes) if multilabel else ["label"]
    pcols = prob_columns(n_classes)
    grouped = frame.groupby(key, sort=True, observed=True)

    for column in lcols:
        distinct = grouped[column].nunique(dropna=True)
        conflicting = int((distinct > 1).sum())
        if conflicting:
            raise PredictionsError(
                f"{conflicting} {level}(s) have items with different known values in {column!r}; a {level}-level "
                f"metric needs one label per {level}. Fix the labels in the cohort, or evaluate at a finer level "
                "(study, series or item)."
            )
    binary = not multilabel and n_classes == 2 and how != "mean"
    combined = pcols[1:] if binary else pcols
    out = grouped[combined].agg(_top_mean(int(how[3:]))) if how.startswith("top") else grouped[combined].agg(how)
    if binary:
        out.insert(0, pcols[0], 1.0 - out[pcols[1]])
    elif not multilabel and how != "mean":
        out[pcols] = out[pcols].to_numpy() / out[pcols].to_numpy().sum(axis=1, keepdims=True)
    for column in lcols:
        out[column] = grouped[column].first().astype("Int64")  # first() skips <NA>; labels agree (checked above)
    out["n_items"] = grouped.size().astype("int64")
    if level in ("study", "series"):
        patients = grouped["patient_key"].nunique()
        if (patients > 1).any():
            raise PredictionsError(
                f"{int((patients > 1).sum())} {level} units span several patients; {key} must identify one "
                f"{level} of one patient."
            )
        out["patient_key"] = grouped["patient_key"].first()
    if "site" in frame.columns:
        sites = grouped["site"].agg(lambda s: "+".join(sorted(set(s.dropna()))))
        mixed = int(sites.str.contains("+", regex=False).sum())
        if mixed:
            logger.warning(
                "%d %s(s) have items from more than one site; their site is the sites joined by '+'.", mixed, level
            )
        out["site"] = sites.astype("string")
    out = out.reset_index()
    front = [key] + (["patient_key"] if level != "patient" else []) + (["site"] if "site" in out.columns else [])
    out = out[front + lcols + pcols + ["n_items"]]
    out[key] = out[key].astype("string")
    out["patient_key"] = out["patient_key"].astype("string")
    return out


def _top_mean(k: int):
    """The mean of the ``k`` highest values of a group (of all of them when it has fewer)."""

    def top_mean(values: pd.Series) -> float:
        return float(np.sort(values.to_numpy())[-k:].mean())

    top_mean.__name__ = f"top{k}"
    return top_mean

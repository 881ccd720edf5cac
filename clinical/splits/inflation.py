"""What a slice-level (item-level) split would have cost: the AUROC it adds over a patient-level split.

The same quick model — a logistic regression on standardised downsampled
pixels — is cross-validated twice with the same folds count and seed: once
with folds that keep patients together and once with folds that scatter
items regardless of patient. Both use :func:`clinical.splits.split_manifest`;
the item-level one simply treats every item as its own patient. Each item
gets an out-of-fold probability under each split, so the two AUROCs are
paired, and the difference's confidence interval comes from resampling
patients (the unit that is independent), not items: the cluster bootstrap
and the AUROC of :mod:`clinical.stats`, the same as the evaluation uses.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clinical.errors import ConfigurationError
from clinical.splits.folds import fold_items, split_manifest
from clinical.stats import lost_class, macro_auroc, percentile_interval, resample_chunks

__all__ = ["leakage_inflation"]

logger = logging.getLogger(__name__)

MODEL = "logistic regression (L2, C=1) on standardised 16 × 16 central-plane pixels"


def leakage_inflation(
    features: np.ndarray,
    manifest: pd.DataFrame,
    *,
    folds: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> dict:
    """AUROC under an item-level split minus AUROC under a patient-level split, with a bootstrap CI.

    Parameters
    ----------
    features
        ``(n_items, n_features)`` one row per manifest row (e.g. ``16 × 16``
        pixels, flattened); rows of unlabelled items are ignored.
    manifest
        ``item_id, patient_key, label, site`` for the same rows.
    folds, seed
        Cross-validation folds and seed, shared by both splits.
    n_boot
        Bootstrap resamples of patients for the CI (paired: the same
        resampled patients score both splits).
    confidence
        Coverage of the percentile interval.

    Returns
    -------
    dict
        ``auroc_item_split``, ``auroc_patient_split``, ``inflation`` (their
        difference), ``ci_low``, ``ci_high``, and what was measured
        (``items``, ``patients``, ``classes``, ``n_boot_used``, ``seconds``, ``model``).
        Multi-class tasks use the macro one-vs-rest AUROC.

    Raises
    ------
    ConfigurationError
        When ``n_boot`` or ``confidence`` is out of range, the features do
        not match the manifest, or fewer than two classes are labelled.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ConfigurationError(
            f"The 'n_boot' parameter of leakage_inflation must be an int >= 1. Got {n_boot!r} instead."
        )
    if not 0 < confidence < 1:
        raise ConfigurationError(
            f"The 'confidence' parameter of leakage_inflation must be a float in the range (0, 1). "
            f"Got {confidence!r} instead."
        )
    features = np.asarray(features, dtype=float)
    if features.ndim != 2 or len(features) != len(manifest):
        raise ConfigurationError(
            f"'features' must have one row per manifest row ({len(manifest)}); got shape {features.shape}."
        )
    started = time.perf_counter()
    labelled = manifest["label"].notna().to_numpy()
    table = manifest.loc[labelled].reset_index(drop=True)
    x = features[labelled]
    classes, y = np.unique(table["label"].to_numpy(dtype=str), return_inverse=True)
    if len(classes) < 2:
        raise ConfigurationError(f"The inflation needs at least two labelled classes; got {classes.tolist()}.")

    patient_split = split_manifest(table, folds=folds, seed=seed, val_size=0.0)
    with warnings.catch_warnings():  # one item per "patient": rare classes were already warned about above
        warnings.simplefilter("ignore", UserWarning)
        item_split = split_manifest(table.assign(patient_key=table["item_id"]), folds=folds, seed=seed, val_size=0.0)
    position = pd.Series(np.arange(len(table)), index=table["item_id"].astype(str))
    by_item = _out_of_fold(x, y, len(classes), item_split, position, folds)
    by_patient = _out_of_fold(x, y, len(classes), patient_split, position, folds)

    auroc_item, auroc_patient = float(macro_auroc(y, by_item)[0]), float(macro_auroc(y, by_patient)[0])
    differences = _paired_bootstrap(table["patient_key"].to_numpy(dtype=str), y, by_item, by_patient, n_boot, seed)
    low, high = percentile_interval(differences, confidence)
    result = {
        "model": MODEL,
        "folds": folds,
        "seed": seed,
        "items": len(table),
        "patients": int(table["patient_key"].nunique()),
        "classes": classes.tolist(),
        "auroc_item_split": auroc_item,
        "auroc_patient_split": auroc_patient,
        "inflation": auroc_item - auroc_patient,
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "n_boot": n_boot,
        "n_boot_used": len(differences),
        "seconds": round(time.perf_counter() - started, 2),
    }
    logger.info(
        "Item-level split AUROC %.3f, patient-level %.3f: inflation %+.3f (%.0f%% CI %+.3f to %+.3f).",
        auroc_item,
        auroc_patient,
        result["inflation"],
        100 * confidence,
        low,
        high,
    )
    return result


def _out_of_fold(
    x: np.ndarray, y: np.ndarray, n_classes: int, split: pd.DataFrame, position: pd.Series, folds: int
) -> np.ndarray:
    """Probability of each class for each item, from the fold in which it was tested."""
    proba = np.zeros((len(y), n_classes))
    for fold in range(folds):
        parts = fold_items(split, fold)
        train, test = position[parts["train"]].to_numpy(), position[parts["test"]].to_numpy()
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(x[train], y[train])
        proba[np.ix_(test, model[-1].classes_)] = model.predict_proba(x[test])
    return proba


def _paired_bootstrap(
    patients: np.ndarray, y: np.ndarray, by_item: np.ndarray, by_patient: np.ndarray, n_boot: int, seed: int
) -> np.ndarray:
    """AUROC differences over resamples of whole patients, paired: both splits score the same resample.

    Resamples missing a class have no AUROC and are skipped.
    """
    parts = []
    for weights in resample_chunks(patients, n_boot, np.random.default_rng(seed)):
        kept = weights[~lost_class(y, weights)]
        parts.append(macro_auroc(y, by_item, kept) - macro_auroc(y, by_patient, kept))
    differences = np.concatenate(parts)
    if len(differences) < n_boot:
        logger.warning(
            "%d of %d bootstrap resamples lacked a class and were skipped.", n_boot - len(differences), n_boot
        )
    return differences

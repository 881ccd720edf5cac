"""What a slice-level (item-level) split would have cost: the AUROC it adds over a patient-level split.

One model — a quick logistic regression on standardised downsampled pixels
here, or the study's own recipe (:func:`clinical.workflows.trained_inflation`,
which reports through :func:`combine_inflation`) — is cross-validated twice with the same folds count and seed: once
with folds that keep patients together and once with folds that scatter
items regardless of patient. Both use :func:`clinical.splits.split_manifest`;
the item-level one simply treats every item as its own patient. Each item
gets an out-of-fold probability under each split, so the two AUROCs are
paired, and the difference's variance comes from resampling patients (the
unit that is independent), not items: the cluster bootstrap and the AUROC of
:mod:`clinical.stats`, the same as the evaluation uses.

One split is one draw of a random procedure: another seed moves patients
between folds and changes the difference. The audit therefore repeats both
splits over ``n_seeds`` seeds and combines them: the mean difference, with
variance ``W + B / m`` — ``W`` the bootstrap variance of the mean over seeds
(every seed scored on the same patient resamples), ``B`` the variance
between the ``m`` seeds — and a t interval on Satterthwaite's degrees of
freedom. With one seed the interval ignored the split's variability and
excluded 0 in 11.7 % of null runs at a nominal 5 % (see
``docs/statistics.md`` for what the combined interval gives).
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pandas as pd
from scipy.stats import t as student_t
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clinical.errors import ConfigurationError
from clinical.splits.folds import fold_items, split_manifest
from clinical.stats import lost_class, macro_auroc, resample_chunks

__all__ = ["check_inflation_options", "combine_inflation", "leakage_inflation", "paired_splits"]

logger = logging.getLogger(__name__)

MODEL = "logistic regression (L2, C=1) on standardised 16 × 16 central-plane pixels"
#: Split seeds the audit repeats both splits over, by default.
N_SEEDS = 5


def leakage_inflation(
    features: np.ndarray,
    manifest: pd.DataFrame,
    *,
    folds: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    confidence: float = 0.95,
    n_seeds: int = N_SEEDS,
) -> dict:
    """AUROC under an item-level split minus AUROC under a patient-level split, over split seeds, with a CI.

    The quick model: a logistic regression on ``features``. To measure the inflation with the
    recipe a study deploys (its CNN), use :func:`clinical.workflows.trained_inflation`, which trains
    that recipe under both splits and reports through :func:`combine_inflation` as this does.

    Parameters
    ----------
    features
        ``(n_items, n_features)`` one row per manifest row (e.g. ``16 × 16``
        pixels, flattened); rows of unlabelled items are ignored.
    manifest
        ``item_id, patient_key, label, site`` for the same rows.
    folds, seed
        Cross-validation folds, and the first split seed (the others follow
        it: ``seed, seed + 1, …``), each shared by both splits.
    n_boot
        Bootstrap resamples of patients per seed for the within-seed
        variance (paired: the same resampled patients score both splits).
    confidence
        Coverage of the interval.
    n_seeds
        Split seeds to repeat over (``m`` above); 1 reproduces a single
        split but its interval then ignores the split's variability.

    Returns
    -------
    dict
        ``auroc_item_split``, ``auroc_patient_split`` (means over seeds),
        ``inflation`` (their difference), ``ci_low``, ``ci_high``, how the
        interval was made (``within_variance``, ``between_variance``, ``df``,
        ``per_seed`` values), and what was measured (``items``, ``patients``,
        ``classes``, ``n_boot_used``, ``seconds``, ``model``). Multi-class
        tasks use the macro one-vs-rest AUROC.

    Raises
    ------
    ConfigurationError
        When ``n_boot``, ``n_seeds`` or ``confidence`` is out of range, the features do
        not match the manifest, or fewer than two classes are labelled.
    """
    check_inflation_options(n_boot=n_boot, n_seeds=n_seeds, confidence=confidence)
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
    position = pd.Series(np.arange(len(table)), index=table["item_id"].astype(str))
    per_seed = []
    for split_seed in range(seed, seed + n_seeds):
        item_split, patient_split = paired_splits(table, folds=folds, seed=split_seed, val_size=0.0)
        per_seed.append((split_seed, *(_out_of_fold(x, y, len(classes), split, position, folds)
                                       for split in (item_split, patient_split))))
    result = combine_inflation(table["patient_key"].to_numpy(dtype=str), y, per_seed, n_boot=n_boot, seed=seed,
                               confidence=confidence)
    return {"model": MODEL, "folds": folds, "seed": seed, "items": len(table),
            "patients": int(table["patient_key"].nunique()), "classes": classes.tolist(), **result,
            "seconds": round(time.perf_counter() - started, 2)}


def check_inflation_options(*, n_boot: int, n_seeds: int, confidence: float) -> None:
    """Raise :class:`ConfigurationError` unless the audit's options are in range."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ConfigurationError(
            f"The 'n_boot' parameter of leakage_inflation must be an int >= 1. Got {n_boot!r} instead."
        )
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ConfigurationError(
            f"The 'n_seeds' parameter of leakage_inflation must be an int >= 1. Got {n_seeds!r} instead."
        )
    if not 0 < confidence < 1:
        raise ConfigurationError(
            f"The 'confidence' parameter of leakage_inflation must be a float in the range (0, 1). "
            f"Got {confidence!r} instead."
        )


def paired_splits(
    table: pd.DataFrame, *, folds: int, seed: int, val_size: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(item-level split, patient-level split)`` of the labelled ``table`` with the same folds count and seed.

    The item-level split is :func:`split_manifest` with every item as its own patient: what a
    slice-level study does.
    """
    patient_split = split_manifest(table, folds=folds, seed=seed, val_size=val_size)
    with warnings.catch_warnings():  # one item per "patient": rare classes were already warned about above
        warnings.simplefilter("ignore", UserWarning)
        item_split = split_manifest(table.assign(patient_key=table["item_id"]), folds=folds, seed=seed,
                                    val_size=val_size)
    return item_split, patient_split


def combine_inflation(
    patients: np.ndarray,
    y: np.ndarray,
    per_seed: list[tuple[int, np.ndarray, np.ndarray]],
    *,
    n_boot: int,
    seed: int,
    confidence: float,
) -> dict:
    """The inflation and its interval from out-of-fold probabilities under both splits, one pair per split seed.

    Parameters
    ----------
    patients, y
        Patient key and class index of every labelled item, shape (N,).
    per_seed
        ``(split seed, item-split probabilities, patient-split probabilities)``, each (N, C), rows as ``y``.
    n_boot, seed, confidence
        Patient resamples per split seed (paired), their seed, and the interval's coverage.

    Returns
    -------
    dict
        The statistics part of :func:`leakage_inflation`'s result.
    """
    rows: list[dict] = []
    resampled: list[np.ndarray] = []
    for split_seed, by_item, by_patient in per_seed:
        auroc_item, auroc_patient = float(macro_auroc(y, by_item)[0]), float(macro_auroc(y, by_patient)[0])
        rows.append({"seed": split_seed, "auroc_item_split": auroc_item, "auroc_patient_split": auroc_patient,
                     "inflation": auroc_item - auroc_patient})
        resampled.append(_paired_bootstrap(patients, y, by_item, by_patient, n_boot, seed))  # the same resamples
    inflation, low, high, within, between, df = _combine(
        np.array([s["inflation"] for s in rows]), np.mean(resampled, axis=0), confidence
    )
    auroc_item = float(np.mean([s["auroc_item_split"] for s in rows]))
    auroc_patient = float(np.mean([s["auroc_patient_split"] for s in rows]))
    logger.info(
        "Item-level split AUROC %.3f, patient-level %.3f: inflation %+.3f (%.0f%% CI %+.3f to %+.3f, %d seeds).",
        auroc_item, auroc_patient, inflation, 100 * confidence, low, high, len(rows),
    )
    return {
        "auroc_item_split": auroc_item,
        "auroc_patient_split": auroc_patient,
        "inflation": inflation,
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "interval": "mean over split seeds; variance W + B/m, t on Satterthwaite's df",
        "n_seeds": len(rows),
        "within_variance": within,
        "between_variance": between,
        "df": df if np.isfinite(df) else None,  # None: a normal interval (one seed); JSON has no infinity
        "per_seed": rows,
        "n_boot": n_boot,
        "n_boot_used": len(resampled[0]),
    }


def _combine(
    estimates: np.ndarray, resampled_mean: np.ndarray, confidence: float
) -> tuple[float, float, float, float, float, float]:
    """``(mean, low, high, W, B, df)`` from per-seed estimates and the bootstrap of their mean.

    ``W`` is the bootstrap variance of the mean over seeds (every seed scored on the same patient
    resamples), ``B`` the variance between seeds; the interval is ``mean ± t_df sqrt(W + B / m)`` with
    Satterthwaite's ``df`` (infinite, a normal interval, for one seed or seeds that agree exactly).
    """
    m = len(estimates)
    mean = float(estimates.mean())
    within = float(np.var(resampled_mean, ddof=1)) if len(resampled_mean) > 1 else 0.0
    between = float(estimates.var(ddof=1)) if m > 1 else 0.0
    extra = between / m
    df = float("inf") if extra <= 0 else (m - 1) * (1.0 + within / extra) ** 2
    half = float(student_t.ppf(0.5 + confidence / 2.0, df)) * np.sqrt(within + extra)
    return mean, mean - half, mean + half, within, between, df


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

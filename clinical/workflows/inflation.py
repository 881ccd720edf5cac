"""What a slice-level split would have cost the study's own model: its recipe trained under both splits.

:func:`clinical.splits.leakage_inflation` answers with a quick logistic
regression in seconds; a reviewer asks about the network the study deploys.
:func:`trained_inflation` cross-validates that recipe twice per split seed —
with folds that keep patients together and with folds that scatter items as a
slice-level study does — and reports the AUROC difference with the same
statistics (:func:`clinical.splits.inflation.combine_inflation`): paired over
items, resampling patients, combined over split seeds.

Training refuses a split in which a patient takes two roles, as it should. The
item-level split is trained on purpose against a copy of the manifest in
which every item is its own patient, study and series, which is exactly the
mistake being measured; the statistics use the real patients.

Files under ``out``: ``seed-<s>/<item|patient>-split/fold-<k>/`` (one fit each,
as :func:`clinical.training.fit` writes it) and ``inflation.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clinical.cohort import read_manifest
from clinical.errors import ConfigurationError
from clinical.evaluation.predictions import prob_columns
from clinical.splits.inflation import N_SEEDS, check_inflation_options, combine_inflation, paired_splits
from clinical.training import TrainConfig, fit

__all__ = ["trained_inflation"]

logger = logging.getLogger(__name__)


def trained_inflation(
    config: TrainConfig,
    *,
    cohort_dir: str | Path,
    out: str | Path,
    folds: int = 5,
    seed: int = 0,
    n_seeds: int = N_SEEDS,
    n_boot: int = 1000,
    confidence: float = 0.95,
    val_size: float = 0.2,
) -> dict:
    """Item-level minus patient-level split AUROC of the recipe ``config``, over split seeds, with a CI.

    Parameters
    ----------
    config
        The recipe to train, as for :func:`clinical.workflows.cross_validate`; its ``kind`` picks the items.
    cohort_dir
        Cohort folder (holds ``manifest.parquet``); its labelled items of ``config.kind`` are split.
    out
        Folder for the fits and ``inflation.json``.
    folds, seed, n_seeds, n_boot, confidence
        As in :func:`clinical.splits.leakage_inflation`: ``2 × folds × n_seeds`` fits in all.
    val_size
        Share of each fold's training part that validates (epoch choice), patients or items as the split has them.

    Returns
    -------
    dict
        The keys of :func:`clinical.splits.leakage_inflation`'s result, with ``model`` naming the recipe's
        network; also written to ``out/inflation.json``. The AUROC is item-level, macro one-vs-rest for
        more than two classes.

    Raises
    ------
    ConfigurationError
        An option is out of range, or the cohort has fewer than two labelled classes of ``config.kind``.
    """
    check_inflation_options(n_boot=n_boot, n_seeds=n_seeds, confidence=confidence)
    started = time.perf_counter()
    out = Path(out)
    manifest = read_manifest(cohort_dir)
    table = manifest[(manifest["kind"] == config.kind) & manifest["label"].notna()].reset_index(drop=True)
    classes = sorted(table["label"].astype(str).unique())
    if len(classes) < 2:
        raise ConfigurationError(
            f"The inflation needs at least two labelled classes of kind {config.kind!r}; got {classes}."
        )
    y = table["label"].astype(str).map({name: k for k, name in enumerate(classes)}).to_numpy()
    # every item its own patient, study and series: the mistake the item-level split makes, trained on purpose
    scattered = manifest.assign(**{key: manifest["item_id"] for key in ("patient_key", "study_key", "series_key")})
    per_seed = []
    with tqdm(total=2 * folds * n_seeds, desc="inflation audit", unit="fit", disable=None, leave=False) as bar:
        for split_seed in range(seed, seed + n_seeds):
            splits = paired_splits(table, folds=folds, seed=split_seed, val_size=val_size)
            probs = []
            for name, split, seen_as in zip(("item", "patient"), splits, (scattered, manifest), strict=True):
                fits = []
                for fold in range(folds):
                    result = fit(config, manifest=seen_as, cohort_dir=cohort_dir, split=split, fold=fold,
                                 out=out / f"seed-{split_seed}" / f"{name}-split" / f"fold-{fold}")
                    fits.append(result.test_predictions)
                    bar.update()
                probs.append(_in_table_order(pd.concat(fits, ignore_index=True), table, len(classes)))
            per_seed.append((split_seed, *probs))
    result = combine_inflation(table["patient_key"].to_numpy(dtype=str), y, per_seed, n_boot=n_boot, seed=seed,
                               confidence=confidence)
    report = {"model": f"{config.model} trained with the study's recipe ({config.schedule}, {config.epochs} epochs)",
              "folds": folds, "seed": seed, "items": len(table), "patients": int(table["patient_key"].nunique()),
              "classes": classes, **result, "seconds": round(time.perf_counter() - started, 2)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "inflation.json").write_text(json.dumps(report, indent=2))
    return report


def _in_table_order(predictions: pd.DataFrame, table: pd.DataFrame, n_classes: int) -> np.ndarray:
    """Out-of-fold probabilities (N, C) in the rows of ``table``: every item is tested once per split."""
    probs = predictions.set_index("item_id").reindex(table["item_id"])[prob_columns(n_classes)]
    missing = int(probs.isna().any(axis=1).sum())
    if missing:
        raise ConfigurationError(
            f"{missing} labelled items got no out-of-fold prediction; every fold needs a test part."
        )
    return probs.to_numpy(dtype=np.float64)

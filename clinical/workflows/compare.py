"""Federated against centralised and single-site training, scored on the pooled held-out patients.

The acceptance experiment of federated training: the same recipe trained
(1) centrally on every site's training patients, (2) on each site alone, and
(3) federated over the sites on Flower's simulation engine; each model is
scored at patient level on the test patients of all sites together.

One fold holds too few test patients to order the arms (with 36 patients the
standard error of an AUROC is near 0.08), so the experiment runs every outer
fold of the split and pools each arm's test predictions: every patient is then
tested exactly once, and the AUROC, its patient-bootstrap interval and the
paired DeLong difference are computed on all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from clinical.cohort.manifest import read_manifest
from clinical.evaluation import compare, evaluate, score
from clinical.federated.local import evaluate_site, site_part
from clinical.federated.settings import RunSettings
from clinical.federated.simulation import simulate
from clinical.models import create_model
from clinical.splits import outer_folds, read_split
from clinical.training import fit, load_checkpoint

__all__ = ["bytes_curve", "compare_training", "test_predictions"]

logger = logging.getLogger(__name__)


def bytes_curve(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per round of a federation's summary: the groups that trained and the most bytes one site sent (and share)."""
    return [{"round": r["round"], "trainable_groups": r["trainable_groups"],
             "bytes_per_site": max(r["bytes_sent"].values(), default=0),
             "fraction": r["bytes_per_site_fraction"]} for r in summary["rounds"]]


def test_predictions(
    state: dict[str, torch.Tensor], settings: RunSettings, *, manifest: pd.DataFrame, cohort_dir: str | Path,
    split: pd.DataFrame, fold: int,
) -> pd.DataFrame:
    """A model's predictions frame on the test patients of ``fold`` (every site together)."""
    config = settings.train_config
    net = create_model(config.model, spatial_dims=config.spatial_dims, in_channels=config.in_channels,
                       num_classes=len(settings.classes))
    net.load_state_dict(state)
    _, frame = evaluate_site(net, config, manifest=manifest, cohort_dir=cohort_dir, split=split, fold=fold,
                             classes=settings.classes, role="test")
    return frame


def compare_training(
    settings: RunSettings,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    sites: Sequence[str],
    out: str | Path,
    folds: Sequence[int] | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Train centrally, per site and federated with the same recipe in every fold; score the pooled test patients.

    The centralised and single-site runs train ``num_rounds × epochs`` epochs with the
    engine (same freezing schedule, a stage lasting ``unfreeze_every`` epochs), the
    federation ``num_rounds`` rounds of ``epochs`` local epochs (a stage lasting
    ``unfreeze_every`` rounds), so every model sees each training image equally often
    and starts from the same weights (the recipe's ``pretrained``). Every arm is chosen
    by the same rule: the epoch (or round) with the best validation AUROC; each arm's
    last epoch (or round) is scored too, as ``<arm>_last``.

    Parameters
    ----------
    folds
        Outer folds to run (default: all of them, so that every patient is tested once).
    n_boot
        Patient-bootstrap resamples of each pooled AUROC's interval.

    Returns
    -------
    dict
        For each arm (``centralised``, ``federated``, their ``_last`` versions) the pooled
        patient-level AUROC and ``<arm>_ci`` (95 % patient bootstrap); ``single_site``
        (site → pooled AUROC of that site's models) and ``single_site_mean`` (and ``_last``);
        ``federated_minus_centralised`` and ``federated_minus_single_site`` (site → the same):
        DeLong's paired difference on the same patients (difference, low, high, p-value);
        ``per_fold`` (each fold's AUROCs and the federation's chosen round); ``n_patients``;
        ``bytes_per_round`` (the most bytes one site sent, per round, the same in every fold)
        and ``full_model_bytes``.
    """
    out = Path(out)
    manifest = read_manifest(cohort_dir)
    split, _ = read_split(split_path)
    folds = list(folds) if folds is not None else outer_folds(split)
    classes = list(settings.classes)
    config = settings.train_config
    long = config.model_copy(update={"epochs": config.epochs * settings.num_rounds,
                                     "unfreeze_every": config.epochs * config.unfreeze_every,
                                     "early_stopping_patience": None})
    frames: dict[str, list[pd.DataFrame]] = {}
    per_fold: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}  # the last federation's: bytes per round are the same in every fold
    for fold in folds:
        work = out / f"fold-{fold}"

        def predict(state: dict[str, torch.Tensor], fold: int = fold) -> pd.DataFrame:
            return test_predictions(state, settings, manifest=manifest, cohort_dir=cohort_dir, split=split, fold=fold)

        def central_fit(rows: pd.DataFrame, split_rows: pd.DataFrame, name: str, fold: int = fold,
                        work: Path = work) -> dict[str, pd.DataFrame]:
            result = fit(long, manifest=rows, cohort_dir=cohort_dir, split=split_rows, fold=fold, out=work / name)
            checkpoints = {"": result.best_checkpoint, "_last": result.out / "checkpoints" / "last.pt"}
            return {suffix: predict(load_checkpoint(path)["model"]) for suffix, path in checkpoints.items()}

        arms: dict[str, pd.DataFrame] = {}
        for suffix, frame in central_fit(manifest, split, "centralised").items():
            arms[f"centralised{suffix}"] = frame
        for index, site in enumerate(sites):
            rows, split_rows = site_part(manifest, split, site)
            for suffix, frame in central_fit(rows, split_rows, f"site-{index}").items():
                arms[f"site:{site}{suffix}"] = frame
        summary = simulate(replace(settings, evaluate=True), cohort_dir=cohort_dir, split_path=split_path,
                           sites=sites, out=work / "federated", fold=fold)
        for suffix, name in (("", "best_round.pt"), ("_last", "global.pt")):
            arms[f"federated{suffix}"] = predict(torch.load(work / "federated" / name, weights_only=True))
        for arm, frame in arms.items():
            frames.setdefault(arm, []).append(frame)
        per_fold.append({"fold": fold, "federated_round": summary["best_round"],
                         **{arm: _auroc(frame, classes) for arm, frame in arms.items()}})
        logger.info("Fold %d: test AUROC %s.", fold, {k: round(v, 3) for k, v in per_fold[-1].items()
                                                      if isinstance(v, float)})
    pooled = {arm: pd.concat(parts, ignore_index=True) for arm, parts in frames.items()}
    scores: dict[str, Any] = {"folds": folds, "n_patients": int(pooled["federated"]["patient_key"].nunique())}
    for arm in ("centralised", "federated", "centralised_last", "federated_last"):
        report = evaluate(pooled[arm], classes, n_boot=n_boot, metrics=["auroc"])
        value, low, high = report["auroc"]
        scores[arm], scores[f"{arm}_ci"] = value, [low, high]
    for suffix in ("", "_last"):
        per_site = {site: _auroc(pooled[f"site:{site}{suffix}"], classes) for site in sites}
        scores[f"single_site{suffix}"] = per_site
        scores[f"single_site{suffix}_mean"] = sum(per_site.values()) / len(sites)
    def paired(other: str) -> dict[str, float]:
        result = compare(pooled["federated"], pooled[other], classes, method="delong")
        return {"difference": result.difference, "low": result.low, "high": result.high, "p_value": result.p_value}

    scores["federated_minus_centralised"] = paired("centralised")
    scores["federated_minus_single_site"] = {site: paired(f"site:{site}") for site in sites}
    scores["per_fold"] = per_fold
    scores["full_model_bytes"] = summary["full_model_bytes"]
    scores["bytes_per_round"] = bytes_curve(summary)
    logger.info("Pooled test AUROC over %d patients: centralised %.3f, federated %.3f, single-site mean %.3f.",
                scores["n_patients"], scores["centralised"], scores["federated"], scores["single_site_mean"])
    return scores


def _auroc(frame: pd.DataFrame, classes: list[str]) -> float:
    """Patient-level AUROC of a predictions frame, without an interval."""
    return float(score(frame, classes, level="patient")["auroc"])

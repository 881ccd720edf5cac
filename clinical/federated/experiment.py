"""Federated against centralised and single-site training, scored on the pooled held-out patients.

The acceptance experiment of federated training: the same recipe trained
(1) centrally on every site's training patients, (2) on each site alone, and
(3) federated over the sites on Flower's simulation engine; each model is
scored at patient level on the test patients of all sites together.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from clinical.cohort.manifest import read_manifest
from clinical.federated.local import evaluate_site, site_part
from clinical.federated.settings import RunSettings
from clinical.federated.simulation import simulate
from clinical.models import create_model
from clinical.splits import read_split
from clinical.training import fit, load_checkpoint

__all__ = ["compare_training", "pooled_test_auroc"]

logger = logging.getLogger(__name__)


def pooled_test_auroc(
    state: dict[str, torch.Tensor], settings: RunSettings, *, cohort_dir: str | Path, split_path: str | Path,
    fold: int = 0,
) -> float:
    """Patient-level AUROC of a model's weights on the test patients of every site together."""
    config = settings.train_config
    net = create_model(config.model, spatial_dims=config.spatial_dims, in_channels=config.in_channels,
                       num_classes=len(settings.classes))
    net.load_state_dict(state)
    split, _ = read_split(split_path)
    metrics, _ = evaluate_site(net, config, manifest=read_manifest(cohort_dir), cohort_dir=cohort_dir, split=split,
                               fold=fold, classes=settings.classes, role="test")
    return float(metrics.get("auroc", math.nan))


def compare_training(
    settings: RunSettings,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    sites: Sequence[str],
    out: str | Path,
    fold: int = 0,
) -> dict[str, Any]:
    """Train centrally, per site and federated with the same recipe; return the pooled test AUROCs.

    The centralised and single-site runs train ``num_rounds × epochs`` epochs with the
    engine (same freezing schedule, a stage lasting ``unfreeze_every`` epochs), the
    federation ``num_rounds`` rounds of ``epochs`` local epochs (a stage lasting
    ``unfreeze_every`` rounds), so every model sees each training image equally often.
    Every arm is chosen by the same rule: the epoch (or round) with the best validation
    AUROC; each arm's last epoch (or round) is scored too, as ``<arm>_last``.

    Returns
    -------
    dict
        ``centralised``, ``single_site`` (site → AUROC), ``single_site_mean``, ``federated``
        and ``federated_round`` (the round chosen), the same with ``_last``, and
        ``bytes_per_round`` (the most bytes one site sent, per round) with ``full_model_bytes``.
    """
    out = Path(out)
    manifest = read_manifest(cohort_dir)
    split, _ = read_split(split_path)
    config = settings.train_config
    long = config.model_copy(update={"epochs": config.epochs * settings.num_rounds,
                                     "unfreeze_every": config.epochs * config.unfreeze_every,
                                     "early_stopping_patience": None})

    def auroc(state: dict[str, torch.Tensor]) -> float:
        return pooled_test_auroc(state, settings, cohort_dir=cohort_dir, split_path=split_path, fold=fold)

    def central_fit(rows, split_rows, name: str) -> tuple[float, float]:
        result = fit(long, manifest=rows, cohort_dir=cohort_dir, split=split_rows, fold=fold, out=out / name)
        best, last = (load_checkpoint(path)["model"] for path in (result.best_checkpoint,
                                                                   result.out / "checkpoints" / "last.pt"))
        return auroc(best), auroc(last)

    scores: dict[str, Any] = {"single_site": {}, "single_site_last": {}}
    scores["centralised"], scores["centralised_last"] = central_fit(manifest, split, "centralised")
    for index, site in enumerate(sites):
        rows, split_rows = site_part(manifest, split, site)
        scores["single_site"][site], scores["single_site_last"][site] = central_fit(rows, split_rows, f"site-{index}")
    for key in ("single_site", "single_site_last"):
        scores[f"{key}_mean"] = sum(scores[key].values()) / len(sites)
    summary = simulate(replace(settings, evaluate=True), cohort_dir=cohort_dir, split_path=split_path, sites=sites,
                       out=out / "federated", fold=fold)
    federated = out / "federated"
    scores["federated"] = auroc(torch.load(federated / "best.pt", weights_only=True))
    scores["federated_round"] = summary["best_round"]
    scores["federated_last"] = auroc(torch.load(federated / "global.pt", weights_only=True))
    scores["full_model_bytes"] = summary["full_model_bytes"]
    scores["bytes_per_round"] = [{"round": r["round"], "trainable_groups": r["trainable_groups"],
                                  "bytes_per_site": max(r["bytes_sent"].values(), default=0),
                                  "fraction": r["bytes_per_site_fraction"]} for r in summary["rounds"]]
    logger.info("Pooled test AUROC: centralised %.3f, federated %.3f (round %s), single-site mean %.3f.",
                scores["centralised"], scores["federated"], scores["federated_round"], scores["single_site_mean"])
    return scores

"""The KimiaNet study at tiny size: three feature extractors (fine-tuned DenseNet-121, untrained DenseNet-121,
fine-tuned ResNet-18), each over every outer fold with its own tile network, scored at slide level by attention
MIL and by tile aggregation (mean, max, top-3) with ordered patient CIs, each test slide predicted once out of
fold, retrieval accuracy at k, and the MIL-against-aggregation margin reported."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clinical.workflows.slides import TILE_AGGREGATIONS
from clinical.workflows.studies import run_study
from clinical.workflows.studies.kimianet import EXTRA, METRICS, RANDOM, REFERENCE, SIZES, SMALLER


@pytest.fixture(scope="module")
def study(module_tmp):
    return run_study("kimianet", module_tmp("kimianet"), size="tiny")


def test_three_arms_every_method_every_fold_with_ordered_patient_cis(study):
    table = study.table.set_index("arm")
    assert list(table.index) == [REFERENCE, RANDOM, SMALLER]
    folds = SIZES["tiny"]["folds"]
    for metric in METRICS:
        value, low, high = (table[f"{metric}_{s}"] for s in ("pooled", "low", "high"))
        assert value.notna().all() and (low <= value).all() and (value <= high).all()
    for arm in study.arms:
        assert all(len(arm.fold_scores[m]) == folds for m in METRICS) and len(arm.n_train) == folds
        assert all(0 <= arm.extra[f"retrieval_at_{k}"] <= 1 for k in (1, 3, 5))
    assert table.loc[[RANDOM, SMALLER], "p_vs_reference"].between(0, 1).all()
    assert pd.isna(table.loc[RANDOM, "tile_net_auroc"])
    assert table.loc[[REFERENCE, SMALLER], "tile_net_auroc"].notna().all()
    assert all(name in study.markdown for name in EXTRA)


def test_every_fold_fine_tunes_its_own_tile_network_and_predicts_each_test_slide_once(study):
    folds = SIZES["tiny"]["folds"]
    for arm in study.arms:
        folder = Path(arm.out)
        checkpoints = sorted(folder.glob("tile-net-*/checkpoints/best.pt"))
        assert len(checkpoints) == (0 if arm.name == RANDOM else folds)
        slides = pd.concat([pd.read_parquet(folder / f"mil-{k}" / "slide_predictions.parquet") for k in range(folds)])
        assert slides["series_key"].is_unique  # out of fold: no slide is tested twice
        tiles = pd.concat([pd.read_parquet(folder / f"mil-{k}" / "tile_predictions.parquet") for k in range(folds)])
        assert set(tiles["series_key"]) == set(slides["series_key"])
    # one cache entry for the untrained network, one per fold for each fine-tuned one
    assert len(list((study.out / "cohort" / "embeddings").glob("*.npz"))) == 1 + 2 * folds


def test_the_mil_margin_over_the_best_aggregation_is_reported_per_arm(study):
    findings = json.loads((study.out / "study.json").read_text())["findings"]["mil_vs_aggregation"]
    assert set(findings) == {REFERENCE, RANDOM, SMALLER}
    for arm in study.arms:
        margin = findings[arm.name]
        pooled = arm.pooled.set_index("metric")["value"]
        assert margin["best_aggregation"] in TILE_AGGREGATIONS
        assert margin["pooled_difference"] == pytest.approx(
            pooled["mil_auroc"] - max(pooled[f"{how}_auroc"] for how in TILE_AGGREGATIONS))
        assert margin["mil_wins"] == (margin["pooled_difference"] > 0)

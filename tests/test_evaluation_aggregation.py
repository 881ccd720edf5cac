"""How item scores become a patient score is the study's choice, and every patient-level number says which."""

from __future__ import annotations

import json
import typing

import numpy as np
import pandas as pd
import pytest
from evaluation_helpers import clustered_binary
from test_data_helpers import write_toy_cohort
from test_training_helpers import TINY

from clinical.cli import build_parser
from clinical.cli.train import config_from_args
from clinical.evaluation import (
    choose_threshold,
    compare,
    evaluate,
    per_site,
    plot_calibration,
    plot_confusion,
    plot_forest,
    plot_roc,
    reliability_table,
    score,
)
from clinical.evaluation.predictions import AGGREGATIONS
from clinical.evaluation.sites import ALL_SITES
from clinical.splits import split_manifest, write_split
from clinical.training import TrainConfig
from clinical.workflows import cross_validate

BINARY = ["negative", "positive"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Five items per patient: the max of a patient's items is not their mean."""
    return clustered_binary(np.random.default_rng(11), n_patients=60, items_per_patient=5, item_sd=1.0)


@pytest.fixture(scope="module")
def other(frame: pd.DataFrame) -> pd.DataFrame:
    """A second model's predictions on the same items."""
    noisy = frame.copy()
    p1 = np.clip(frame["prob_1"] + np.random.default_rng(12).normal(0, 0.2, len(frame)), 0.01, 0.99)
    return noisy.assign(prob_1=p1, prob_0=1 - p1)


def test_per_site_combines_items_as_asked_and_records_it(frame):
    table = per_site(frame, BINARY, n_boot=50, metrics=["auroc", "brier"], aggregate="max")
    pooled = table[table["site"] == ALL_SITES].set_index("metric")["value"]
    assert pooled["brier"] == pytest.approx(score(frame, BINARY, aggregate="max")["brier"])
    assert pooled["brier"] != pytest.approx(score(frame, BINARY)["brier"])
    assert set(table["aggregate"]) == {"max"}
    assert set(per_site(frame, BINARY, n_boot=20, metrics=["auroc"])["aggregate"]) == {"mean"}
    assert set(per_site(frame, BINARY, level="item", n_boot=20, metrics=["auroc"])["aggregate"]) == {"none"}
    assert "(max of items)" in plot_forest(table).axes[0].get_title()


@pytest.mark.parametrize("method", ["delong", "bootstrap"])
def test_the_paired_comparison_combines_both_models_items_the_same_way(frame, other, method):
    by_max = compare(frame, other, BINARY, method=method, n_boot=100, aggregate="max")
    by_mean = compare(frame, other, BINARY, method=method, n_boot=100)
    assert by_max.value_a == pytest.approx(score(frame, BINARY, aggregate="max")["auroc"])
    assert by_max.value_b == pytest.approx(score(other, BINARY, aggregate="max")["auroc"])
    assert by_max.value_a != pytest.approx(by_mean.value_a)
    assert (by_max.aggregate, by_mean.aggregate) == ("max", "mean")
    assert by_max.to_dict()["aggregate"] == "max"
    assert compare(frame, other, BINARY, level="item", method="bootstrap", n_boot=20).aggregate == "none"


def test_plots_and_the_operating_point_follow_the_aggregation_and_say_it(frame):
    roc = plot_roc(frame, BINARY, n_boot=20, aggregate="max").axes[0]
    assert "60 patients (max of items)" in roc.get_title()
    auroc = score(frame, BINARY, aggregate="max")["auroc"]
    assert any(f"AUROC {auroc:.3f}" in text.get_text() for text in roc.get_legend().get_texts())
    assert "(mean of items)" in plot_roc(frame, BINARY, n_boot=20).axes[0].get_title()
    assert "items of" in plot_roc(frame, BINARY, level="item", n_boot=20).axes[0].get_title()
    assert "(median of items)" in plot_confusion(frame, BINARY, aggregate="median").axes[0].get_title()
    calibration = plot_calibration(frame, BINARY, aggregate="max").axes[0]
    ece = score(frame, BINARY, aggregate="max")["ece"]
    assert f"ECE {ece:.3f}" in calibration.get_legend().get_texts()[1].get_text()
    by_max, by_mean = reliability_table(frame, BINARY, aggregate="max"), reliability_table(frame, BINARY)
    assert by_max["prob_pred"].mean() > by_mean["prob_pred"].mean()  # a max is never below the mean
    assert choose_threshold(frame, BINARY, aggregate="max") != choose_threshold(frame, BINARY)


def test_the_recipe_chooses_the_aggregation_from_the_command_line():
    assert typing.get_args(TrainConfig.model_fields["aggregate"].annotation) == AGGREGATIONS
    assert TrainConfig().aggregate == "mean"
    args = build_parser().parse_args(["train", "c", "--split", "s", "--out", "o", "--aggregate", "max"])
    assert config_from_args(args).aggregate == "max"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "c", "--split", "s", "--out", "o", "--aggregate", "sum"])


def test_cross_validation_scores_and_writes_with_the_recipes_aggregation(tmp_path):
    manifest = write_toy_cohort(tmp_path / "cohort", patients=18, per_patient=3, size=16)
    write_split(split_manifest(manifest, folds=3, seed=0), tmp_path / "split.parquet")
    config = TrainConfig.build(model=TINY, image_size=(16, 16), epochs=1, batch_size=8, schedule="full",
                               early_stopping_patience=None, aggregate="max")
    cv = cross_validate(config, cohort_dir=tmp_path / "cohort", split_path=tmp_path / "split.parquet",
                        out=tmp_path / "cv", n_boot=50)
    for result in cv.results:
        assert result.test_metrics["brier"] == pytest.approx(
            score(result.test_predictions, BINARY, aggregate="max")["brier"])
    written = pd.read_csv(tmp_path / "cv" / "cv" / "metrics_with_ci.csv").set_index("metric")
    assert set(written["aggregate"]) == {"max"} and set(written["level"]) == {"patient"}
    pooled = evaluate(cv.pooled, BINARY, n_boot=50, aggregate="max")
    assert written.loc["brier", "value"] == pytest.approx(pooled["brier"][0])
    assert written.loc["brier", "value"] != pytest.approx(score(cv.pooled, BINARY)["brier"])
    record = json.loads((tmp_path / "cv" / "cv" / "cross_validation.json").read_text())
    assert (record["level"], record["aggregate"]) == ("patient", "max")

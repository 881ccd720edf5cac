"""A series (a whole slide whose tiles are the items) is an evaluation level, and tiles combine by top-k mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_data_helpers import write_toy_cohort

from clinical.data import ManifestDataset
from clinical.errors import PredictionsError
from clinical.evaluation import aggregate, evaluate, score

BINARY = ["negative", "positive"]


def _slides(rng: np.random.Generator, *, patients: int = 30, slides: int = 3, tiles: int = 8) -> pd.DataFrame:
    """Tiles of several slides per patient; on a positive slide two tiles score high, the rest like a negative's."""
    rows = []
    for p in range(patients):
        label = p % 2
        for s in range(slides):
            for t in range(tiles):
                p1 = float(rng.uniform(0.6, 0.9) if label and t < 2 else rng.uniform(0.1, 0.5))
                rows.append({"item_id": f"t{p}-{s}-{t}", "patient_key": f"p{p}", "study_key": f"st{p}",
                             "series_key": f"se{p}-{s}", "site": "A", "label": label, "prob_0": 1 - p1, "prob_1": p1})
    return pd.DataFrame(rows)


def test_series_level_scores_one_unit_per_slide_and_resamples_patients():
    frame = _slides(np.random.default_rng(0))
    units = aggregate(frame, BINARY, level="series")
    assert len(units) == 90 and list(units.columns[:3]) == ["series_key", "patient_key", "site"]
    assert (units["n_items"] == 8).all()
    report = evaluate(frame, BINARY, level="series", n_boot=200, metrics=["auroc"])
    assert (report.level, report.n_units, report.n_patients) == ("series", 90, 30)
    value, low, high = report["auroc"]
    assert low <= value <= high
    with pytest.raises(PredictionsError, match="series units span several patients"):
        aggregate(frame[frame["label"] == 1].assign(series_key="one"), BINARY, level="series")


def test_top_k_mean_averages_each_slides_highest_tiles_and_keeps_a_focal_finding():
    frame = _slides(np.random.default_rng(1))
    by = {how: aggregate(frame, BINARY, level="series", how=how).set_index("series_key")["prob_1"]
          for how in ("mean", "max", "top3", "top10")}
    tiles = frame[frame["series_key"] == "se1-0"]
    assert by["top3"]["se1-0"] == pytest.approx(np.sort(tiles["prob_1"])[-3:].mean())  # the 3 most suspicious
    assert by["top10"]["se1-0"] == pytest.approx(tiles["prob_1"].mean())  # fewer than 10 tiles: all of them
    # two high tiles of eight: the top-3 mean separates the slides better than the mean does
    assert score(frame, BINARY, level="series", aggregate="top3")["auroc"] > score(
        frame, BINARY, level="series")["auroc"]


def test_the_dataset_and_its_predictions_carry_the_series_key(tmp_path):
    manifest = write_toy_cohort(tmp_path / "cohort", patients=4, per_patient=2, size=8)
    dataset = ManifestDataset(manifest, tmp_path / "cohort")
    assert dataset.frame()["series_key"].tolist() == manifest["series_key"].astype(str).tolist()
    assert dataset[0]["series_key"] == str(manifest["series_key"].iloc[0])

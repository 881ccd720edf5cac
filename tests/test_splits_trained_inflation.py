"""The inflation audit with the study's own recipe: its network trained under an item- and a patient-level split.

Whether the trained CNN shows the inflation on the synthetic radiographs (``patient_effect=True``) was measured
and is not reliable at a size the tests can afford (3 folds, one split seed, 123 images of 60 patients): the
tiny CNN at 32 px for 4 epochs gave item − patient split AUROC −0.147, +0.039, +0.090 over three training seeds
(without the patient effect −0.010, +0.042, −0.064), 5–20 s each; at 64 px for 15 epochs −0.112 and +0.002
(90–120 s each); ResNet-18 at 64 px did not finish one seed in four minutes. A CNN needs far more data and
epochs than a test has to memorise patients. So these tests check what is reliable: the recipe is trained
under both splits, the item-level split scatters patients across roles, and the reported numbers are the
statistics of those trained models' out-of-fold predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_data_helpers import write_toy_cohort
from test_training_helpers import TINY

from clinical.cli import main
from clinical.splits import role_crossings, split_manifest, write_split
from clinical.splits.inflation import combine_inflation, paired_splits
from clinical.training import TrainConfig, load_result

FOLDS = 2


@pytest.fixture(scope="module")
def cohort(module_tmp) -> tuple[Path, pd.DataFrame]:
    root = module_tmp("trained-inflation")
    return root / "cohort", write_toy_cohort(root / "cohort", patients=16, per_patient=2, size=16)


def _recipe() -> TrainConfig:
    return TrainConfig.build(model=TINY, image_size=(16, 16), epochs=1, batch_size=8, schedule="full",
                             early_stopping_patience=None)


def test_the_item_level_split_scatters_patients_and_the_patient_level_split_does_not(cohort):
    _, manifest = cohort
    item_split, patient_split = paired_splits(manifest, folds=FOLDS, seed=0, val_size=0.2)
    assert role_crossings(item_split, manifest, levels=("patient_key",))["crossing"].max() > 0
    assert role_crossings(patient_split, manifest, levels=("patient_key",))["crossing"].max() == 0


def test_the_audit_trains_the_recipe_under_both_splits_and_reports_the_statistics_of_its_predictions(
    cohort, tmp_path, capsys
):
    folder, manifest = cohort
    split, report = tmp_path / "split.parquet", tmp_path / "audit.json"
    write_split(split_manifest(manifest, folds=FOLDS, seed=3), split)
    _recipe().save(tmp_path / "config.json")
    assert main(["audit", str(folder), "--split", str(split), "--recipe", str(tmp_path / "config.json")]) == 2
    assert main(["audit", str(folder), "--split", str(split), "--inflation", "--n-seeds", "2", "--n-boot", "100",
                 "--recipe", str(tmp_path / "config.json"), "--report", str(report)]) == 0
    assert f"{TINY} trained with the study's recipe" in capsys.readouterr().out
    result = json.loads(report.read_text())["inflation"]
    out = tmp_path / "audit-inflation"
    assert json.loads((out / "inflation.json").read_text()) == result
    assert result["n_seeds"] == 2 and result["folds"] == FOLDS and result["items"] == len(manifest)
    assert [s["seed"] for s in result["per_seed"]] == [3, 4]

    classes = sorted(manifest["label"].unique())
    y = manifest["label"].map({name: k for k, name in enumerate(classes)}).to_numpy()
    per_seed = []
    for seed in (3, 4):
        probs = []
        for name in ("item", "patient"):
            fits = [load_result(out / f"seed-{seed}" / f"{name}-split" / f"fold-{fold}") for fold in range(FOLDS)]
            assert all(fit.config == _recipe() for fit in fits)  # the recipe itself, not a stand-in model
            tested = pd.concat([fit.test_predictions for fit in fits]).set_index("item_id")
            assert sorted(tested.index) == sorted(manifest["item_id"])  # every item tested once per split
            probs.append(tested.loc[manifest["item_id"], ["prob_0", "prob_1"]].to_numpy(dtype=np.float64))
        per_seed.append((seed, *probs))
    expected = combine_inflation(manifest["patient_key"].to_numpy(dtype=str), y, per_seed, n_boot=100, seed=3,
                                 confidence=0.95)
    for key in ("auroc_item_split", "auroc_patient_split", "inflation", "ci_low", "ci_high", "between_variance"):
        assert result[key] == pytest.approx(expected[key])
    assert result["inflation"] == pytest.approx(result["auroc_item_split"] - result["auroc_patient_split"])
    assert result["ci_low"] < result["inflation"] < result["ci_high"]

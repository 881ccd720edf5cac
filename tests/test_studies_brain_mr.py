"""The brain-MR study at ``size="tiny"``: architectures × initialisation, their cost, and the numbers in its table.

Checks that every architecture of the size has a from-scratch and a pretrained arm on the same folds (so
each gets the paired test against pretrained MC3, the reference), that every pooled value lies inside its
patient CI, that the cost columns are what they say (parameters and FLOPs of the model at the training
size, the same for both initialisations; training seconds measured, pretraining seconds only where a
backbone was used), that the pretrained arms start from the SimCLR backbone and the scratch arms from
none, and that the pretraining corpus shares no patient with the study cohort.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinical.cohort import read_manifest
from clinical.models.flops import model_complexity
from clinical.workflows.studies import run_study
from clinical.workflows.studies.brain_mr import METRICS, REFERENCE, SIZES, arm_name


@pytest.fixture(scope="module")
def study(module_tmp):
    return run_study("brain-mr", module_tmp("brain-mr"), size="tiny")


def test_every_architecture_has_both_arms_and_the_numbers_are_what_they_say(study):
    table = pd.read_csv(study.out / "table.csv").set_index("arm")
    models = SIZES["tiny"]["models"]
    assert list(table.index) == [arm_name(m, pretrained) for m in models for pretrained in (True, False)]
    assert table.index[0] == REFERENCE
    for metric in METRICS:
        finite = table[np.isfinite(table[f"{metric}_pooled"])]
        assert len(finite) == len(table), metric
        assert (finite[f"{metric}_low"] <= finite[f"{metric}_pooled"] + 1e-12).all(), metric
        assert (finite[f"{metric}_pooled"] <= finite[f"{metric}_high"] + 1e-12).all(), metric
    assert np.isnan(table.loc[REFERENCE, "p_vs_reference"])
    assert table.drop(index=REFERENCE)["p_vs_reference"].between(0, 1).all()  # same folds: all paired
    assert (table["n_folds"] == SIZES["tiny"]["folds"]).all()
    assert (study.out / "summary.png").is_file() and f"| {REFERENCE} |" in study.markdown


def test_the_cost_columns_are_the_models_at_the_training_size(study):
    table = pd.read_csv(study.out / "table.csv").set_index("arm")
    size = SIZES["tiny"]["recipe"]["image_size"]
    for model in SIZES["tiny"]["models"]:
        expected = model_complexity(model, 3, in_channels=1, size=size)
        for pretrained in (True, False):
            row = table.loc[arm_name(model, pretrained)]
            assert row["params (M)"] == pytest.approx(expected.parameters / 1e6, abs=0.01)
            assert row["GFLOPs/volume"] == pytest.approx(expected.flops / 1e9, abs=1e-3)
            assert row["train s"] > 0
            assert (row["pretrain s"] > 0) == pretrained


def test_pretrained_arms_start_from_a_backbone_learnt_on_other_patients(study):
    for arm in study.arms:
        config = json.loads((Path(arm.out) / "fold-0" / "config.json").read_text())
        if arm.name.endswith("pretrained"):
            assert Path(config["pretrained"]).is_file() and config["model"] in Path(config["pretrained"]).name
        else:
            assert config["pretrained"] is None
    cohort = set(read_manifest(study.out / "cohort")["patient_key"])
    corpus = read_manifest(study.out / "corpus")
    assert not cohort & set(corpus["patient_key"]) and set(corpus["kind"]) == {"volume"}

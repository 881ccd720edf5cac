"""The PET/CT study at ``size="tiny"``: its four arms, their splits and channels, and the numbers in its table.

Checks that the arms are the paper's (slice- vs patient-level split, PET only vs PET + CT, centre-aware vs
agnostic, one factor at a time around the reference) plus the no-lesion control, which holds the same
patients, labels and folds with the lesions removed; that the patient-level split keeps every patient's
slices on one side of each fold while the slice-level split puts slices of one patient on both sides (the
leak it exists to measure); that the PET-only arm reads the PET channel (the SUV channel of the cached
volumes) and the centre-aware arm learns one embedding per centre; that every pooled value lies inside its
patient CI at slice and patient level; and that only the arms on the reference's folds get a paired test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinical.cohort import read_manifest
from clinical.data import ManifestDataset
from clinical.splits import OUTER, read_split
from clinical.training import load_checkpoint
from clinical.workflows.studies import run_study
from clinical.workflows.studies.petct import CENTRE_AWARE, CONTROL, METRICS, PET_ONLY, REFERENCE, SLICE_SPLIT

ARMS = (REFERENCE, SLICE_SPLIT, PET_ONLY, CENTRE_AWARE, CONTROL)


@pytest.fixture(scope="module")
def study(module_tmp):
    return run_study("petct", module_tmp("petct"), size="tiny")


def _overlap(split_path: Path, slices: pd.DataFrame) -> list[int]:
    """Per outer fold, how many real patients have slices both in training and in test."""
    split, _ = read_split(split_path)
    rows = split[split["inner"] == OUTER].merge(slices[["item_id", "real_patient"]], on="item_id")
    counts = []
    for _, fold in rows.groupby("fold"):
        train = set(fold.loc[fold["role"] == "train", "real_patient"])
        counts.append(len(train & set(fold.loc[fold["role"] == "test", "real_patient"])))
    return counts


def test_the_table_has_the_papers_arms_and_its_numbers_are_what_they_say(study):
    table = pd.read_csv(study.out / "table.csv")
    assert list(table["arm"]) == list(ARMS)
    for metric in METRICS:
        finite = table[np.isfinite(table[f"{metric}_pooled"])]
        assert len(finite) == len(ARMS), metric
        assert (finite[f"{metric}_low"] <= finite[f"{metric}_pooled"] + 1e-12).all(), metric
        assert (finite[f"{metric}_pooled"] <= finite[f"{metric}_high"] + 1e-12).all(), metric
        assert finite[f"{metric}_pooled"].between(0, 1).all(), metric
    rows = table.set_index("arm")
    assert np.isnan(rows.loc[REFERENCE, "p_vs_reference"])
    assert np.isnan(rows.loc[SLICE_SPLIT, "p_vs_reference"])  # other folds: no paired test
    assert rows.loc[[PET_ONLY, CENTRE_AWARE, CONTROL], "p_vs_reference"].between(0, 1).all()
    assert list(rows["split"]) == ["patient", "slice", "patient", "patient", "patient"]
    assert list(rows["channels"]) == ["PT + CT", "PT + CT", "PT", "PT + CT", "PT + CT"]
    sites = [c for c in table.columns if c.startswith("AUROC ")]
    assert len(sites) == 2 and table[sites].notna().all().all()
    for name in ("table.md", "summary.png", "study.json"):
        assert (study.out / name).is_file()
    findings = json.loads((study.out / "study.json").read_text())["findings"]
    assert np.isfinite(findings["slice_split_overestimate_auroc"])
    assert findings["best_patient_split_arm"] in (REFERENCE, PET_ONLY, CENTRE_AWARE)
    assert np.isfinite(findings["reference_minus_no_lesion_control_auroc"])


def test_the_control_holds_the_same_patients_labels_and_folds_without_the_lesions(study):
    def by_patient(name: str) -> pd.DataFrame:
        split, _ = read_split(study.out / f"{name}-split.parquet")
        labels = read_manifest(study.out / name).set_index("patient_key")["label"]
        return split.drop(columns=["item_id"]).assign(label=split["patient_key"].map(labels)).sort_values(
            ["fold", "inner", "patient_key"], ignore_index=True)

    pd.testing.assert_frame_equal(by_patient("cohort"), by_patient("cohort-no-lesions"))
    truth = {name: pd.read_csv(study.out / f"synthetic-{name}" / "petct" / "ground_truth.csv")
             for name in ("cohort", "cohort-no-lesions")}
    assert (truth["cohort"]["slice_labels"] == truth["cohort-no-lesions"]["slice_labels"]).all()
    summary = json.loads((study.out / "synthetic-cohort-no-lesions" / "summary.json").read_text())
    assert summary["finding_strength"] == 0


def test_only_the_slice_level_split_puts_a_patients_slices_in_training_and_test(study):
    base = study.out / "cohort-slices"
    slices = read_manifest(base / "patient-split" / "cohort")
    scattered = read_manifest(base / "slice-split" / "cohort")
    assert (scattered["patient_key"] == scattered["item_id"]).all()  # every slice its own "patient"
    slices = slices.assign(real_patient=slices["patient_key"])
    assert _overlap(base / "patient-split" / "split.parquet", slices) == [0, 0]
    assert sum(_overlap(base / "slice-split" / "split.parquet", slices)) > 0
    # the arm's metrics resample the real patients, not the scattered slices
    arm = next(arm for arm in study.arms if arm.name == SLICE_SPLIT)
    assert not arm.n_train and set(arm.pooled["level"]) == {"item", "patient"}


def test_pet_only_reads_the_pet_channel_and_the_centre_aware_arm_learns_the_centres(study):
    arms = {arm.name: Path(arm.out) for arm in study.arms}
    pet = json.loads((arms[PET_ONLY] / "fold-0" / "config.json").read_text())
    assert (pet["channels"], pet["in_channels"]) == (["PT"], 1)
    slices_dir = study.out / "cohort-slices" / "patient-split" / "cohort"
    view = read_manifest(slices_dir)
    row = view.iloc[0]
    assert row["modality"] == "PT+CT"
    volume = np.load(slices_dir / row["path"])
    image = ManifestDataset(view, slices_dir, channels=tuple(pet["channels"]))[0]["image"]
    np.testing.assert_array_equal(np.asarray(image)[0], volume[0, row["slice"]].astype(np.float32))  # PT first
    aware = load_checkpoint(arms[CENTRE_AWARE] / "fold-0" / "checkpoints" / "best.pt")
    assert aware["config"]["centre"] == "embedding" and "site_embedding.weight" in aware["model"]
    assert aware["sites"] and set(aware["sites"]) <= set(view["site"])
    assert load_checkpoint(arms[REFERENCE] / "fold-0" / "checkpoints" / "best.pt")["sites"] == []

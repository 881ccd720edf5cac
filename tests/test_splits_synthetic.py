"""End to end on the synthetic radiographs: generate, ingest, split in every mode, audit, measure the inflation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from clinical.cli import main
from clinical.cohort import read_manifest
from clinical.cohort.synthetic import generate_cohort
from clinical.errors import LeakageError
from clinical.ingest import ingest
from clinical.splits import check_no_leakage, read_split, split_manifest

MODES = [
    {"folds": 5},
    {"folds": 3, "inner_folds": 2},
    {"folds": 4, "val_size": 0.0},
    {"leave_site_out": True},
    {"folds": 5, "by": "study"},
]


@pytest.fixture(scope="module")
def no_patient_effect(module_tmp) -> Path:
    """The same small radiograph cohort without the patient effect, ingested."""
    root = module_tmp("synthetic-no-effect")
    generate_cohort(root / "src", size="small", seed=0, tasks=("radiographs",), patient_effect=False)
    task = root / "src" / "radiographs"
    ingest([task], root / "cohort", labels=task / "labels.csv", key="splits-test", workers=0, progress=False)
    return root / "cohort"


@pytest.mark.parametrize("params", MODES, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
def test_no_patient_crosses_roles_on_the_synthetic_cohort(small_radiographs: Path, params: dict) -> None:
    manifest = read_manifest(small_radiographs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few patients per class and site
        split = split_manifest(manifest, seed=0, **params)
    per_key = split.merge(manifest[["item_id", "study_key"]], on="item_id")
    assert per_key.groupby(["fold", "inner", "study_key"])["role"].nunique().max() == 1
    if params.get("by") == "study":  # patients with several studies cross roles, and the default check refuses it
        assert per_key.groupby(["fold", "inner", "patient_key"])["role"].nunique().max() > 1
        with pytest.raises(LeakageError, match="patient_key"):
            check_no_leakage(split, manifest)
        check_no_leakage(split, manifest, levels=("study_key", "series_key"))
        return
    assert per_key.groupby(["fold", "inner", "patient_key"])["role"].nunique().max() == 1
    check_no_leakage(split, manifest)


def test_growing_synthetic_cohort_keeps_patients(small_radiographs: Path) -> None:
    manifest = read_manifest(small_radiographs)
    patients = sorted(manifest["patient_key"].unique())
    old = manifest[manifest["patient_key"].isin(patients[:45])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        before = split_manifest(old, folds=3, seed=4)
        after = split_manifest(manifest, folds=3, seed=4, previous=before)
    kept = before.merge(after, on=["item_id", "fold", "inner"], suffixes=("_old", "_new"))
    assert len(kept) == len(before) and (kept["role_old"] == kept["role_new"]).all()
    check_no_leakage(after, manifest)


def _audit(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> dict:
    split = tmp_path / "split.parquet"
    assert main(["split", str(cohort), "--folds", "5", "--seed", "0", "--out", str(split)]) == 0
    _, meta = read_split(split)
    report = tmp_path / "audit.json"
    assert main(["audit", str(cohort), "--split", str(split), "--inflation", "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "PASSED" in printed and "inflation of an item-level split" in printed
    result = json.loads(report.read_text())
    assert result["split_digest"] == meta["digest"] and result["split_made_for_this_cohort"]
    print(json.dumps(result["inflation"]))
    return result["inflation"]


def test_inflation_is_clearly_positive_with_the_patient_effect(
    small_radiographs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    inflation = _audit(small_radiographs, tmp_path, capsys)
    assert inflation["inflation"] > 0.1
    assert inflation["ci_low"] > 0.0


def test_inflation_is_near_zero_without_the_patient_effect(
    no_patient_effect: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    inflation = _audit(no_patient_effect, tmp_path, capsys)
    assert abs(inflation["inflation"]) < 0.1
    assert inflation["ci_low"] < 0.0 < inflation["ci_high"]

"""The split file, the leakage check, near-duplicate images and the inflation of an item-level split.

The cohorts here are written directly (manifest + ``.npy`` arrays) so the
patient effect is under the test's control: with it, each patient's images
share a strong random pattern that a model can memorise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinical.cli import main
from clinical.cohort import write_manifest
from clinical.errors import LeakageError, ManifestError
from clinical.splits import (
    audit_split,
    check_no_leakage,
    format_report,
    leakage_inflation,
    read_split,
    split_digest,
    split_manifest,
    write_split,
)


def make_image_cohort(
    folder: Path, *, n_patients: int = 120, per_patient: int = 4, patient_effect: bool = True, seed: int = 0
) -> pd.DataFrame:
    """A cohort of 32 × 32 images: a faint label blob, plus a per-patient pattern (or a per-image one), plus noise.

    Without the patient effect every image draws its own pattern, so the
    pixels have the same distribution either way; only their sharing differs.
    """
    rng = np.random.default_rng(seed)
    (folder / "arrays").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:32, :32] / 32
    blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.05)

    def pattern() -> np.ndarray:
        return np.kron(rng.normal(size=(8, 8)), np.ones((4, 4)))

    rows = []
    for patient in range(n_patients):
        label = int(rng.random() < 0.5)
        own = pattern()
        for index in range(per_patient):
            image = 0.5 * label * blob + (own if patient_effect else pattern()) + 0.5 * rng.normal(size=(32, 32))
            item = f"{patient:04d}{index:02d}"
            np.save(folder / "arrays" / f"{item}.npy", image[None].astype(np.float32))
            rows.append(
                {
                    "item_id": item,
                    "patient_key": f"k{patient:04d}",
                    "study_key": f"s{patient:04d}",
                    "series_key": f"r{patient:04d}{index:02d}",
                    "site": "AB"[patient % 2],
                    "modality": "CR",
                    "kind": "image",
                    "label": ["normal", "finding"][label],
                    "path": f"arrays/{item}.npy",
                    "source": [f"{item}.dcm"],
                    "shape": [1, 32, 32],
                    "spacing": [0.2, 0.2],
                    "source_digest": f"{item:0>64}",
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cohort(module_tmp) -> tuple[Path, pd.DataFrame]:
    folder = module_tmp("cohort")
    manifest = make_image_cohort(folder, patient_effect=True)
    write_manifest(manifest, folder)
    return folder, manifest


@pytest.fixture(scope="module")
def no_effect(module_tmp) -> tuple[Path, pd.DataFrame]:
    folder = module_tmp("no_effect")
    return folder, make_image_cohort(folder, patient_effect=False, seed=1)


def test_split_file_round_trip(tmp_path: Path, cohort: tuple[Path, pd.DataFrame]) -> None:
    _, manifest = cohort
    split = split_manifest(manifest, folds=4, seed=11, inner_folds=2)
    meta = write_split(split, tmp_path / "split.parquet", cohort_digest="abc")
    table, read_meta = read_split(tmp_path / "split.parquet")
    assert read_meta == json.loads((tmp_path / "split.json").read_text()) == meta
    assert meta["seed"] == 11 and meta["folds"] == 4 and meta["by"] == "patient" and meta["cohort_digest"] == "abc"
    assert meta["digest"] == split_digest(split) == split_digest(table.sample(frac=1.0, random_state=0))
    assert table.attrs["split"]["digest"] == meta["digest"]
    pd.testing.assert_frame_equal(table.reset_index(drop=True), split.reset_index(drop=True))


def test_edited_split_file_is_refused(tmp_path: Path, cohort: tuple[Path, pd.DataFrame]) -> None:
    _, manifest = cohort
    meta = write_split(split_manifest(manifest, folds=3, seed=0), tmp_path / "split.parquet")
    table = pd.read_parquet(tmp_path / "split.parquet")
    table.loc[0, "role"] = "train" if table.loc[0, "role"] != "train" else "test"
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({b"clinical.split": json.dumps(meta).encode()})
    pq.write_table(arrow, tmp_path / "edited.parquet")
    with pytest.raises(ManifestError, match="do not match the digest"):
        read_split(tmp_path / "edited.parquet")
    table.to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ManifestError, match="without split metadata"):
        read_split(tmp_path / "plain.parquet")
    with pytest.raises(ManifestError, match="No split file"):
        read_split(tmp_path / "absent.parquet")


def test_item_level_split_is_refused_without_naming_patients(cohort: tuple[Path, pd.DataFrame]) -> None:
    _, manifest = cohort
    by_item = split_manifest(manifest.assign(patient_key=manifest["item_id"]), folds=5, seed=0)
    with pytest.raises(LeakageError) as caught:
        check_no_leakage(by_item, manifest)
    message = str(caught.value)
    assert "patient_key" in message and "study_key" in message
    assert not any(key in message for key in manifest["patient_key"])
    check_no_leakage(by_item, manifest, levels=("series_key",))  # one item per series: nothing crosses
    with pytest.raises(ManifestError, match="not in the manifest"):
        check_no_leakage(by_item, manifest.iloc[10:])
    with pytest.raises(ManifestError, match=r"lacks the column\(s\) \['series_key'\].*pass the levels"):
        check_no_leakage(by_item, manifest.drop(columns="series_key"))


def test_outer_test_patient_inside_its_folds_inner_rows_is_leakage(cohort: tuple[Path, pd.DataFrame]) -> None:
    """Each (fold, inner) pair alone looks clean; only checking a fold against its inner rows shows the leak."""
    _, manifest = cohort
    split = split_manifest(manifest, folds=4, seed=5, inner_folds=2)
    check_no_leakage(split, manifest)
    outer_test = split[(split["fold"] == 1) & (split["inner"] == -1) & (split["role"] == "test")]
    patient = outer_test["patient_key"].iloc[0]
    leaked = outer_test[outer_test["patient_key"] == patient].assign(inner=0, role="train")
    tampered = pd.concat([split, leaked], ignore_index=True)
    expected = r"1 patient_key value\(s\) in more than one role \(fold 1 \(inner 0\)\)"
    with pytest.raises(LeakageError, match=expected) as caught:
        check_no_leakage(tampered, manifest)
    assert patient not in str(caught.value)
    elsewhere = leaked.assign(fold=2)  # in another fold's inner rows it is an ordinary training patient
    other = split[~((split["fold"] == 2) & (split["patient_key"] == patient))]
    check_no_leakage(pd.concat([other, elsewhere], ignore_index=True), manifest, levels=("patient_key",))


def test_audit_passes_a_patient_split_and_lists_planted_duplicates(
    tmp_path: Path, cohort: tuple[Path, pd.DataFrame]
) -> None:
    folder, manifest = cohort
    split = split_manifest(manifest, folds=5, seed=0)
    report = audit_split(manifest, split, folder)
    assert report["passed"] and report["near_duplicates"]["crossing_roles"] == 0
    assert all(level["passed"] for level in report["roles"].values())

    # the same image filed under another patient (a re-export with a new ID), slightly re-encoded
    copy_dir = tmp_path / "copy"
    (copy_dir / "arrays").mkdir(parents=True)
    extra = manifest.iloc[[0]].assign(item_id="dup", patient_key="newpatient", study_key="x", series_key="y")
    extra["path"] = "arrays/dup.npy"
    image = np.load(folder / manifest["path"].iloc[0]).astype(np.float64)
    np.save(copy_dir / "arrays" / "dup.npy", image + 0.01 * np.random.default_rng(0).normal(size=image.shape))
    (copy_dir / "arrays" / "blank.npy").write_bytes(b"")  # unreadable: reported, not fatal
    for path in manifest["path"]:
        (copy_dir / path).symlink_to(folder / path)
    broken = manifest.iloc[[1]].assign(item_id="broken", patient_key="other", path="arrays/blank.npy")
    grown = pd.concat([manifest, extra, broken], ignore_index=True)
    split = split_manifest(grown, folds=5, seed=0)
    report = audit_split(grown, split, copy_dir)
    duplicates = report["near_duplicates"]
    assert not report["passed"] and report["roles"]["patient_key"]["passed"]
    assert duplicates["unreadable"] == 1
    pairs = {frozenset((p["item_a"], p["item_b"])) for p in duplicates["pairs"]}
    assert frozenset((manifest["item_id"].iloc[0], "dup")) in pairs
    assert "FAILED" in format_report(report)


def _features(folder: Path, manifest: pd.DataFrame) -> np.ndarray:
    from clinical.splits.arrays import thumbnails

    stack, ok = thumbnails(manifest, folder, size=16)
    assert ok.all()
    return stack.reshape(len(manifest), -1)


def test_inflation_is_clearly_positive_with_a_patient_effect(cohort: tuple[Path, pd.DataFrame]) -> None:
    folder, manifest = cohort
    result = leakage_inflation(_features(folder, manifest), manifest, folds=5, seed=0, n_boot=500)
    print("inflation with patient effect:", json.dumps(result))
    assert result["auroc_item_split"] > result["auroc_patient_split"]
    assert result["inflation"] > 0.15
    assert result["ci_low"] > 0.05
    # repeated over split seeds: the mean of the per-seed differences, the split's variability in the interval
    assert result["n_seeds"] == len(result["per_seed"]) == 5 and result["between_variance"] > 0
    assert result["inflation"] == pytest.approx(np.mean([s["inflation"] for s in result["per_seed"]]))


def test_inflation_is_near_zero_without_a_patient_effect(no_effect: tuple[Path, pd.DataFrame]) -> None:
    folder, manifest = no_effect
    result = leakage_inflation(_features(folder, manifest), manifest, folds=5, seed=0, n_boot=500)
    print("inflation without patient effect:", json.dumps(result))
    assert abs(result["inflation"]) < 0.05
    assert result["ci_low"] < 0.0 < result["ci_high"] or abs(result["inflation"]) < 0.02


def test_cli_split_then_audit(tmp_path: Path, cohort: tuple[Path, pd.DataFrame], capsys: pytest.CaptureFixture) -> None:
    folder, _ = cohort
    out = tmp_path / "split.parquet"
    assert main(["split", str(folder), "--folds", "4", "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fold" in printed and "label:finding" in printed and "digest" in printed
    _, meta = read_split(out)
    assert meta["seed"] == 3 and meta["cohort_digest"]
    report_path = tmp_path / "audit.json"
    code = main(
        ["audit", str(folder), "--split", str(out), "--inflation", "--n-boot", "200", "--report", str(report_path)]
    )
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert code == 0 and report["passed"] and report["split_made_for_this_cohort"]
    assert report["inflation"]["inflation"] > 0.1
    assert "one role per patient_key" in printed and "PASSED" in printed

    # growing with no new patient keeps every role: the same rows, the same digest
    grown = tmp_path / "grown.parquet"
    assert main(["split", str(folder), "--folds", "4", "--seed", "9", "--grow", str(out), "--out", str(grown)]) == 0
    assert read_split(grown)[1]["digest"] == meta["digest"]
    assert read_split(grown)[1]["grown_from"] == meta["digest"]

    assert main(["split", str(folder), "--site-holdout", "C", "--out", str(out)]) == 2
    assert "not a site of this manifest" in capsys.readouterr().err

"""The PET/CT study's parts: the synthetic task, SUVbw, series stacked as channels, slices as items."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch

from clinical.cohort import read_manifest, read_rejections
from clinical.cohort.synthetic.petct import SITES, _grids, _spot_counts, _spots, generate_petct
from clinical.cohort.synthetic.sizes import SIZES
from clinical.data import ManifestDataset, independent_slices, slice_items
from clinical.errors import ConfigurationError, ManifestError
from clinical.ingest import ingest, read_slice_labels
from clinical.ingest.channels import SUV_RANGE
from clinical.ingest.reasons import Reason, Rejected
from clinical.ingest.suv import suv_bw_factor
from clinical.splits import check_no_leakage, split_manifest
from clinical.training import TrainConfig

KEY = b"p" * 32
SPEC = dataclasses.replace(SIZES["tiny"], petct_patients_per_site=2, petct_shape=(8, 24, 24))


def _generate(out: Path, **options) -> pd.DataFrame:
    values = {"seed": 0, "patient_effect": True, "finding_strength": 1.0, **options}
    generate_petct(out, SPEC, **values)
    return pd.read_csv(out / "petct" / "ground_truth.csv")


@pytest.fixture(scope="module")
def synth(module_tmp) -> Path:
    out = module_tmp("petct")
    _generate(out)
    return out


@pytest.fixture(scope="module")
def cohort(synth, module_tmp) -> Path:
    out = module_tmp("cohort")
    ingest(synth / "petct", out, labels=synth / "petct" / "labels.csv", channels=("PT", "CT"), workers=0, key=KEY,
           progress=False)
    return out


def _series(synth: Path, files: str) -> dict[str, list[pydicom.Dataset]]:
    by_modality: dict[str, list[pydicom.Dataset]] = {}
    for name in json.loads(files):
        ds = pydicom.dcmread(synth / "petct" / name)
        by_modality.setdefault(ds.Modality, []).append(ds)
    return by_modality


# --- the synthetic task ------------------------------------------------------------------------------------------


def test_each_study_has_a_ct_and_a_coregistered_pet_of_its_own_grid(synth):
    truth = pd.read_csv(synth / "petct" / "ground_truth.csv")
    assert set(truth["site"]) == {"northfield", "riverside"} and set(truth["label"]) == {"negative", "positive"}
    for row in truth.itertuples():
        series = _series(synth, row.files)
        ct, pet = series["CT"], series["PT"]
        assert {ds.FrameOfReferenceUID for ds in ct + pet} == {row.frame_uid}
        assert len({ds.SeriesInstanceUID for ds in ct + pet}) == 2
        assert (pet[0].Rows, float(pet[0].PixelSpacing[0])) != (ct[0].Rows, float(ct[0].PixelSpacing[0]))
        assert pet[0].Units == "BQML" and pet[0].DecayCorrection == "START" and float(pet[0].PatientWeight) > 0
        drug = pet[0].RadiopharmaceuticalInformationSequence[0]
        assert float(drug.RadionuclideTotalDose) > 0 and float(drug.RadionuclideHalfLife) == pytest.approx(6586.2)
        slices = json.loads(row.slice_labels)
        assert len(slices) == len(ct)
        assert ("positive" in slices) == (row.label == "positive")  # a patient is positive through their slices


def test_nothing_but_the_lesion_tells_a_positive_slice(synth):
    # half of each centre's patients are positive: the centre, visible on every slice, carries no label
    truth = pd.read_csv(synth / "petct" / "ground_truth.csv")
    counts = pd.crosstab(truth["site"], truth["label"])
    assert (counts["positive"] == counts["negative"]).all()
    # every CT slice is about as likely to cut a sphere wherever it lies along z (end slices 5 % less by
    # design); before, spheres sat in the middle 80 % and a slice's place told its label
    for site in SITES:
        ct, _ = _grids((16, 32, 32), site, np.zeros(3))
        centres, radii = _spots(np.random.default_rng(1), 20_000, ct, site)
        z = ct.origin[2] + np.arange(16) * ct.spacing[0]
        cuts = np.abs(z[:, None] - centres[None, :, 2]) < radii[None, :]  # slice × sphere
        cut = cuts.mean(axis=1)
        assert cut[1:-1].max() / cut[1:-1].min() < 1.05 and cut[[0, -1]].min() > 0.9 * cut[1:-1].mean(), site
        assert cuts.any(axis=0).all()  # each sphere cuts a slice


def test_the_number_of_spots_on_pet_says_nothing_of_the_label():
    rng, lesion_rng = np.random.default_rng(0), np.random.default_rng(1)
    draws = {positive: np.array([_spot_counts(rng, lesion_rng, positive=positive) for _ in range(20_000)])
             for positive in (True, False)}
    totals = {positive: np.bincount(counts.sum(axis=1), minlength=4) / len(counts)
              for positive, counts in draws.items()}
    np.testing.assert_allclose(totals[True], totals[False], atol=0.02)
    assert totals[True][0] == 0 and set(totals[True].nonzero()[0]) == {1, 2, 3}
    # a positive patient has a lesion, a negative one none
    assert (draws[True][:, 0] >= 1).all() and (draws[False][:, 0] == 0).all()


def test_suv_from_the_synthetic_tags_matches_the_phantom(synth):
    truth = pd.read_csv(synth / "petct" / "ground_truth.csv")
    for row in truth.itertuples():
        pet = _series(synth, row.files)["PT"]
        # the factor the tags give is the one the phantom was written with (relative error of the DS strings)
        assert suv_bw_factor(pet[0]) == pytest.approx(row.suv_per_bqml, rel=1e-5)


def test_suv_bw_against_a_hand_computation():
    ds = pydicom.Dataset()
    ds.Units, ds.DecayCorrection, ds.PatientWeight, ds.SeriesTime = "BQML", "START", "70", "093000"
    drug = pydicom.Dataset()
    drug.RadiopharmaceuticalStartTime = "083000"  # one hour before the series
    drug.RadionuclideTotalDose, drug.RadionuclideHalfLife = "370000000", "6586.2"
    ds.RadiopharmaceuticalInformationSequence = [drug]
    # by hand: 370 MBq × 2^(−3600/6586.2) = 370e6 × 0.684633 = 253.314 MBq at the series start;
    # SUVbw per Bq/ml = 70 000 g / 253.314e6 Bq = 2.76337e-4
    assert suv_bw_factor(ds) == pytest.approx(2.76337e-4, rel=1e-5)
    ds.DecayCorrection = "ADMIN"  # already corrected to the injection: no decay
    assert suv_bw_factor(ds) == pytest.approx(70000 / 370e6)
    ds.DecayCorrection = "NONE"
    with pytest.raises(Rejected, match="Decay Correction") as error:
        suv_bw_factor(ds)
    assert error.value.code is Reason.SUV_TAGS


def test_patient_effect_and_ct_signal_switch(tmp_path):
    on = _generate(tmp_path / "on")
    off = _generate(tmp_path / "off", patient_effect=False)
    hidden = _generate(tmp_path / "hidden", ct_signal=False)

    def ct(out: Path, files: str) -> np.ndarray:
        return np.stack([ds.pixel_array.astype(float) for ds in _series(out, files)["CT"]])

    # the label-free signature: per patient, the background varies little from slice to slice; drawn per slice, a lot
    body = [np.median(ct(tmp_path / "on", on.files[0])[k][8:16, 8:16]) for k in range(8)]
    each = [np.median(ct(tmp_path / "off", off.files[0])[k][8:16, 8:16]) for k in range(8)]
    assert np.std(each) > 2 * np.std(body)
    positive = on.index[on["label"] == "positive"][0]
    with_signal = ct(tmp_path / "on", on.files[positive])
    without = ct(tmp_path / "hidden", hidden.files[positive])
    # same draws except the lesions' CT contrast (LESION_HU): they differ on the lesions' slices, near them only
    # through the soft edge (half a pixel, ~10 mm here), and not at all beyond three edges from every lesion
    labels = np.array(json.loads(on.slice_labels[positive])) == "positive"
    z = json.loads(on.ct_origin[positive])[2] + np.arange(8) * json.loads(on.ct_spacing[positive])[0]
    centres, radii = np.array(json.loads(on.lesion_centers_mm[positive])), json.loads(on.lesion_radii_mm[positive])
    near = (np.abs(z[:, None] - centres[None, :, 2]) < np.array(radii)[None, :] + 32.0).any(axis=1)
    diff = np.abs(with_signal - without).max(axis=(1, 2))
    assert (diff[labels] > 30).all() and (diff[~near] == 0).all()


# --- series stacked as channels ----------------------------------------------------------------------------------


def test_ingest_pairs_pet_and_ct_into_one_two_channel_item(synth, cohort):
    truth = pd.read_csv(synth / "petct" / "ground_truth.csv")
    manifest = read_manifest(cohort)
    assert len(manifest) == len(truth) and set(manifest["modality"]) == {"PT+CT"}
    for row in manifest.itertuples():
        ct_shape = json.loads(truth.loc[truth["label"] == row.label, "ct_shape"].iloc[0])
        assert list(row.shape) == [2, *ct_shape]  # PET resampled onto the CT grid
        pet = np.load(cohort / row.path)[0].astype(float) / 65535 * SUV_RANGE
        assert 0.3 < np.median(pet[pet > 0.1]) < 5  # soft tissue and liver uptake in SUV, not Bq/ml


def _planted_series(folder: Path, modality: str, shape, spacing, origin, point, frame: str, study: str) -> None:
    for k in range(shape[0]):
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.{ord(modality[0])}.{k + 1}"
        ds.Modality, ds.StudyInstanceUID, ds.FrameOfReferenceUID = modality, study, frame
        ds.SeriesInstanceUID, ds.PatientID = f"1.2.3.{ord(modality[0])}", "PLANTED"
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        pixels = np.zeros(shape[1:], np.uint16)
        if k == point[0]:
            pixels[point[1], point[2]] = 1000
        ds.Rows, ds.Columns = shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        if modality == "PT":
            ds.Units, ds.DecayCorrection, ds.PatientWeight = "BQML", "ADMIN", 70
            drug = pydicom.Dataset()
            drug.RadionuclideTotalDose, drug.RadionuclideHalfLife = 70e6, 6586.2  # SUV = Bq/ml / 1000
            ds.RadiopharmaceuticalInformationSequence = [drug]
        ds.PixelData = pixels.tobytes()
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{modality}{k}.dcm", enforce_file_format=True)


def test_a_planted_point_lands_in_the_same_voxel_in_both_channels(tmp_path):
    # CT: 8×16×16 voxels of 2 mm from (0, 0, 0); PET: 6×8×8 of 3×4×4 mm from (−2, −2, −1).
    # PET voxel (3, 3, 4) is at x = −2 + 4·4 = 14, y = −2 + 3·4 = 10, z = −1 + 3·3 = 8 mm: CT voxel (4, 5, 7).
    study = tmp_path / "study"
    _planted_series(study / "ct", "CT", (8, 16, 16), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (4, 5, 7), "1.9", "1.8")
    _planted_series(study / "pt", "PT", (6, 8, 8), (3.0, 4.0, 4.0), (-2.0, -2.0, -1.0), (3, 3, 4), "1.9", "1.8")
    ingest(study, tmp_path / "cohort", channels=("PT", "CT"), ct_window="bone", workers=0, key=KEY, progress=False)
    manifest = read_manifest(tmp_path / "cohort")
    assert len(manifest) == 1 and list(manifest["shape"].iloc[0]) == [2, 8, 16, 16]
    array = np.load(tmp_path / "cohort" / manifest["path"].iloc[0]).astype(float)
    pet, ct = array
    assert np.unravel_index(pet.argmax(), pet.shape) == (4, 5, 7) == np.unravel_index(ct.argmax(), ct.shape)
    assert pet.max() / 65535 * SUV_RANGE == pytest.approx(1.0, abs=1e-3)  # 1000 Bq/ml × 70 000 g / 70 MBq


def test_a_missing_or_mismatched_partner_is_a_rejection_with_its_code(synth, tmp_path):
    truth = pd.read_csv(synth / "petct" / "ground_truth.csv")
    source = tmp_path / "source"
    shutil.copytree(synth / "petct", source)
    lone, other = (json.loads(f) for f in truth["files"][:2])
    for name in lone:
        if pydicom.dcmread(source / name, stop_before_pixels=True).Modality == "PT":
            (source / name).unlink()
    for name in other:
        ds = pydicom.dcmread(source / name)
        if ds.Modality == "PT":
            ds.FrameOfReferenceUID = "1.2.3.4.5"
            ds.save_as(source / name)
    report = ingest(source, tmp_path / "cohort", channels=("PT", "CT"), workers=0, key=KEY, progress=False)
    assert report.items == len(truth) - 2
    codes = read_rejections(tmp_path / "cohort")["code"].value_counts()
    ct_files = [n for n in lone if (source / n).exists()]
    assert codes[str(Reason.CHANNEL_MISSING)] == len(ct_files)
    assert codes[str(Reason.CHANNEL_MISMATCH)] == len(other)


def test_channels_option_is_validated():
    with pytest.raises(ConfigurationError, match="channels must be two or more"):
        ingest([], "unused", channels=("PT",))


# --- slices as items ---------------------------------------------------------------------------------------------


def test_slices_keep_their_keys_and_labels_and_split_by_patient(synth, cohort):
    manifest = read_manifest(cohort)
    table = read_slice_labels(synth / "petct" / "slice_labels.csv", KEY)
    view = slice_items(manifest, slice_labels=table)
    assert len(view) == sum(s[1] for s in manifest["shape"]) and set(view["kind"]) == {"image"}
    merged = view.merge(table, on=["series_key", "slice"], suffixes=("", "_table"))
    assert len(merged) == len(view) and (merged["label"] == merged["label_table"]).all()
    assert (view.groupby("volume_id")["patient_key"].nunique() == 1).all()
    split = split_manifest(view, folds=2, seed=0, val_size=0)
    check_no_leakage(split, view)  # every slice of a patient in one role
    leaky = split_manifest(independent_slices(view), folds=2, seed=0, val_size=0)
    with pytest.raises(Exception, match="Leakage"):
        check_no_leakage(leaky, view)

    dataset = ManifestDataset(view, cohort, channels=("PT",))
    row = view.iloc[5]
    expected = np.load(cohort / row["path"])[0, row["slice"]]
    assert dataset[5]["image"].shape == (1, *expected.shape)
    np.testing.assert_array_equal(np.asarray(dataset[5]["image"])[0], expected.astype(np.float32))
    with pytest.raises(ManifestError, match="MR"):
        ManifestDataset(view, cohort, channels=("MR",))
    with pytest.raises(ManifestError, match="outside"):
        slice_items(manifest, slice_labels=table.assign(slice=table["slice"] + 100))


def test_channel_selection_in_the_recipe_must_match_in_channels():
    assert TrainConfig.build(channels=("PT",), in_channels=1).channels == ("PT",)
    with pytest.raises(ConfigurationError, match="in_channels=2"):
        TrainConfig.build(channels=("PT", "CT"), in_channels=1)


def test_cli_writes_the_task_and_ingests_the_pair(tmp_path, capsys, monkeypatch):
    from clinical.cli import main

    monkeypatch.setenv("CLINICAL_PSEUDONYM_KEY", KEY.decode())
    assert main(["synth", str(tmp_path / "synth"), "--tasks", "petct", "--no-ct-signal"]) == 0
    summary = json.loads((tmp_path / "synth" / "summary.json").read_text())
    assert summary["ct_signal"] is False and list(summary["tasks"]) == ["petct"]
    source = tmp_path / "synth" / "petct"
    assert main(["ingest", str(source), "--out", str(tmp_path / "c"), "--workers", "0", "--channels", "PT,CT",
                 "--labels", str(source / "labels.csv")]) == 0
    assert "rejected 0" in capsys.readouterr().out
    assert set(read_manifest(tmp_path / "c")["modality"]) == {"PT+CT"}


def test_cli_trains_on_slices_with_their_labels_a_channel_choice_and_the_centre(synth, cohort, tmp_path, monkeypatch,
                                                                                 capsys):
    from test_training_helpers import TINY

    from clinical.cli import main
    from clinical.splits import read_split, write_split
    from clinical.training import load_checkpoint

    monkeypatch.setenv("CLINICAL_PSEUDONYM_KEY", KEY.decode())
    manifest = read_manifest(cohort)
    write_split(split_manifest(manifest, folds=2, seed=0), tmp_path / "split.parquet")
    common = ["train", str(cohort), "--split", str(tmp_path / "split.parquet"), "--fold", "0", "--slices",
              "--slice-labels", str(synth / "petct" / "slice_labels.csv"), "--model", TINY, "--image-size", "16",
              "--epochs", "1", "--batch-size", "8", "--early-stopping-patience", "none",
              "--monitor-level", "item"]  # slices of one patient differ in label
    out = tmp_path / "both"
    assert main([*common, "--out", str(out), "--in-channels", "2", "--centre", "embedding"]) == 0
    slices = read_manifest(out / "slices" / "cohort")
    labels = read_slice_labels(synth / "petct" / "slice_labels.csv", KEY)
    assert len(slices) == sum(s[1] for s in manifest["shape"])
    assert slices.merge(labels, on=["series_key", "slice"], suffixes=("", "_csv")).eval("label == label_csv").all()
    sliced, _ = read_split(out / "slices" / "split.parquet")
    roles = sliced.merge(slices[["item_id", "volume_id"]], on="item_id").groupby(["fold", "volume_id"])["role"]
    assert (roles.nunique() == 1).all()  # every slice in its volume's role
    best = load_checkpoint(out / "fold-0" / "checkpoints" / "best.pt")
    assert best["sites"] and set(best["sites"]) <= set(manifest["site"]) and "site_embedding.weight" in best["model"]
    assert (best["config"]["in_channels"], best["config"]["centre"]) == (2, "embedding")

    pet = tmp_path / "pet"
    assert main([*common, "--out", str(pet), "--in-channels", "1", "--channels", "PT", "--intensity", "ingest"]) == 0
    best = load_checkpoint(pet / "fold-0" / "checkpoints" / "best.pt")
    assert best["sites"] == [] and best["config"]["intensity"] == "ingest"
    # the served model scales as training did: the SUV scale, not a z-score
    import mlflow

    from clinical.data import preset
    from clinical.tracking import save_classifier
    from clinical.training import load_result

    served = mlflow.pyfunc.load_model(str(save_classifier(load_result(pet / "fold-0"), tmp_path / "model")))
    wrapper = served.unwrap_python_model()
    assert wrapper.spec["intensity"] == "ingest"
    array = np.load(cohort / manifest["path"].iloc[0])[:1, 3].astype(np.float32)
    expected = preset("image", train=False, size=16, intensity="ingest")({"image": array.copy()})["image"]
    assert torch.allclose(wrapper.transform({"image": array.copy()})["image"], expected)
    assert expected.max() <= 1.0 and expected.min() >= 0.0
    assert main([*common, "--out", str(tmp_path / "v"), "--kind", "volume"]) == 2
    assert "--kind image" in capsys.readouterr().err

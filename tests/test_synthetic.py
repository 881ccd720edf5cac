"""The synthetic cohort: real files that the usual tools open, exact ground truth, determinism, planted signal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import tifffile
import tiffslide
from PIL import Image, ImageOps
from pydicom.pixels import apply_modality_lut
from pydicom.uid import UID
from scipy.stats import chi2_contingency
from skimage.transform import resize
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

from clinical.cli import main
from clinical.cohort.digest import file_digest
from clinical.cohort.synthetic import TASKS, generate_cohort, phi_values
from clinical.errors import ConfigurationError

DATA_SUFFIXES = {".dcm", ".nii", ".gz", ".tiff", ".png", ".jpg", ".tif"}
LABEL_KEYS = ["patient_id", "study_uid", "series_uid", "file"]


@pytest.fixture(scope="module")
def cohort(module_tmp) -> Path:
    out = module_tmp("synthetic") / "tiny"
    generate_cohort(out, size="tiny", seed=0)
    return out


def ground_truth(out: Path, task: str) -> pd.DataFrame:
    return pd.read_csv(out / task / "ground_truth.csv", dtype=str, keep_default_na=False)


def data_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)


def digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): file_digest(p) for p in sorted(out.rglob("*")) if p.is_file()}


def read_radiograph(path: Path) -> np.ndarray:
    """Presentation values (bright = dense) after the modality LUT and MONOCHROME1 inversion."""
    ds = pydicom.dcmread(path)
    image = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    return image.max() - image if ds.PhotometricInterpretation == "MONOCHROME1" else image


# --- layout and tables -------------------------------------------------------------------------------------------


def test_summary_counts_every_task(cohort: Path) -> None:
    summary = json.loads((cohort / "summary.json").read_text())
    assert list(summary["tasks"]) == list(TASKS)
    for task, info in summary["tasks"].items():
        truth = ground_truth(cohort, task)
        assert info["items"] == len(truth)
        assert len(info["sites"]) >= (2 if task == "petct" else 3), task  # the PET/CT study has two centres
        assert sum(info["labels"].values()) == len(truth)
    assert summary["tasks"]["radiographs"]["patients"] == 12
    assert len(summary["tasks"]["volumes"]["labels"]) == 3
    assert len(summary["tasks"]["slides"]["labels"]) == 2


def test_ground_truth_lists_every_file_once(cohort: Path) -> None:
    listed: list[Path] = []
    for task in TASKS:
        for files in ground_truth(cohort, task)["files"]:
            listed += [cohort / task / f for f in json.loads(files)]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == data_files(cohort)


def test_labels_have_exactly_one_key_and_agree_with_ground_truth(cohort: Path) -> None:
    expected_key = {
        "radiographs": {"patient_id"}, "volumes": {"series_uid", "file"}, "slides": {"file"}, "papyri": {"file"},
        "petct": {"study_uid"}, "fundus": {"file"},
    }
    for task in TASKS:
        labels = pd.read_csv(cohort / task / "labels.csv", dtype=str, keep_default_na=False)
        assert list(labels.columns) == [*LABEL_KEYS, "label"]
        filled = labels[LABEL_KEYS].ne("")
        assert (filled.sum(axis=1) == 1).all(), task
        assert set(filled.idxmax(axis=1)) == expected_key[task]
        truth = ground_truth(cohort, task)
        for key in expected_key[task]:
            rows = labels[labels[key] != ""]
            joined = rows.merge(truth[truth[key] != ""], on=key, suffixes=("", "_truth"))
            assert len(joined) >= len(rows) > 0
            assert (joined["label"] == joined["label_truth"]).all()


def test_radiograph_patients_have_one_label_and_one_to_three_studies(cohort: Path) -> None:
    truth = ground_truth(cohort, "radiographs")
    per_patient = truth.groupby("patient_id")
    assert (per_patient["label"].nunique() == 1).all()
    assert per_patient["study_uid"].nunique().between(1, 3).all()
    assert truth["study_uid"].is_unique and truth["sop_instance_uid"].is_unique


def test_names_on_disk_carry_no_phi(cohort: Path) -> None:
    phi = phi_values(cohort)
    assert len(phi) > 40
    for path in cohort.rglob("*"):
        relative = str(path.relative_to(cohort))
        assert not any(value in relative for value in phi), relative


def test_phi_values_are_the_headers(cohort: Path) -> None:
    phi = phi_values(cohort)
    for task in ("radiographs", "volumes"):
        truth = ground_truth(cohort, task)
        dicom = truth[truth["patient_name"] != ""].iloc[0]
        ds = pydicom.dcmread(cohort / task / json.loads(dicom["files"])[0], stop_before_pixels=True)
        for value in (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.AccessionNumber):
            assert value in phi
        assert ds.PatientID == dicom["patient_id"]


# --- every file opens with the usual tools -----------------------------------------------------------------------


def test_dcmdump_reads_every_dicom_file(cohort: Path) -> None:
    files = [str(p) for p in data_files(cohort) if p.suffix == ".dcm"]
    assert len(files) > 50
    for start in range(0, len(files), 200):
        result = subprocess.run(["dcmdump", "-q", *files[start : start + 200]], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[:2000]
        assert "E:" not in result.stderr, result.stderr[:2000]


def test_radiograph_headers_differ_by_site(cohort: Path) -> None:
    truth = ground_truth(cohort, "radiographs")
    seen = {}
    for _, row in truth.groupby("site").head(1).iterrows():
        ds = pydicom.dcmread(cohort / "radiographs" / row["file"])
        seen[row["site"]] = ds
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == row["sop_class_uid"]
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
            assert UID(uid).is_valid
        assert ds.pixel_array.shape == (int(row["rows"]), int(row["cols"]))
        assert max(ds.pixel_array.shape) <= 128
    assert {ds.Modality for ds in seen.values()} == {"CR", "DX"}
    assert {ds.PhotometricInterpretation for ds in seen.values()} == {"MONOCHROME1", "MONOCHROME2"}
    assert len({ds.InstitutionName for ds in seen.values()}) == 3
    assert any(float(getattr(ds, "RescaleSlope", 1)) != 1 for ds in seen.values())
    assert len({ds.pixel_array.shape for ds in seen.values()}) == 3
    assert any("ImagerPixelSpacing" in ds for ds in seen.values()) and any("PixelSpacing" in ds for ds in seen.values())


def test_dicom_volumes_sorted_by_position_match_ground_truth(cohort: Path) -> None:
    truth = ground_truth(cohort, "volumes")
    series = truth[truth["format"] == "dicom"]
    assert len(series) >= 3
    assert "True" in set(series["reversed_instances"]) and set(series["orientation"]) - {"axial"}
    for _, row in series.iterrows():
        files = json.loads(row["files"])
        datasets = [pydicom.dcmread(cohort / "volumes" / f) for f in reversed(files)]
        assert {ds.SeriesInstanceUID for ds in datasets} == {row["series_uid"]}
        orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        datasets.sort(key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))
        volume = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets]).astype(np.float32)
        positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=float)
        steps = np.diff(positions @ normal)
        spacing = json.loads(row["spacing"])
        assert list(volume.shape) == json.loads(row["shape"])
        np.testing.assert_allclose(steps, spacing[0], rtol=1e-4)
        np.testing.assert_allclose([float(v) for v in datasets[0].PixelSpacing], spacing[1:], rtol=1e-6)
        np.testing.assert_allclose(positions[0], json.loads(row["origin"]), atol=1e-3)
        np.testing.assert_allclose(volume.mean(axis=(1, 2)), json.loads(row["slice_means"]), atol=1e-3)
        numbers = [int(ds.InstanceNumber) for ds in datasets]
        assert numbers == (sorted(numbers, reverse=True) if row["reversed_instances"] == "True" else sorted(numbers))
        assert all(f.split("/")[-1][:-4] != str(n) for f, n in zip(files, numbers, strict=True))


def test_nifti_volumes_load_and_their_canonical_view_is_the_true_array(cohort: Path) -> None:
    truth = ground_truth(cohort, "volumes")
    nifti = truth[truth["format"] == "nifti"]
    assert set(nifti["compressed"]) == {"True", "False"}
    assert nifti["orientation"].nunique() >= 3
    for _, row in nifti.iterrows():
        image = nib.load(cohort / "volumes" / row["file"])
        assert "".join(nib.aff2axcodes(image.affine)) == row["orientation"]
        assert list(image.shape) == json.loads(row["nifti_shape"])
        np.testing.assert_allclose(image.affine, json.loads(row["affine"]), atol=1e-5)
        canonical = np.asarray(nib.as_closest_canonical(image).dataobj, dtype=np.float32).transpose(2, 1, 0)
        assert list(canonical.shape) == json.loads(row["shape"])
        np.testing.assert_allclose(canonical.mean(axis=(1, 2)), json.loads(row["slice_means"]), atol=1e-3)


def test_tiffslide_opens_every_slide_as_a_pyramid(cohort: Path) -> None:
    truth = ground_truth(cohort, "slides")
    for _, row in truth.iterrows():
        slide = tiffslide.TiffSlide(cohort / "slides" / row["file"])
        assert slide.level_count >= 3
        assert slide.level_count == int(row["level_count"])
        assert [list(d) for d in slide.level_dimensions] == json.loads(row["level_dimensions"])
        assert float(slide.properties["tiffslide.mpp-x"]) == pytest.approx(float(row["mpp"]), rel=1e-3)
        with tifffile.TiffFile(cohort / "slides" / row["file"]) as tif:
            assert tif.pages[0].is_tiled and tif.pages[0].tilewidth == 256
        boxes = json.loads(row["label_boxes"])
        assert bool(boxes) == (row["label"] == "positive")
        assert len(boxes) < int(row["n_islands"])
        slide.close()


def test_slide_labels_are_independent_of_the_site_and_patients_have_several_slides(cohort: Path) -> None:
    truth = ground_truth(cohort, "slides")
    patients = truth.drop_duplicates("patient_id")
    per_site = pd.crosstab(patients["site"], patients["label"]).to_numpy()
    assert per_site.shape == (3, 2) and (per_site == per_site[0, 0]).all()  # every site: as many of each label
    slides = pd.crosstab(truth["site"], truth["label"]).to_numpy()
    assert chi2_contingency(slides).pvalue > 0.5  # slides too: a site does not predict the label
    assert truth.groupby("patient_id").size().min() >= 2
    assert truth.groupby("patient_id")["label"].nunique().max() == 1


def test_pil_opens_every_photo_and_exif_orientation_is_as_recorded(cohort: Path) -> None:
    truth = ground_truth(cohort, "papyri")
    assert truth["label"].nunique() >= 4
    assert (truth["format"] == "tif").sum() == 1
    assert {"png", "jpg"} <= set(truth["format"])
    assert {"3", "6", "8"} <= set(truth["exif_orientation"])
    assert (truth["photo_kind"] == "large").sum() >= 1
    for _, row in truth.iterrows():
        path = cohort / "papyri" / row["file"]
        with Image.open(path) as picture:
            picture.load()
            assert picture.getexif().get(0x0112, 1) == int(row["exif_orientation"])
            upright = ImageOps.exif_transpose(picture)
            assert upright.size == (int(row["width"]), int(row["height"]))
        if row["format"] == "tif":
            pixels = tifffile.imread(path)
            assert pixels.dtype == np.uint16 and pixels.shape[2] == 3
        if row["photo_kind"] == "large":
            assert max(int(row["width"]), int(row["height"])) >= 2000
            boxes = json.loads(row["glyph_boxes"])
            assert len(boxes) == int(row["n_glyphs"]) >= 2
            for x, y, w, h in boxes:
                assert min(x, y) >= 0 and x + w <= int(row["width"]) and y + h <= int(row["height"])


# --- determinism ------------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(cohort: Path, tmp_path: Path) -> None:
    generate_cohort(tmp_path / "again", size="tiny", seed=0)
    generate_cohort(tmp_path / "other", size="tiny", seed=1, tasks=["radiographs", "volumes"])
    assert digests(tmp_path / "again") == digests(cohort)
    other = digests(tmp_path / "other")
    for task in ("radiographs", "volumes"):
        assert not ground_truth(tmp_path / "other", task).equals(ground_truth(cohort, task))
    assert not set(other.values()) & {v for k, v in digests(cohort).items() if k.endswith(".dcm")}


def test_bad_arguments_raise_configuration_errors(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="size must be one of"):
        generate_cohort(tmp_path / "a", size="huge")
    with pytest.raises(ConfigurationError, match="finding_strength"):
        generate_cohort(tmp_path / "b", finding_strength=-1)
    with pytest.raises(ConfigurationError, match="tasks"):
        generate_cohort(tmp_path / "c", tasks=["ultrasound"])
    with pytest.raises(ConfigurationError, match="not an empty folder"):
        generate_cohort(cohort)


# --- the planted signal and the patient effect -------------------------------------------------------------------


def radiograph_features(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth = ground_truth(out, "radiographs")
    features = []
    for name in truth["file"]:
        image = resize(read_radiograph(out / "radiographs" / name), (32, 32), anti_aliasing=True)
        features.append(((image - image.mean()) / image.std()).ravel())
    return np.array(features), (truth["label"] == "positive").to_numpy(int), truth["patient_id"].to_numpy()


def patient_split_auroc(features: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    model = LogisticRegression(C=0.05, max_iter=2000)
    scores = cross_val_predict(model, features, labels, groups=groups, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))


def similarity_gap(features: np.ndarray, groups: np.ndarray) -> float:
    """Mean correlation of two images of the same patient minus that of two images of different patients."""
    corr = np.corrcoef(features)
    same = groups[:, None] == groups[None, :]
    return float(corr[same & ~np.eye(len(groups), dtype=bool)].mean() - corr[~same].mean())


@pytest.fixture(scope="module")
def small_radiographs(module_tmp) -> dict[str, Path]:
    root = module_tmp("small")
    made = {}
    for name, effect, strength in (("strong", True, 3.0), ("none", True, 0.0), ("no_effect", False, 3.0)):
        made[name] = root / name
        generate_cohort(made[name], size="small", seed=3, patient_effect=effect, finding_strength=strength,
                        tasks=["radiographs"])
    return made


def test_a_linear_model_finds_the_strong_finding_across_patients(small_radiographs: dict[str, Path]) -> None:
    assert patient_split_auroc(*radiograph_features(small_radiographs["strong"])) > 0.85


def test_without_a_finding_the_label_cannot_be_learnt_across_patients(small_radiographs: dict[str, Path]) -> None:
    assert patient_split_auroc(*radiograph_features(small_radiographs["none"])) < 0.7


def test_patient_effect_makes_images_of_a_patient_alike(small_radiographs: dict[str, Path]) -> None:
    features, _, groups = radiograph_features(small_radiographs["strong"])
    with_effect = similarity_gap(features, groups)
    features, _, groups = radiograph_features(small_radiographs["no_effect"])
    without_effect = similarity_gap(features, groups)
    assert with_effect > 0.05
    assert with_effect > 3 * abs(without_effect)


def true_volume(out: Path, row: pd.Series) -> np.ndarray:
    """The (slices, rows, cols) array the ground truth describes, read back from the files."""
    files = json.loads(row["files"])
    if row["format"] == "nifti":
        image = nib.as_closest_canonical(nib.load(out / "volumes" / files[0]))
        return np.asarray(image.dataobj, dtype=np.float32).transpose(2, 1, 0)
    datasets = [pydicom.dcmread(out / "volumes" / f) for f in files]
    return np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets]).astype(np.float32)


def test_volume_lesions_have_their_class_appearance(cohort: Path) -> None:
    truth = ground_truth(cohort, "volumes")
    for _, row in truth.iterrows():
        volume = true_volume(cohort, row)
        spacing = np.array(json.loads(row["spacing"]))
        centre = np.array(json.loads(row["lesion_center"]))
        grid = np.indices(volume.shape).reshape(3, -1).T
        distance = np.linalg.norm((grid - centre) * spacing, axis=1).reshape(volume.shape)
        radius = float(row["lesion_radius_mm"])
        core = volume[distance < 0.35 * radius].mean()
        wall = volume[(distance > 0.75 * radius) & (distance < 0.95 * radius)].mean()
        around = volume[(distance > 1.6 * radius) & (distance < 2.2 * radius)].mean()
        if row["label"] == "cystic":
            assert core < wall - 20 and core < around, row["file"]
        else:
            assert core > around + 20, row["file"]


def test_positive_slides_have_dense_dark_nuclei_inside_their_boxes(cohort: Path) -> None:
    truth = ground_truth(cohort, "slides")
    dark = {}
    for _, row in truth.iterrows():
        slide = tiffslide.TiffSlide(cohort / "slides" / row["file"])
        pixels = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"), dtype=np.float32)
        slide.close()
        tissue = pixels.mean(axis=2) < 220
        nuclei = (pixels[..., 0] < 150) & tissue
        if row["label"] == "positive":
            x, y, w, h = json.loads(row["label_boxes"])[0]
            box = (slice(y, y + h), slice(x, x + w))
            dark[row["file"]] = nuclei[box].sum() / max(1, tissue[box].sum())
        else:
            dark[row["file"]] = nuclei.sum() / max(1, tissue.sum())
    positive = [dark[f] for f in truth.loc[truth["label"] == "positive", "file"]]
    negative = [dark[f] for f in truth.loc[truth["label"] == "negative", "file"]]
    assert min(positive) > 1.5 * max(negative)


# --- the command ------------------------------------------------------------------------------------------------


def test_clinical_synth_prints_the_summary_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["synth", str(tmp_path / "out"), "--size", "tiny", "--seed", "2", "--no-patient-effect",
                 "--finding-strength", "2", "--tasks", "slides", "papyri"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "patient_effect=False" in printed and "finding_strength=2" in printed
    assert "slides" in printed and "papyri" in printed and "radiographs" not in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["patient_effect"] is False and set(summary["tasks"]) == {"slides", "papyri"}


def test_clinical_synth_refuses_a_used_folder(cohort: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(cohort)]) == 2
    assert "not an empty folder" in capsys.readouterr().err

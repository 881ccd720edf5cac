"""The synthetic cohort's four tasks ingest with the expected items, labels, sites and geometry, and no PHI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from clinical.cohort import read_manifest, read_rejections
from clinical.cohort.synthetic import generate_cohort, phi_values
from clinical.cohort.synthetic.radiographs import SITES as RADIOGRAPH_SITES
from clinical.ingest import dicom, ingest, keyed_hash, load_key, source_paths

KEY = "synthetic-test-key"
TILE = 128
PHOTO_TILE = 512


@pytest.fixture(scope="module")
def synthetic(module_tmp) -> Path:
    out = module_tmp("synthetic")
    generate_cohort(out, size="tiny", seed=0)
    return out


@pytest.fixture(scope="module")
def cohorts(synthetic, module_tmp):
    """Each task ingested into its own cohort, with the log captured at DEBUG level."""
    records: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: records.append(handler.format(record))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        base = module_tmp("cohorts")
        options = {
            "radiographs": {},
            "volumes": {"site_depth": 1, "site_from": "folder"},
            "slides": {"tile_size": TILE, "max_tiles_per_slide": 6},
            "papyri": {"photo_tile": PHOTO_TILE},
        }
        reports = {
            task: ingest(synthetic / task, base / task, labels=synthetic / task / "labels.csv", key=KEY, workers=0,
                         progress=False, **extra)
            for task, extra in options.items()
        }
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    return base, reports, "\n".join(records)


def _truth(synthetic: Path, task: str) -> pd.DataFrame:
    return pd.read_csv(synthetic / task / "ground_truth.csv", dtype=str, keep_default_na=False)


def _manifest(cohort: Path) -> pd.DataFrame:
    """The manifest with the real source paths of the private map in place of the pseudonyms."""
    paths = source_paths(cohort)
    manifest = read_manifest(cohort)
    return manifest.assign(source=manifest["source"].map(lambda s: [paths[f] for f in s]))


def test_every_task_ingests_every_file(cohorts):
    base, reports, _ = cohorts
    for task, report in reports.items():
        assert report.rejected == 0, read_rejections(base / task).to_dict("records")
        assert report.ingested + report.skipped == report.found and report.ingested > 0
        assert set(read_rejections(base / task)["stage"]) <= {"walk"}  # the CSV sidecars, skipped by name


def test_radiographs(synthetic, cohorts):
    base, reports, _ = cohorts
    truth = _truth(synthetic, "radiographs").set_index("file")
    manifest = _manifest(base / "radiographs")
    assert len(manifest) == len(truth) == reports["radiographs"].items
    institution = {s.name: s.institution for s in RADIOGRAPH_SITES}
    key = load_key(KEY)
    for row in manifest.itertuples():
        expected = truth.loc[row.source[0]]
        assert row.kind == "image" and row.modality == expected["modality"]
        assert row.label == expected["label"]
        assert row.patient_key == keyed_hash(key, expected["patient_id"])
        assert row.series_key == keyed_hash(key, expected["series_uid"])
        assert row.site == institution[expected["site"]]  # default rule: InstitutionName (0008,0080)
        assert list(row.shape) == [1, int(expected["rows"]), int(expected["cols"])]
        spacing = json.loads(expected["pixel_spacing"] or expected["imager_pixel_spacing"])
        assert list(row.spacing) == pytest.approx(spacing, rel=1e-4)


def test_radiograph_sites_from_a_sites_csv(synthetic, cohorts, tmp_path):
    base, _, _ = cohorts
    sites = tmp_path / "sites.csv"
    pd.DataFrame({"institution": [s.institution for s in RADIOGRAPH_SITES],
                  "site": [s.name for s in RADIOGRAPH_SITES]}).to_csv(sites, index=False)
    # same options: the existing cohort is reused without decoding anything again
    report = ingest(synthetic / "radiographs", base / "radiographs", labels=synthetic / "radiographs" / "labels.csv",
                    sites=sites, key=KEY, workers=0, progress=False)
    assert report.units_run == 0
    truth = _truth(synthetic, "radiographs").set_index("file")
    manifest = _manifest(base / "radiographs")
    assert all(row.site == truth.loc[row.source[0], "site"] for row in manifest.itertuples())


def test_volumes_match_the_ground_truth_geometry(synthetic, cohorts):
    base, _, _ = cohorts
    truth = _truth(synthetic, "volumes")
    manifest = _manifest(base / "volumes")
    assert len(manifest) == len(truth)
    key = load_key(KEY)
    for expected in truth.itertuples():
        if expected.format == "dicom":
            row = manifest[manifest["series_key"] == keyed_hash(key, expected.series_uid)].iloc[0]
            files = json.loads(expected.files)
            assert sorted(row["source"]) == sorted(files)
            # the true array order is ascending along the normal: rebuild it from the files in that order
            datasets = [dicom.read_dataset(synthetic / "volumes" / f) for f in files]
            stacked = np.stack([dicom.modality_pixels(ds)[0] for ds in datasets])
            reference = dicom.window(stacked, datasets[0], modality=expected.modality)[..., 0]
            assert row["modality"] == expected.modality
        else:
            row = manifest[manifest["source"].map(lambda s, f=expected.file: s == [f])].iloc[0]
            canonical = nib.as_closest_canonical(nib.load(synthetic / "volumes" / expected.file))
            reference = np.asarray(canonical.dataobj, dtype=np.float32).transpose(2, 1, 0)
        array = np.load(base / "volumes" / row["path"])[0].astype(np.float64)
        assert list(row["shape"]) == [1, *json.loads(expected.shape)]
        assert list(row["spacing"]) == pytest.approx(json.loads(expected.spacing), rel=1e-3)
        if expected.format == "dicom":
            assert np.allclose(array / 65535, reference, atol=1e-4)
        else:
            assert np.corrcoef(array.ravel(), reference.ravel())[0, 1] > 0.97
        assert row["label"] == expected.label
        assert row["site"] == expected.site


def test_slides_are_tiled_with_the_slide_label(synthetic, cohorts):
    base, _, _ = cohorts
    truth = _truth(synthetic, "slides").set_index("file")
    manifest = _manifest(base / "slides")
    assert set(manifest["kind"]) == {"tile"}
    per_slide = manifest.groupby(manifest["source"].map(lambda s: s[0]))
    assert set(per_slide.groups) == set(truth.index)
    key = load_key(KEY)
    for name, tiles in per_slide:
        expected = truth.loc[name]
        width, height = json.loads(expected["level_dimensions"])[0]
        assert 1 <= len(tiles) <= 6
        assert set(tiles["label"]) == {expected["label"]}
        assert set(tiles["patient_key"]) == {keyed_hash(key, expected["patient_id"])}
        assert set(tiles["site"]) == {expected["site"]}
        assert ((tiles["tile_x"] + TILE <= width) & (tiles["tile_y"] + TILE <= height)).all()
        assert all(list(s) == pytest.approx([float(expected["mpp"])] * 2) for s in tiles["spacing"])


def test_papyri_photos_upright_tiled_and_labelled(synthetic, cohorts):
    base, _, _ = cohorts
    truth = _truth(synthetic, "papyri").set_index("file")
    manifest = _manifest(base / "papyri")
    expected_items = 0
    for name, row in truth.iterrows():
        width, height = int(row["width"]), int(row["height"])
        tiles = manifest[manifest["source"].map(lambda s, n=name: s == [n])]
        assert set(tiles["label"]) == {row["label"]}
        assert set(tiles["site"]) == {row["site"]}
        if width <= PHOTO_TILE and height <= PHOTO_TILE:
            expected_items += 1
            item = tiles.iloc[0]
            assert list(item["shape"]) == [3, height, width]  # upright: the EXIF orientation applied
            dtype = np.load(base / "papyri" / item["path"]).dtype
            assert dtype == (np.uint16 if row["bit_depth"] == "16" else np.uint8)
        else:
            expected_items += (width // PHOTO_TILE) * (height // PHOTO_TILE)
            assert all(list(s) == [3, PHOTO_TILE, PHOTO_TILE] for s in tiles["shape"])
    assert len(manifest) == expected_items


def test_no_fake_phi_in_anything_ingest_wrote(synthetic, cohorts):
    base, _, log = cohorts
    values = phi_values(synthetic)
    assert len(values) > 50  # names, IDs, birth dates, accession numbers of the DICOM tasks
    written = [p for p in base.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.parquet" for p in written) and any(p.suffix == ".npy" for p in written)
    for path in written:
        data = path.read_bytes()
        leaked = [v for v in values if v.encode() in data]
        assert not leaked, f"{path.relative_to(base)} holds PHI"
    assert log, "the log capture recorded nothing"
    assert not [v for v in values if v in log]

"""Ingest of a hand-made tree of good and broken inputs: every file is ingested or rejected with its reason."""

from __future__ import annotations

import argparse
import io
import shutil
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from clinical.cohort import read_manifest, read_rejections
from clinical.errors import ConfigurationError
from clinical.ingest import decoder_for, ingest, journal, register_decoder, source_paths

KEY = "edge-case-test-key"
PHI = ("Zyxwquort^Brambleton", "EDGEPHI0042", "19230405", "ACCZQ771")


def _ct(path: Path, *, series: str, position: float | None, shape=(32, 32), value: int = 1064, **changes) -> None:
    """A CT slice from pydicom's CT_small.dcm with our pixels, geometry and fake PHI."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber = PHI
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series
    pixels = np.full(shape, value, dtype=np.uint16)
    pixels[: shape[0] // 2] = 1024  # 0 HU after the intercept of -1024
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if position is None:
        del ds.ImagePositionPatient
    else:
        ds.ImagePositionPatient = [0.0, 0.0, position]
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _series(folder: Path, positions, *, shapes=None) -> str:
    uid = generate_uid()
    for k, position in enumerate(positions):
        shape = shapes[k] if shapes else (32, 32)
        _ct(folder / f"{generate_uid()[-12:]}.dcm", series=uid, position=position, shape=shape, value=1064 + k)
    return uid


def _bomb_png(path: Path, side: int = 20000) -> None:
    """A PNG whose header claims side×side pixels (far over PIL's limit) with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _slide(path: Path, side: int = 1024) -> None:
    """A pyramidal tiled TIFF (levels as SubIFDs) with a pink tissue disc on white glass, 0.5 µm per pixel."""
    yy, xx = np.mgrid[:side, :side]
    image = np.full((side, side, 3), 245, dtype=np.uint8)
    disc = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 3) ** 2
    image[disc] = (200, 90, 150)
    levels = [image, image[::2, ::2], image[::4, ::4]]
    resolution = (1e4 / 0.5, 1e4 / 0.5)
    with tifffile.TiffWriter(path) as tif:
        tif.write(levels[0], tile=(256, 256), subifds=2, resolution=resolution, resolutionunit="CENTIMETER",
                  photometric="rgb")
        for level, factor in ((levels[1], 2), (levels[2], 4)):
            tif.write(level, tile=(128, 128), subfiletype=1, photometric="rgb",
                      resolution=(resolution[0] / factor, resolution[1] / factor), resolutionunit="CENTIMETER")


@pytest.fixture(scope="module")
def tree(module_tmp) -> Path:
    root = module_tmp("edge") / "source"
    # a good CT series (4 slices), stored in reversed file order
    _series(root / "siteA" / "good_series", [7.5, 5.0, 2.5, 0.0])
    # inconsistent series
    _series(root / "siteA" / "mixed_sizes", [0.0, 2.5, 5.0], shapes=[(32, 32), (32, 32), (16, 16)])
    _series(root / "siteA" / "duplicates", [0.0, 2.5, 2.5, 5.0])
    _series(root / "siteA" / "gap", [0.0, 2.5, 5.0, 12.5])
    _series(root / "siteA" / "missing_position", [0.0, None, 5.0])
    # a single CT slice without geometry stays a 2D image; a named-wrong DICOM still ingests
    _ct(root / "siteA" / "single" / "scout.dcm", series=generate_uid(), position=None)
    _ct(root / "siteA" / "wrong_ext" / "really_dicom.jpg", series=generate_uid(), position=1.0)
    # a DICOM without Pixel Data, a structured report, a truncated file, a zero-byte file
    _ct(root / "siteA" / "nopixels" / "a.dcm", series=generate_uid(), position=0.0)
    ds = pydicom.dcmread(root / "siteA" / "nopixels" / "a.dcm")
    del ds.PixelData
    ds.save_as(root / "siteA" / "nopixels" / "a.dcm")
    shutil.copy(get_testdata_file("reportsi.dcm"), root / "siteA" / "report.dcm")
    _ct(root / "siteA" / "truncated" / "t.dcm", series=generate_uid(), position=0.0, shape=(64, 64))
    data = (root / "siteA" / "truncated" / "t.dcm").read_bytes()
    (root / "siteA" / "truncated" / "t.dcm").write_bytes(data[: len(data) - 3000])
    (root / "siteA" / "empty.dcm").write_bytes(b"")
    (root / "siteA" / "notes.bin").write_bytes(b"not an image at all" * 20)
    # a multi-frame DICOM and a MONOCHROME1 radiograph with a header window
    _ct(root / "siteB" / "cine" / "mf.dcm", series=generate_uid(), position=0.0)
    ds = pydicom.dcmread(root / "siteB" / "cine" / "mf.dcm")
    ds.set_pixel_data(np.stack([np.full((16, 16), 1024 + 10 * k, np.uint16) for k in range(5)]), "MONOCHROME2", 12)
    ds.save_as(root / "siteB" / "cine" / "mf.dcm")
    _ct(root / "siteB" / "cr" / "chest.dcm", series=generate_uid(), position=None, Modality="CR",
        PhotometricInterpretation="MONOCHROME1", WindowCenter=1100, WindowWidth=200,
        ImagerPixelSpacing=[0.2, 0.2], PixelSpacing=None)
    # NIfTI: good with NaN/inf (wrong extension), 4D, zero-sized
    nifti = root / "siteC" / "patient1"
    nifti.mkdir(parents=True)
    volume = np.random.default_rng(0).normal(size=(8, 6, 4)).astype(np.float32)
    volume[0, 0, 0], volume[1, 0, 0], volume[2, 0, 0] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(volume, np.diag([0.5, 1.0, 2.0, 1.0])), nifti / "vol.nii.gz")
    (nifti / "vol.nii.gz").rename(nifti / "vol.data")
    nib.save(nib.Nifti1Image(np.ones((5, 5, 3, 3), np.int16), np.eye(4)), nifti / "series4d.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 0, 3), np.float32), np.eye(4)), nifti / "zero.nii")
    # photographs: 16-bit PNG, EXIF-rotated JPEG, 16-bit RGB TIFF, a PNG named .dcm, a bomb, a truncated JPEG
    photos = root / "siteD" / "papyrus1"
    photos.mkdir(parents=True)
    Image.fromarray(np.arange(30 * 20, dtype=np.uint16).reshape(30, 20) * 50).save(photos / "scan16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (40, 20), (120, 80, 40)).save(photos / "rotated.jpg", exif=exif)
    tifffile.imwrite(photos / "rgb16.tif", np.full((12, 10, 3), 40000, np.uint16), photometric="rgb")
    buffer = io.BytesIO()
    Image.new("L", (10, 10), 200).save(buffer, format="PNG")
    (photos / "image.dcm").write_bytes(buffer.getvalue())
    _bomb_png(photos / "bomb.png")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (photos / "cut.jpg").write_bytes(buffer.getvalue()[:400])
    # a whole slide
    (root / "siteE" / "patient9").mkdir(parents=True)
    _slide(root / "siteE" / "patient9" / "slide.tiff")
    # labels (not an input: excluded by name) and a sidecar that is skipped
    pd.DataFrame({"file": ["siteD/papyrus1/scan16.png"], "label": ["alpha"]}).to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(scope="module")
def cohort(tree, module_tmp):
    out = module_tmp("edge-cohort")
    report = ingest(tree, out, key=KEY, workers=0, labels=tree / "labels.csv", tile_size=128, max_tiles_per_slide=5,
                    progress=False)
    return out, report


def _with_paths(manifest: pd.DataFrame, out: Path) -> pd.DataFrame:
    """The manifest with the real source paths of the private map in place of the pseudonyms."""
    paths = source_paths(out)
    return manifest.assign(source=manifest["source"].map(lambda s: [paths[f] for f in s]))


def _outcomes(out: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    paths = source_paths(out)
    rejections = read_rejections(out)
    return _with_paths(read_manifest(out), out), dict(zip(rejections["file"].map(paths), rejections["reason"],
                                                          strict=True))


def test_invariant_and_every_file_accounted_for(cohort, tree):
    out, report = cohort
    files = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}
    manifest, rejected = _outcomes(out)
    ingested = {f for sources in manifest["source"] for f in sources}
    assert ingested | set(rejected) == files
    assert not ingested & set(rejected)
    assert rejected["labels.csv"] == "a labels or sites table of this ingest"  # skipped, with its reason
    assert (report.found, report.ingested, report.rejected + report.skipped) == (
        len(files), len(ingested), len(rejected))
    assert report.ingested + report.rejected + report.skipped == report.found
    assert (f"ingested {report.ingested} + rejected {report.rejected} + skipped {report.skipped} = found "
            f"{report.found}") in report.summary()


@pytest.mark.parametrize(
    ("file", "reason"),
    [
        ("siteA/empty.dcm", "empty file (0 bytes)"),
        ("siteA/notes.bin", "unrecognised content"),
        ("siteA/truncated/t.dcm", "cannot be decoded"),
        ("siteA/nopixels/a.dcm", "without Pixel Data"),
        ("siteA/report.dcm", "Basic Text SR Storage"),
        ("siteC/patient1/zero.nii", "zero-sized"),
        ("siteD/papyrus1/bomb.png", "decompression bomb"),
        ("siteD/papyrus1/cut.jpg", "PIL cannot"),
    ],
)
def test_bad_files_are_rejected_with_their_reason(cohort, file, reason):
    _, rejected = _outcomes(cohort[0])
    assert file in rejected
    assert reason in rejected[file]


@pytest.mark.parametrize("folder", ["mixed_sizes", "duplicates", "gap", "missing_position"])
def test_slices_that_cannot_form_a_volume_become_2d_images(cohort, tree, folder):
    manifest, rejected = _outcomes(cohort[0])
    files = [p.relative_to(tree).as_posix() for p in (tree / "siteA" / folder).iterdir()]
    images = manifest[manifest["source"].map(lambda s: s[0].startswith(f"siteA/{folder}/"))]
    assert files and not set(files) & set(rejected)
    assert sorted(f for s in images["source"] for f in s) == sorted(files)
    # mixed sizes are split into stacks by matrix size: the two 32×32 slices still form a volume
    assert set(images["kind"]) == ({"image", "volume"} if folder == "mixed_sizes" else {"image"})


def test_good_series_is_one_volume_in_position_order(cohort, tree):
    out, _ = cohort
    manifest, _ = _outcomes(out)
    row = manifest[manifest["source"].map(lambda s: s[0].startswith("siteA/good_series/"))].iloc[0]
    assert row["kind"] == "volume" and row["modality"] == "CT"
    assert list(row["shape"]) == [1, 4, 32, 32]
    assert row["spacing"][0] == pytest.approx(2.5)
    array = np.load(out / row["path"])
    assert array.dtype == np.uint16
    # slices were written with values 1064 + k at positions 7.5 - 2.5k: ascending position = descending value
    means = array[0, :, 20:, :].mean(axis=(1, 2))
    assert np.all(np.diff(means) < 0)
    positions = [float(pydicom.dcmread(tree / f).ImagePositionPatient[2]) for f in row["source"]]
    assert positions == sorted(positions)


def test_ct_window_maps_hounsfield_units(cohort):
    out, _ = cohort
    manifest, _ = _outcomes(out)
    row = manifest[manifest["source"].map(lambda s: s == ["siteA/single/scout.dcm"])].iloc[0]
    array = np.load(out / row["path"]).astype(np.float64) / 65535
    assert row["kind"] == "image" and list(row["shape"]) == [1, 32, 32]
    # soft-tissue window C40/W400: 0 HU → 0.4, 40 HU → 0.5
    assert array[0, 0, 0] == pytest.approx(0.4, abs=1e-3)
    assert array[0, -1, -1] == pytest.approx(0.5, abs=1e-3)


def test_monochrome1_is_inverted_and_header_window_used(cohort):
    out, _ = cohort
    manifest, _ = _outcomes(out)
    row = manifest[manifest["source"].map(lambda s: s == ["siteB/cr/chest.dcm"])].iloc[0]
    array = np.load(out / row["path"]).astype(np.float64) / 65535
    # stored 1024 → 0 after the intercept... CR keeps the modality LUT: values 0 and 40, window C1100/W200 clips both
    # to 0, and MONOCHROME1 inverts to 1 (bright)
    assert row["modality"] == "CR"
    assert np.allclose(array, 1.0)
    assert list(row["spacing"]) == pytest.approx([0.2, 0.2])


def test_multiframe_is_a_volume_and_wrong_extensions_do_not_matter(cohort):
    out, _ = cohort
    manifest, _ = _outcomes(out)
    by_file = {s[0]: r for s, (_, r) in zip(manifest["source"], manifest.iterrows(), strict=True)}
    assert list(by_file["siteB/cine/mf.dcm"]["shape"]) == [1, 5, 16, 16]
    assert by_file["siteA/wrong_ext/really_dicom.jpg"]["kind"] == "image"
    assert by_file["siteD/papyrus1/image.dcm"]["kind"] == "photo"
    assert by_file["siteC/patient1/vol.data"]["kind"] == "volume"


def test_nifti_canonical_nan_and_4d(cohort):
    out, _ = cohort
    manifest, _ = _outcomes(out)
    volume = manifest[manifest["source"].map(lambda s: s == ["siteC/patient1/vol.data"])].iloc[0]
    assert list(volume["shape"]) == [1, 4, 6, 8]  # (z, y, x) of the RAS array (8, 6, 4)
    assert list(volume["spacing"]) == pytest.approx([2.0, 1.0, 0.5])
    assert np.isfinite(np.load(out / volume["path"]).astype(np.float64)).all()
    frames = manifest[manifest["source"].map(lambda s: s == ["siteC/patient1/series4d.nii"])]
    assert sorted(frames["frame"]) == [0, 1, 2]
    assert frames["item_id"].nunique() == 3
    assert all(list(s) == [1, 3, 5, 5] for s in frames["shape"])


def test_photos_keep_depth_and_orientation(cohort):
    out, _ = cohort
    manifest, _ = _outcomes(out)
    by_file = {s[0]: r for s, (_, r) in zip(manifest["source"], manifest.iterrows(), strict=True)}
    scan16 = np.load(out / by_file["siteD/papyrus1/scan16.png"]["path"])
    assert scan16.dtype == np.uint16 and scan16.shape == (1, 30, 20) and scan16.max() == 599 * 50
    assert list(by_file["siteD/papyrus1/rotated.jpg"]["shape"]) == [3, 40, 20]  # EXIF 6: 40×20 shown upright 20×40
    rgb16 = np.load(out / by_file["siteD/papyrus1/rgb16.tif"]["path"])
    assert rgb16.dtype == np.uint16 and rgb16.shape == (3, 12, 10)
    assert by_file["siteD/papyrus1/scan16.png"]["label"] == "alpha"
    assert by_file["siteD/papyrus1/scan16.png"]["site"] == "siteD"
    assert by_file["siteD/papyrus1/scan16.png"]["modality"] == "XC"


def test_slide_tiles_capped_deterministic_on_tissue(cohort, tree, tmp_path):
    out, _ = cohort
    manifest, _ = _outcomes(out)
    tiles = manifest[manifest["kind"] == "tile"].sort_values(["tile_y", "tile_x"])
    assert len(tiles) == 5
    assert set(tiles["tile_level"]) == {0}
    assert all(list(s) == [3, 128, 128] for s in tiles["shape"])
    assert all(list(s) == pytest.approx([0.5, 0.5]) for s in tiles["spacing"])
    centres = zip(tiles["tile_x"] + 64, tiles["tile_y"] + 64, strict=True)
    assert all((x - 512) ** 2 + (y - 512) ** 2 < 400**2 for x, y in centres)  # on the disc of radius 341
    again = ingest(tree / "siteE", tmp_path, key=KEY, workers=0, tile_size=128, max_tiles_per_slide=5, progress=False)
    assert again.items == 5
    assert set(read_manifest(tmp_path)["item_id"]) == set(tiles["item_id"])


def test_no_phi_anywhere_in_the_cohort(cohort):
    out, _ = cohort
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in PHI:
                assert value.encode() not in data, f"{value} found in {path.name}"


def test_manifest_keys_are_keyed_hashes(cohort):
    from clinical.ingest import keyed_hash, load_key

    manifest, _ = _outcomes(cohort[0])
    row = manifest[manifest["modality"] == "CT"].iloc[0]
    assert row["patient_key"] == keyed_hash(load_key(KEY), PHI[1])
    photo = manifest[manifest["modality"] == "XC"].iloc[0]
    assert photo["patient_key"] == keyed_hash(load_key(KEY), "papyrus1")


def test_rerun_is_incremental_and_never_duplicates(tree, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(tree / "siteA", source / "siteA")
    out = tmp_path / "cohort"
    first = ingest(source, out, key=KEY, workers=0, progress=False)
    second = ingest(source, out, key=KEY, workers=0, progress=False)
    assert second.units_run == 0 and second.items == first.items and second.digest == first.digest
    _ct(source / "siteA" / "late" / "new.dcm", series=generate_uid(), position=None)
    third = ingest(source, out, key=KEY, workers=0, progress=False)
    assert third.units_run == 1 and third.items == first.items + 1 and third.found == first.found + 1
    manifest = read_manifest(out)
    assert manifest["item_id"].is_unique
    assert len(list((out / "arrays").rglob("*.npy"))) == len(manifest)
    (source / "siteA" / "late" / "new.dcm").unlink()
    fourth = ingest(source, out, key=KEY, workers=0, progress=False)
    assert fourth.items == first.items and fourth.digest == first.digest
    assert len(list((out / "arrays").rglob("*.npy"))) == first.items


def test_interrupted_run_resumes(tree, tmp_path, monkeypatch):
    source = tmp_path / "src"
    for k in range(4):
        _ct(source / "site" / f"p{k}" / "x.dcm", series=generate_uid(), position=None, value=1000 + k)
    out = tmp_path / "cohort"
    calls = {"n": 0}
    original = decoder_for("dicom_image")

    def interrupt_third(unit, options):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        yield from original(unit, options)

    monkeypatch.setattr(journal, "FLUSH_EVERY", 1)
    register_decoder("dicom_image", interrupt_third)
    try:
        with pytest.raises(KeyboardInterrupt):
            ingest(source, out, key=KEY, workers=0, progress=False)
    finally:
        register_decoder("dicom_image", original)
    resumed = ingest(source, out, key=KEY, workers=0, progress=False)
    assert (resumed.units_reused, resumed.units_run, resumed.items) == (2, 2, 4)


def test_process_pool_gives_the_same_cohort(tree, cohort, tmp_path):
    subset = tmp_path / "src"
    shutil.copytree(tree / "siteA", subset / "siteA")
    shutil.copytree(tree / "siteC", subset / "siteC")
    serial = ingest(subset, tmp_path / "serial", key=KEY, workers=0, progress=False)
    pooled = ingest(subset, tmp_path / "pooled", key=KEY, workers=2, progress=False)
    assert pooled.digest == serial.digest
    assert (pooled.ingested, pooled.rejected) == (serial.ingested, serial.rejected)


def test_resampling_to_target_size(tree, tmp_path):
    report = ingest(tree / "siteA" / "good_series", tmp_path, key=KEY, workers=0, target_size=(16, 16),
                    progress=False)
    row = read_manifest(tmp_path).iloc[0]
    assert report.items == 1 and list(row["shape"]) == [1, 4, 16, 16]
    assert list(row["spacing"])[1:] == pytest.approx([2 * float(pydicom.dcmread(
        next((tree / "siteA" / "good_series").iterdir())).PixelSpacing[0])] * 2)


def test_bad_options_raise_configuration_errors(tree, tmp_path):
    with pytest.raises(ConfigurationError, match="ct_window"):
        ingest(tree, tmp_path, key=KEY, ct_window="liver")
    with pytest.raises(ConfigurationError, match="workers"):
        ingest(tree, tmp_path, key=KEY, workers=-1)
    with pytest.raises(ConfigurationError, match="does not exist"):
        ingest(tmp_path / "nowhere", tmp_path, key=KEY)


def test_cli_prints_the_invariant(tree, tmp_path, capsys, monkeypatch):
    from clinical.cli import ingest as ingest_command

    monkeypatch.setenv("CLINICAL_PSEUDONYM_KEY", KEY)
    parser = argparse.ArgumentParser()
    ingest_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["ingest", str(tree / "siteA"), "--out", str(tmp_path / "c"), "--workers", "0"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "= found" in printed and "rejections" in printed
    for value in PHI:
        assert value not in printed


def test_labels_csv_can_name_the_patient_and_sites_csv_the_site(tree, tmp_path):
    from clinical.ingest import keyed_hash, load_key

    labels = tmp_path / "labels.csv"
    table = {"file": ["papyrus1/scan16.png"], "patient_id": ["P-77"], "label": ["beta"]}
    pd.DataFrame(table).to_csv(labels, index=False)
    sites = tmp_path / "sites.csv"
    pd.DataFrame({"folder": ["papyrus1"], "site": ["museum"]}).to_csv(sites, index=False)
    ingest(tree / "siteD", tmp_path / "c", key=KEY, workers=0, labels=labels, sites=sites, progress=False)
    manifest = _with_paths(read_manifest(tmp_path / "c"), tmp_path / "c")
    manifest.index = manifest["source"].map(lambda s: s[0])
    assert manifest.loc["papyrus1/scan16.png", "patient_key"] == keyed_hash(load_key(KEY), "P-77")
    assert manifest.loc["papyrus1/scan16.png", "label"] == "beta"
    assert pd.isna(manifest.loc["papyrus1/rgb16.tif", "label"])  # unlabelled items are kept
    assert manifest.loc["papyrus1/rgb16.tif", "patient_key"] == keyed_hash(load_key(KEY), "papyrus1")
    assert set(manifest["site"]) == {"museum"}


def test_slide_tiles_at_a_lower_level(tree, tmp_path):
    ingest(tree / "siteE", tmp_path, key=KEY, workers=0, tile_size=64, tile_level=1, max_tiles_per_slide=None,
           progress=False)
    tiles = read_manifest(tmp_path)
    assert set(tiles["tile_level"]) == {1} and len(tiles) > 5
    assert all(list(s) == pytest.approx([1.0, 1.0]) for s in tiles["spacing"])  # 0.5 µm × downsample 2
    assert (tiles["tile_x"] % 128 == 0).all()  # level-0 coordinates of a 64-pixel grid at level 1

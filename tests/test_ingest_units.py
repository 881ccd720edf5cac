"""Small pieces of ingest: pseudonym keys, format detection, slice ordering, resampling, label tables."""

from __future__ import annotations

import gzip
import io
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from clinical.errors import ConfigurationError, InvalidSeriesError
from clinical.ingest.detect import detect_format
from clinical.ingest.identity import CONFIG_DIR_ENV, KEY_ENV, keyed_hash, load_key
from clinical.ingest.labels import read_key_table
from clinical.ingest.resample import resample, validate_target
from clinical.ingest.series import order_slices


def test_key_from_argument_environment_then_private_file(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "config"))
    monkeypatch.delenv(KEY_ENV, raising=False)
    generated = load_key()
    path = tmp_path / "config" / "pseudonym.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key() == generated  # generated once, then reused
    monkeypatch.setenv(KEY_ENV, "from-env")
    assert load_key() == b"from-env"
    assert load_key("explicit") == b"explicit"
    with pytest.raises(ConfigurationError, match="empty"):
        load_key(b"")


def test_keyed_hash_is_keyed_stable_and_ignores_dicom_padding():
    assert keyed_hash(b"k", "PAT001 ") == keyed_hash(b"k", "PAT001")
    assert keyed_hash(b"k", "PAT001") != keyed_hash(b"other", "PAT001")
    assert len(keyed_hash(b"k", "x")) >= 16 and "PAT001" not in keyed_hash(b"k", "PAT001")


def test_detect_by_content_not_extension(tmp_path):
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "a.png").write_bytes(ct)  # a DICOM whose preamble even starts like a TIFF
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG")
    (tmp_path / "b.dcm").write_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "JPEG")
    (tmp_path / "c.nii").write_bytes(buffer.getvalue())
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp_path / "d.nii")
    (tmp_path / "e.bin").write_bytes(gzip.compress((tmp_path / "d.nii").read_bytes()))
    (tmp_path / "f.gz").write_bytes(gzip.compress(b"just text" * 100))
    (tmp_path / "g.tif").write_bytes(b"II*\x00" + b"\x00" * 100)
    (tmp_path / "h.dcm").write_bytes(b"plain text that is not DICOM" * 10)
    found = {p.name: detect_format(p) for p in tmp_path.iterdir()}
    assert found == {"a.png": "dicom", "b.dcm": "png", "c.nii": "jpeg", "d.nii": "nifti", "e.bin": "nifti",
                     "f.gz": None, "g.tif": "tiff", "h.dcm": None}


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def test_order_slices_along_the_normal():
    positions = [(0.0, 0.0, z) for z in (5.0, -5.0, 0.0, 10.0)]
    order, spacing = order_slices([(8, 8)] * 4, positions, [AXIAL] * 4)
    assert order == [1, 2, 0, 3] and spacing == pytest.approx(5.0)
    # sagittal: rows along y, columns along -z; the normal is -x, so larger x comes first
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    order, spacing = order_slices([(8, 8)] * 3, [(x, 0.0, 0.0) for x in (0.0, 2.0, 1.0)], [sagittal] * 3)
    assert order == [1, 2, 0] and spacing == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("sizes", "positions", "orientations", "message"),
    [
        ([(8, 8), (8, 8), (4, 8)], [(0, 0, z) for z in (0, 1, 2)], [AXIAL] * 3, "mixed matrix sizes"),
        ([(8, 8)] * 3, [(0, 0, 0), None, (0, 0, 2)], [AXIAL] * 3, "lack Image Position"),
        ([(8, 8)] * 3, [(0, 0, z) for z in (0, 1, 1)], [AXIAL] * 3, "duplicate"),
        ([(8, 8)] * 4, [(0, 0, z) for z in (0, 1, 2, 4)], [AXIAL] * 4, "irregular slice gaps"),
        ([(8, 8)] * 2, [(0, 0, z) for z in (0, 1)], [AXIAL, (0, 1, 0, 0, 0, -1)], "different Image Orientation"),
    ],
)
def test_inconsistent_series_raise(sizes, positions, orientations, message):
    with pytest.raises(InvalidSeriesError, match=message):
        order_slices(sizes, positions, orientations)


def test_resample_by_spacing_and_size_keeps_dtype():
    volume = np.zeros((1, 10, 20, 20), np.uint16)
    volume[:, :, 5:15, 5:15] = 60000
    out, spacing = resample(volume, [2.0, 1.0, 1.0], target_spacing=(4.0, 2.0, 2.0))
    assert out.shape == (1, 5, 10, 10) and out.dtype == np.uint16
    assert spacing == pytest.approx([4.0, 2.0, 2.0])
    assert out[0, 2, 5, 5] == 60000 and out[0, 2, 0, 0] == 0
    out, spacing = resample(volume, [2.0, 1.0, 1.0], target_size=(8, 8))  # last two axes only
    assert out.shape == (1, 10, 8, 8) and spacing == pytest.approx([2.0, 2.5, 2.5])
    image = np.ones((3, 30, 40), np.uint8)
    out, spacing = resample(image, [float("nan"), 0.5], target_spacing=(1.0,))
    assert out.shape == (3, 30, 20)  # the axis of unknown spacing keeps its size
    with pytest.raises(ConfigurationError, match="target_size"):
        validate_target("target_size", (0, 4))


def test_label_table_hashes_ids_and_prefers_the_most_specific_key(tmp_path):
    key = b"k"
    pd.DataFrame({
        "patient_id": ["P1", "", "", ""],
        "series_uid": ["", "1.2.3", "", ""],
        "file": ["", "", "a/b.png", "c/d.png"],
        "label": ["neg", "pos", "alpha", "beta"],
    }).to_csv(tmp_path / "labels.csv", index=False)
    table = read_key_table(tmp_path / "labels.csv", "label", key)
    assert "P1" not in str(table.by)
    assert table.lookup(["x"], patient_key=keyed_hash(key, "P1")) == "neg"
    assert table.lookup(["x"], patient_key=keyed_hash(key, "P1"), series_key=keyed_hash(key, "1.2.3")) == "pos"
    assert table.lookup(["a/b.png"], series_key=keyed_hash(key, "1.2.3")) == "alpha"
    assert table.lookup(["zzz"]) is None
    pd.DataFrame({"file": ["a", "a"], "label": ["x", "y"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ConfigurationError, match="two different labels"):
        read_key_table(tmp_path / "bad.csv", "label", key)
    pd.DataFrame({"name": ["a"], "label": ["x"]}).to_csv(tmp_path / "nokey.csv", index=False)
    with pytest.raises(ConfigurationError, match="at least one of"):
        read_key_table(tmp_path / "nokey.csv", "label", key)

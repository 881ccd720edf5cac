"""Every file of pydicom's and nibabel's bundled test data is ingested or rejected with a reason."""

from __future__ import annotations

from pathlib import Path

import nibabel.testing
import pydicom.data
import pytest

from clinical.cohort import read_manifest, read_rejections
from clinical.ingest import ingest, read_file, source_paths


def _folders() -> list[Path]:
    ct = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    charset = Path(pydicom.data.get_charset_files()[0]).parent
    palettes = Path(pydicom.data.get_palette_files()[0]).parent
    return [ct, charset, palettes, Path(nibabel.testing.data_path)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("testdata")
    report = ingest(_folders(), out, key="testdata-key", workers=0, exclude=(), progress=False)
    return out, report


def test_every_file_is_ingested_or_rejected(cohort):
    out, report = cohort
    files = {f"{folder.name}/{p.relative_to(folder).as_posix()}" for folder in _folders() for p in folder.rglob("*")
             if p.is_file()}
    paths = source_paths(out)
    ingested = {paths[f] for sources in read_manifest(out)["source"] for f in sources}
    rejections = read_rejections(out)
    rejected = set(rejections["file"].map(paths))
    assert rejected.isdisjoint(ingested)
    assert ingested | rejected == files
    assert (report.found, report.ingested + report.rejected + report.skipped) == (len(files), len(files))
    assert rejections["reason"].str.len().gt(10).all()


def test_no_file_fell_through_to_the_safety_net(cohort):
    rejections = read_rejections(cohort[0])
    assert not rejections["reason"].str.startswith("unexpected").any(), rejections[
        rejections["reason"].str.startswith("unexpected")].to_dict("records")
    assert "engine" not in set(rejections["stage"])


def test_real_files_ingest(cohort):
    manifest = read_manifest(cohort[0])
    paths = source_paths(cohort[0])
    sources = {paths[s[0]] for s in manifest["source"]}
    rejections = read_rejections(cohort[0])
    codes = dict(zip(rejections["file"].map(paths), rejections["code"], strict=True))
    # uncompressed, RLE, JPEG-LS, JPEG 2000 and JPEG baseline decode through the installed plugins
    for name in ("test_files/CT_small.dcm", "test_files/SC_rgb_rle.dcm", "test_files/JPEGLSNearLossless_16.dcm",
                 "test_files/JPEG2000.dcm", "test_files/SC_rgb_jpeg_gdcm.dcm", "data/example4d.nii.gz"):
        if name not in sources:  # a copy of an instance kept in another transfer syntax: it still decodes alone
            assert codes.get(name) == "duplicate-instance", name
            assert read_file(pydicom.data.get_testdata_file(Path(name).name)), name
    assert {"image", "volume"} <= set(manifest["kind"])

"""Every file of pydicom's and nibabel's bundled test data is ingested or rejected with a reason."""

from __future__ import annotations

from pathlib import Path

import nibabel.testing
import numpy as np
import pydicom
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
def cohort(module_tmp):
    out = module_tmp("testdata")
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


def _pydicom_files() -> list[Path]:
    """The files pydicom ships (its test data, charset and palette files), none of them downloaded."""
    return sorted(p for folder in _folders()[:3] for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("ct_window", ["soft_tissue", "header"])
def test_the_scans_pixel_layout_decodes_as_a_parse_does(ct_window):
    """Every bundled DICOM file the scan records a layout for decodes, windowed, bit for bit as a parse of it does.

    The layout (:mod:`clinical.ingest.layout`) stands in for decoding's second parse; a file it could
    mis-decode must get none. Across the vendors' files of pydicom's test data most native ones get one.
    """
    from clinical.ingest import dicom
    from clinical.ingest.options import IngestOptions
    from clinical.ingest.scan import scan_file

    options = IngestOptions(keep_burned_in=True)
    laid_out = 0
    for path in _pydicom_files():
        record = scan_file(str(path), path.name, b"k" * 32)
        if record["format"] != "dicom" or record["pixels"] is None:
            continue
        laid_out += 1
        outcomes = []
        for layout in (record["pixels"], None):
            try:
                ds, pixels = dicom.load_pixels(path, options, layout=layout)
                modality = str(ds.get("Modality", "OT") or "OT").strip().upper()
                outcomes.append((pixels, dicom.window(pixels, ds, modality=modality, ct_window=ct_window),
                                 dicom.burned_in_risk(ds)))
            except Exception as error:  # the same refusal either way is as good as the same array
                outcomes.append(type(error).__name__)
        fast, parsed = outcomes
        if isinstance(parsed, str) or isinstance(fast, str):
            assert fast == parsed, path.name
            continue
        for a, b in zip(fast[:2], parsed[:2], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=path.name)
        assert fast[2] == parsed[2], path.name
    assert laid_out >= 60


def test_a_file_changed_since_the_scan_is_parsed_again(tmp_path):
    """A layout never decodes other bytes than those it was recorded from (the file's digest)."""
    from clinical.ingest import dicom
    from clinical.ingest.layout import header_from_layout
    from clinical.ingest.scan import scan_file

    path = tmp_path / "ct.dcm"
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.save_as(path)
    layout = scan_file(str(path), "ct.dcm", b"k" * 32)["pixels"]
    assert header_from_layout(layout, path.read_bytes()) is not None
    ds.RescaleIntercept = -1000  # same size, other pixels in HU
    ds.save_as(path)
    assert header_from_layout(layout, path.read_bytes()) is None
    _, pixels = dicom.load_pixels(path, layout=layout)
    assert float(pixels.min()) == float(ds.pixel_array.min()) - 1000


def test_a_file_too_large_to_hold_in_memory_is_screened_from_its_header(monkeypatch):
    """Past the in-memory limit a file is screened by a header-only parse before its pixels are read."""
    from clinical.ingest import dicom
    from clinical.ingest.options import IngestOptions

    monkeypatch.setattr(dicom, "_IN_MEMORY_BYTES", 0)
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    ds, pixels = dicom.load_pixels(path, IngestOptions())
    np.testing.assert_array_equal(pixels[0, ..., 0], dicom.apply_modality_lut(pydicom.dcmread(path).pixel_array, ds))


def _walked_and_parsed(data: bytes):
    """The scan's walk of a file's bytes and pydicom's parse of them with the same tags (None: the walk declined)."""
    import io

    from clinical.ingest import dicom
    from clinical.ingest.elements import read_wanted
    from clinical.ingest.layout import PIXEL_TAGS
    from clinical.ingest.series import STACK_TAGS

    keywords = (*dicom._HEADER_TAGS, *STACK_TAGS, *PIXEL_TAGS)
    walked = read_wanted(data, dicom._tag_set(keywords), dicom._DEFER_BYTES)
    try:
        parsed = pydicom.dcmread(io.BytesIO(data), force=True, defer_size=dicom._DEFER_BYTES,
                                 specific_tags=dicom._tags(keywords))
    except Exception as error:  # a file pydicom cannot read must not be one the walk reads
        parsed = error
    return walked, parsed


def _raw(ds) -> list[tuple]:
    return [(tuple(e) if isinstance(e, tuple) else (e.tag, e.VR, e.value)) for e in ds._dict.values()]


def test_the_scans_walk_of_the_elements_gives_pydicoms_parse():
    """The quick walk of each bundled file's elements gives what pydicom's reader gives, raw element for element.

    Files the walk declines (compressed ones among them are walked; deflated, odd or broken ones are
    not) are parsed by pydicom; across the vendors' files of pydicom's test data most are walked.
    """
    walked_files = sum(_walk_matches(path.read_bytes(), path.name) for path in _pydicom_files())
    assert walked_files >= 150


def _walk_matches(data: bytes, name: str) -> bool:
    """Whether the walk read ``data``; where it did, its data set is pydicom's."""
    walked, parsed = _walked_and_parsed(data)
    if walked is None:
        return False
    assert not isinstance(parsed, Exception), name
    assert _raw(walked) == _raw(parsed), name
    assert walked.file_meta == parsed.file_meta, name
    assert walked.preamble == parsed.preamble, name
    assert walked.original_encoding == parsed.original_encoding, name
    assert walked.original_character_set == parsed.original_character_set, name
    return True


def test_the_walk_declines_what_it_cannot_promise_to_read_as_pydicom_does(tmp_path):
    """Truncated, deflated and meta-less files, and a wanted sequence of undefined length, go to pydicom."""
    from pydicom.sequence import Sequence

    ct = Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()
    walked, _ = _walked_and_parsed(ct)
    assert walked is not None and "PixelData" in walked
    assert _walked_and_parsed(ct[:-100])[0] is None  # Pixel Data cut short
    assert _walked_and_parsed(ct[:200])[0] is None  # inside the File Meta
    for cut in range(300, len(ct), 61):  # anywhere else: declined, or read as pydicom reads what is left
        _walk_matches(ct[:cut], f"cut at {cut}")
    assert _walked_and_parsed(ct[128 + 4:])[0] is None  # no preamble nor 'DICM'
    deflated = Path(pydicom.data.get_testdata_file("image_dfl.dcm")).read_bytes()
    assert _walked_and_parsed(deflated)[0] is None
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.SharedFunctionalGroupsSequence = Sequence([pydicom.Dataset()])
    ds["SharedFunctionalGroupsSequence"].is_undefined_length = True
    ds.save_as(tmp_path / "sq.dcm")
    walked, parsed = _walked_and_parsed((tmp_path / "sq.dcm").read_bytes())
    assert walked is None and "SharedFunctionalGroupsSequence" in parsed


def test_a_headers_values_read_as_its_data_set_reads():
    """Each element's value from :func:`values_of` equals the data set's own read of it, for every bundled file."""
    from clinical.ingest import dicom
    from clinical.ingest.values import Values, values_of

    compared = 0
    for path in _pydicom_files():
        walked, parsed = _walked_and_parsed(path.read_bytes())
        ds = walked if walked is not None else parsed
        if isinstance(ds, Exception):
            continue
        with dicom.quiet_pydicom():
            values = values_of(ds)
            if not isinstance(values, Values):
                continue
            for keyword, value in values.items():
                if keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") and value is None:
                    assert keyword in ds, path.name  # deferred: known to be there, not read
                    continue
                assert value == ds[keyword].value, (path.name, keyword)
            assert getattr(values, "file_meta", None) == getattr(ds, "file_meta", None)
        compared += 1
    assert compared >= 150


def test_an_element_that_cannot_be_converted_leaves_the_data_set_to_report_it():
    """values_of gives back the data set itself, so the scan's reads raise where a read of the data set raises."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    from clinical.ingest.values import values_of

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    tag = BaseTag(0x00280010)  # Rows, US: two bytes
    ds._dict[tag] = RawDataElement(tag, "US", 3, b"\x01\x02\x03", 0, False, True)
    assert values_of(ds) is ds


def test_quiet_reading_skips_validation_that_only_warns_and_keeps_one_that_raises():
    from pydicom import config

    from clinical.ingest import dicom

    before = config.settings.reading_validation_mode
    try:
        for mode, inside in ((config.WARN, config.IGNORE), (config.RAISE, config.RAISE)):
            config.settings.reading_validation_mode = mode
            with dicom.quiet_pydicom():
                assert config.settings.reading_validation_mode == inside
                with dicom.quiet_pydicom():
                    assert config.settings.reading_validation_mode == inside
            assert config.settings.reading_validation_mode == mode
    finally:
        config.settings.reading_validation_mode = before

"""A hostile corpus: tiny files that claim huge sizes, truncated pixels, burned-in text, a worker killed mid-run.

Ingest must finish, account for every file with the expected rejection code, and stay within
1.5 GiB of peak memory with the default decoded-size budget; a worker killed with SIGKILL
costs only its unit.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

from clinical.cohort import read_manifest, read_rejections
from clinical.cohort.manifest import write_rejections
from clinical.errors import ConfigurationError, IngestError
from clinical.ingest import IngestOptions, ingest, read_file
from clinical.ingest.reasons import Reason, Rejected, code_of

KEY = "hostile-test-key"
PEAK_RSS_LIMIT = 1.5 * (1 << 30)


def _ct(path: Path, value: int = 1064, **changes) -> None:
    """A CT image of its own series from pydicom's CT_small.dcm, with ``changes`` applied to the header."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.set_pixel_data(np.full((32, 32), value, dtype=np.uint16), "MONOCHROME2", 12)
    for keyword, setting in changes.items():
        setattr(ds, keyword, setting)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _bomb_png(path: Path, side: int = 60000) -> None:
    """A PNG whose header claims side×side pixels with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _huge_slide(path: Path) -> None:
    """A 5 KB pyramidal TIFF whose levels claim 200000² and 50000² pixels (dimensions patched in place)."""
    image = np.full((512, 512, 3), 200, np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), subifds=1, photometric="rgb", compression="zlib")
        tif.write(image[::4, ::4], tile=(128, 128), subfiletype=1, photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path, mode="r+") as tif:
        page = tif.pages[0]
        page.tags["ImageWidth"].overwrite(200000)
        page.tags["ImageLength"].overwrite(200000)
        for offset in page.tags["SubIFDs"].value:
            tif.filehandle.seek(offset)
            level = tifffile.TiffPage(tif, index=(0, 0))
            level.tags["ImageWidth"].overwrite(50000)
            level.tags["ImageLength"].overwrite(50000)


def _gzip_bomb(path: Path, header_shape: tuple[int, ...], zero_bytes: int) -> None:
    """A gzipped NIfTI: a header of ``header_shape`` (int16) followed by ``zero_bytes`` of zeros, streamed."""
    header = nib.Nifti1Header()
    header.set_data_shape(header_shape)
    header.set_data_dtype(np.int16)
    buffer = io.BytesIO()
    header.write_to(buffer)
    buffer.write(b"\0" * (int(header.get_data_offset()) - buffer.tell()))
    block = b"\0" * (16 << 20)
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(buffer.getvalue())
        for _ in range(zero_bytes // len(block)):
            handle.write(block)


def _jpeg(size=(64, 64), seed=0) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


#: What each hostile file of the corpus must become: an item (None) or a rejection with this code.
EXPECTED: dict[str, Reason | None] = {
    "good/ct.dcm": None,
    "good/photo.jpg": None,
    "good/volume.nii.gz": None,
    "good/lying_header.data": None,  # header says 8³ voxels, the gzip stream goes on for 256 MiB: read 8³
    "dicom/huge_header.dcm": Reason.TOO_LARGE,
    "dicom/short_pixels.dcm": Reason.CORRUPT_PIXELS,
    "dicom/jpeg_cut_fragment.dcm": Reason.CORRUPT_PIXELS,
    "dicom/burned_in.dcm": Reason.BURNED_IN_ANNOTATION,
    "nifti/bomb.nii.gz": Reason.TOO_LARGE,  # 1.25 GiB of zeros gzipped to about 5 MB, the header honest
    "nifti/bomb_renamed.data": Reason.TOO_LARGE,  # the same, read from its bytes (not by nibabel's extension)
    "nifti/claims_4096_cubed.nii.gz": Reason.TOO_LARGE,
    "photos/bomb.png": Reason.TOO_LARGE,
    "photos/truncated.jpg": Reason.CORRUPT_PIXELS,
    "slides/huge_pyramid.tif": Reason.TOO_LARGE,
}


@pytest.fixture(scope="module")
def corpus(module_tmp) -> Path:
    root = module_tmp("hostile") / "source"
    _ct(root / "good" / "ct.dcm")
    (root / "good").mkdir(parents=True, exist_ok=True)
    (root / "good" / "photo.jpg").write_bytes(_jpeg())
    nib.save(nib.Nifti1Image(np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4), np.eye(4)),
             root / "good" / "volume.nii.gz")
    _gzip_bomb(root / "good" / "lying_header.data", (8, 8, 8), 256 << 20)

    _ct(root / "dicom" / "huge_header.dcm", Rows=60000, Columns=60000, NumberOfFrames=1000)
    _ct(root / "dicom" / "short_pixels.dcm", value=1100)
    ds = pydicom.dcmread(root / "dicom" / "short_pixels.dcm")
    ds.PixelData = ds.PixelData[:-600]
    ds.save_as(root / "dicom" / "short_pixels.dcm")
    ds = pydicom.dcmread(get_testdata_file("SC_jpeg_no_color_transform.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) * 2 // 3]])
    ds.save_as(root / "dicom" / "jpeg_cut_fragment.dcm")
    _ct(root / "dicom" / "burned_in.dcm", value=1200, BurnedInAnnotation="YES")

    (root / "nifti").mkdir()
    _gzip_bomb(root / "nifti" / "bomb.nii.gz", (2048, 2048, 160), 2048 * 2048 * 160 * 2)
    (root / "nifti" / "bomb_renamed.data").write_bytes((root / "nifti" / "bomb.nii.gz").read_bytes() + b"\0")
    _gzip_bomb(root / "nifti" / "claims_4096_cubed.nii.gz", (4096, 4096, 4096), 1 << 20)

    (root / "photos").mkdir()
    _bomb_png(root / "photos" / "bomb.png")
    data = _jpeg((256, 256), seed=1)
    (root / "photos" / "truncated.jpg").write_bytes(data[: len(data) * 3 // 5])
    (root / "slides").mkdir()
    _huge_slide(root / "slides" / "huge_pyramid.tif")
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == set(EXPECTED)
    return root


# The process's own peak is VmHWM, not RUSAGE_SELF: Linux carries ru_maxrss across exec, so a process
# started from a large pytest would report pytest's size.
_MEASURED_INGEST = """
import json, re, resource, sys
from pathlib import Path
from clinical.ingest import ingest
if __name__ == "__main__":
    report = ingest(sys.argv[1], sys.argv[2], key=sys.argv[3], workers=2, progress=False)
    peak_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
    print(json.dumps({
        "self": peak_kib * 1024,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
        "found": report.found, "ingested": report.ingested, "rejected": report.rejected,
    }))
"""


@pytest.fixture(scope="module")
def hostile_cohort(corpus, module_tmp) -> tuple[Path, dict]:
    """The corpus ingested with the default budget in a fresh process that reports its and its workers' peak RSS."""
    out = module_tmp("hostile-cohort")
    script = module_tmp("script") / "measured_ingest.py"
    script.write_text(_MEASURED_INGEST)
    done = subprocess.run([sys.executable, str(script), str(corpus), str(out), KEY], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads(done.stdout.strip().splitlines()[-1])


def test_every_hostile_file_is_accounted_for_with_its_code(hostile_cohort):
    out, figures = hostile_cohort
    rejections = read_rejections(out)
    manifest = read_manifest(out)
    wanted = Counter(str(code) for code in EXPECTED.values() if code is not None)
    assert Counter(rejections["code"]) == wanted, rejections[["stage", "code", "reason"]].to_dict("records")
    assert (figures["found"], figures["rejected"]) == (len(EXPECTED), sum(wanted.values()))
    assert figures["ingested"] == sum(code is None for code in EXPECTED.values())
    assert len({s for sources in manifest["source"] for s in sources}) == figures["ingested"]
    too_large = rejections[rejections["code"] == Reason.TOO_LARGE]
    header_claims = too_large[~too_large["reason"].str.contains("pixels exceeds max_pixels|decompression bomb")]
    assert len(header_claims) == 5
    assert header_claims["reason"].str.contains("MiB claimed by the header").all()
    assert header_claims["reason"].str.contains("max_decoded_mb=1024").all()
    assert rejections["reason"].str.contains("Burned In Annotation").sum() == 1


def test_peak_memory_stays_under_the_limit(hostile_cohort):
    _, figures = hostile_cohort
    assert figures["self"] < PEAK_RSS_LIMIT, figures
    assert figures["children"] < PEAK_RSS_LIMIT, figures


def test_lying_gzip_header_is_read_only_as_far_as_it_claims(corpus):
    (item,) = read_file(corpus / "good" / "lying_header.data")
    assert item.array.shape == (1, 8, 8, 8)


@pytest.mark.parametrize(
    ("name", "code"), [(name, code) for name, code in EXPECTED.items() if code is not None], ids=lambda v: str(v)
)
def test_served_model_reads_through_the_same_budget_and_checks(corpus, name, code):
    with pytest.raises(IngestError) as caught:
        read_file(corpus / name)
    assert code_of(caught.value) == code


def test_served_model_refusals_carry_the_scan_code(tmp_path):
    (tmp_path / "notes.bin").write_bytes(b"not an image at all" * 20)
    with pytest.raises(Rejected) as caught:
        read_file(tmp_path / "notes.bin")
    assert caught.value.code == Reason.UNSUPPORTED


def test_budget_and_burned_in_are_options(corpus, tmp_path):
    with pytest.raises(Rejected, match=r"max_decoded_mb=0\.001"):
        read_file(corpus / "good" / "ct.dcm", options={"max_decoded_mb": 0.001})
    (item,) = read_file(corpus / "dicom" / "burned_in.dcm", options={"keep_burned_in": True})
    assert item.extra == {"burned_in_risk": 1}
    report = ingest(corpus / "dicom", tmp_path, key=KEY, workers=0, keep_burned_in=True, progress=False)
    assert report.burned_in_risk == 1 and "burned-in text" in report.summary()
    assert bool(read_manifest(tmp_path)["burned_in_risk"].sum() == 1)
    with pytest.raises(ConfigurationError, match="max_decoded_mb"):
        IngestOptions(max_decoded_mb=0)


def test_secondary_capture_and_ultrasound_are_flagged(tmp_path):
    (item,) = read_file(get_testdata_file("SC_jpeg_no_color_transform.dcm"))
    assert item.extra == {"burned_in_risk": 1}
    _ct(tmp_path / "us.dcm", SOPClassUID="1.2.840.10008.5.1.4.1.1.6.1", Modality="US")
    (item,) = read_file(tmp_path / "us.dcm")
    assert item.extra == {"burned_in_risk": 1}
    (item,) = read_file(get_testdata_file("CT_small.dcm"))
    assert item.extra == {}


def test_cli_has_the_flags():
    import argparse

    from clinical.cli import ingest as ingest_command

    parser = argparse.ArgumentParser()
    ingest_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["ingest", "src", "--out", "c", "--max-decoded-mb", "64", "--keep-burned-in",
                              "--retry-failed"])
    assert (args.max_decoded_mb, args.keep_burned_in, args.retry_failed) == (64.0, True, True)


def test_old_rejections_without_code_still_read(tmp_path):
    pd.DataFrame({"file": ["a"], "stage": ["detect"], "reason": ["old"]}).to_parquet(tmp_path / "rejections.parquet")
    table = read_rejections(tmp_path)
    assert list(table.columns) == ["file", "stage", "reason", "code"] and table["code"].isna().all()
    write_rejections(table.assign(code=["unsupported"]), tmp_path / "new")
    assert read_rejections(tmp_path / "new")["code"].tolist() == ["unsupported"]


def test_every_code_has_a_meaning():
    assert len({code.value for code in Reason}) == len(Reason)
    assert all(code.meaning and code.value == code.value.lower() for code in Reason)


# -- a worker killed mid-run --------------------------------------------------------------------------------------

#: Imported by every process started with this folder on PYTHONPATH (the pool's spawned workers), never by
#: this one: the photo decoder kills its own process with SIGKILL, as the kernel's OOM killer would, for
#: files whose name contains "poison".
_SITECUSTOMIZE = textwrap.dedent('''
    import os
    import signal

    from clinical.ingest import decode


    def _poisoned(decoder):
        def decode_or_die(unit, options):
            if any("poison" in os.path.basename(path) for path in unit.paths):
                os.kill(os.getpid(), signal.SIGKILL)
            yield from decoder(unit, options)
        return decode_or_die


    decode.register_decoder("photo", _poisoned(decode.decoder_for("photo")))
''')


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    for k in range(6):
        (root / f"patient{k}").mkdir(parents=True)
        (root / f"patient{k}" / ("poison.jpg" if k == 3 else "photo.jpg")).write_bytes(_jpeg(seed=10 + k))
    return root


def test_a_killed_worker_costs_only_its_unit(photos, tmp_path, monkeypatch):
    clean = ingest(photos, tmp_path / "clean", key=KEY, workers=2, progress=False)
    assert clean.ingested == 6

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    killed = ingest(photos, tmp_path / "killed", key=KEY, workers=2, progress=False)

    assert (killed.found, killed.ingested, killed.rejected) == (6, 5, 1)
    rejections = read_rejections(tmp_path / "killed")
    assert rejections["code"].tolist() == [Reason.WORKER_DIED]
    assert "decoder process died: signal 9 (SIGKILL) — out of memory?" in rejections["reason"].iloc[0]
    clean_items = set(read_manifest(tmp_path / "clean")["item_id"])
    killed_manifest = read_manifest(tmp_path / "killed")
    assert set(killed_manifest["item_id"]) < clean_items and len(clean_items - set(killed_manifest["item_id"])) == 1
    columns = ["item_id", "patient_key", "kind", "shape", "source_digest"]
    clean_rows = read_manifest(tmp_path / "clean").set_index("item_id").loc[sorted(killed_manifest["item_id"])]
    killed_rows = killed_manifest.set_index("item_id").loc[sorted(killed_manifest["item_id"])]
    assert clean_rows.reset_index()[columns].astype(str).equals(killed_rows.reset_index()[columns].astype(str))

    again = ingest(photos, tmp_path / "killed", key=KEY, workers=2, progress=False)
    assert (again.units_run, again.rejected) == (0, 1)  # the known poison unit is not decoded again

    monkeypatch.delenv("PYTHONPATH")
    retried = ingest(photos, tmp_path / "killed", key=KEY, workers=2, retry_failed=True, progress=False)
    assert (retried.units_run, retried.ingested, retried.rejected) == (1, 6, 0)
    assert retried.digest == clean.digest

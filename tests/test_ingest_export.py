"""Ingest of a hospital-like export: PHI in names never travels, every entry is accounted for, real series kept."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid

from clinical.cohort import read_manifest, read_rejections
from clinical.cohort.synthetic.phi import accession_number, fake_identity
from clinical.errors import ConfigurationError
from clinical.ingest import ingest, source_paths
from clinical.ingest.identity import key_fingerprint, private_paths_file

KEY = "export-test-key"


@pytest.fixture(autouse=True)
def private_config(tmp_path, monkeypatch) -> Path:
    """A private configuration folder of this test: the key file and private maps go there."""
    folder = tmp_path / "private-config"
    monkeypatch.setenv("CLINICAL_CONFIG_DIR", str(folder))
    monkeypatch.delenv("CLINICAL_PSEUDONYM_KEY", raising=False)
    return folder


def _dicom(path: Path, *, patient: tuple[str, str, str], accession: str, series: str, modality: str = "CR",
           position: float | None = None, sop: str | None = None, syntax=ExplicitVRLittleEndian,
           value: int = 1100, **elements) -> str:
    """A small DICOM image from pydicom's CT_small.dcm with the given identity, geometry and elements."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = patient
    ds.AccessionNumber = accession
    ds.InstitutionName = "Northfield General"
    ds.Modality = modality
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    ds.SeriesInstanceUID = series
    pixels = np.full((16, 16), value, dtype=np.uint16)
    pixels[:8] = 1024
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if position is None:
        del ds.ImagePositionPatient
    else:
        ds.ImagePositionPatient = [0.0, 0.0, position]
    for keyword, element in elements.items():
        setattr(ds, keyword, element)
    if syntax == RLELossless:
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPInstanceUID = sop or generate_uid()  # after set_pixel_data and compress, which make new ones
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID


# -- (a) PHI in folder and file names ----------------------------------------------------------------------------


def _identity(index: int) -> tuple[tuple[str, str, str], str, list[str]]:
    person = fake_identity(0, "northfield", index)
    accession = accession_number(0, "northfield", index)
    family, _, given = person.patient_name.partition("^")
    phi = [person.patient_id, family, given, person.birth_date, accession]
    return (person.patient_id, person.patient_name, person.birth_date), accession, phi


@pytest.fixture
def export(tmp_path) -> tuple[Path, list[str]]:
    """``northfield/FAMILY_GIVEN_MRN/BIRTHDATE_CHEST/ACC..._IMG0001.dcm`` and friends, as real exports name them."""
    root = tmp_path / "export"
    phi: list[str] = []
    for index in range(2):
        patient, accession, values = _identity(index)
        phi += values
        family, _, given = patient[1].partition("^")
        folder = root / "northfield" / f"{family}_{given}_{patient[0]}" / f"{patient[2]}_CHEST"
        series = generate_uid()
        for k in range(2):
            _dicom(folder / f"{accession}_IMG{k:04d}.dcm", patient=patient, accession=accession, series=series,
                   value=1100 + 10 * k + index)
        (folder / f"{accession}_notes.bin").write_bytes(b"not an image" * 10)  # rejected
        (folder / f"README_{patient[0]}.md").write_text("exported by the PACS")  # skipped
        buffer = io.BytesIO()
        Image.new("L", (12, 10), 90 + index).save(buffer, format="PNG")
        (folder / f"{family}_photo.png").write_bytes(buffer.getvalue())
        os.symlink("missing-target", folder / f"{accession}_link.dcm")  # dangling
    labels = tmp_path / "labels.csv"
    first = next((root / "northfield").iterdir())
    label_file = next(p for p in first.rglob("*_IMG0000.dcm")).relative_to(root).as_posix()
    pd.DataFrame({"file": [label_file], "label": ["positive"]}).to_csv(labels, index=False)
    return root, phi


def _text_of(path: Path) -> bytes:
    """A file's bytes, and for Parquet its decoded content too (compressed pages would hide a value)."""
    data = path.read_bytes()
    if path.suffix == ".parquet" or path.name.endswith(".parquet.tmp"):
        data += pd.read_parquet(path).to_csv(index=False).encode("utf-8", "backslashreplace")
    return data


@pytest.mark.parametrize("workers", [0, 2])
def test_no_phi_in_anything_ingest_writes_or_logs(export, tmp_path, private_config, caplog, workers):
    root, phi = export
    cohort = tmp_path / "cohort"
    caplog.set_level(logging.DEBUG)
    report = ingest(root, cohort, key=KEY, labels=tmp_path / "labels.csv", workers=workers, progress=False)
    assert report.ingested + report.rejected + report.skipped == report.found
    assert report.items == 6 and report.rejected == 2 and report.skipped == 4

    written = [p for p in cohort.rglob("*") if p.is_file()]
    assert {"manifest.parquet", "rejections.parquet", "cohort.json", "ingest_state.parquet"} <= {
        p.name for p in written}
    needles = {v for v in phi if v} | {v.upper() for v in phi} | {v.lower() for v in phi}
    for path in written:
        text = _text_of(path)
        leaked = sorted(v for v in needles if v.encode() in text)
        assert not leaked, f"{path.relative_to(cohort)} holds {leaked}"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [v for v in needles if v in logged]

    # the private map lives beside the key, not in the cohort; it is the one place with the real names
    meta = read_manifest(cohort)
    paths = source_paths(cohort)
    private = private_paths_file(json.loads((cohort / "cohort.json").read_text())["cohort_id"])
    assert private.is_file() and private_config in private.parents and cohort not in private.parents
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert any(v in name for v in phi for name in paths.values())
    real = {paths[s] for sources in meta["source"] for s in sources}
    assert all((root / name).is_file() for name in real)
    assert all(s.startswith("src-") for sources in meta["source"] for s in sources)
    # labels matched by real file name at ingest time
    labelled = meta[meta["label"].notna()]
    assert len(labelled) == 1 and paths[labelled["source"].iloc[0][0]].endswith("_IMG0000.dcm")
    rejections = read_rejections(cohort)
    by_code = dict(zip(rejections["file"].map(paths).map(lambda n: Path(n).suffix), rejections["code"], strict=True))
    assert by_code == {".bin": "unsupported", ".md": "unsupported", ".dcm": "dangling-link"}


def test_rejections_command_shows_real_paths_locally(export, tmp_path, capsys):
    from clinical.cli import main

    root, _ = export
    cohort = tmp_path / "cohort"
    ingest(root, cohort, key=KEY, workers=0, progress=False)
    capsys.readouterr()
    assert main(["rejections", str(cohort), "--code", "dangling-link"]) == 0
    out = capsys.readouterr().out
    assert out.count("dangling-link\twalk\tnorthfield/") == 2 and "2 rejected or skipped" in out


# -- (b) the walk accounts for every entry -------------------------------------------------------------------------


def test_every_entry_is_ingested_rejected_or_skipped(tmp_path, monkeypatch):
    root = tmp_path / "source"
    series = generate_uid()
    patient = ("PID1", "Test^Person", "20000101")
    _dicom(root / "site" / "good.dcm", patient=patient, accession="A1", series=series)
    (root / "site" / "README.md").write_text("notes")
    os.mkfifo(root / "site" / "pipe")
    os.symlink("nowhere", root / "site" / "dangling")
    os.symlink("loop-b", root / "site" / "loop-a")
    os.symlink("loop-a", root / "site" / "loop-b")
    os.symlink("..", root / "site" / "up")  # a folder link back to an ancestor
    (root / "locked").mkdir()
    _dicom(root / "locked" / "hidden.dcm", patient=patient, accession="A1", series=generate_uid())
    odd = os.fsencode(root / "site") + b"/caf\xe9_scan.dcm"  # a name that is not UTF-8
    _dicom(Path(os.fsdecode(odd)), patient=patient, accession="A1", series=generate_uid(), value=1500)
    # a path longer than PATH_MAX, built relative to folder descriptors
    fd = os.open(root, os.O_RDONLY)
    depth = 0
    while depth * 200 < 4400:
        os.mkdir("d" * 199, dir_fd=fd)
        next_fd = os.open("d" * 199, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd, depth = next_fd, depth + 1
    os.close(fd)

    real_scandir = os.scandir
    locked = str(root / "locked")

    def scandir(path=".", *args):
        if os.fspath(path) == locked:  # a folder this process may not list (root ignores chmod 000)
            raise PermissionError(errno.EACCES, "Permission denied", locked)
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    cohort = tmp_path / "cohort"
    report = ingest(root, cohort, key=KEY, workers=0, progress=False)
    assert report.ingested + report.rejected + report.skipped == report.found
    assert f"ingested {report.ingested} + rejected {report.rejected} + skipped {report.skipped} = found " \
           f"{report.found}" in report.summary()
    paths = source_paths(cohort)
    rejections = read_rejections(cohort)
    codes = {paths[f]: c for f, c in zip(rejections["file"], rejections["code"], strict=True)}
    assert codes["site/README.md"] == "unsupported"
    assert codes["site/pipe"] == "not-regular-file"
    assert codes["site/dangling"] == "dangling-link"
    assert codes["site/loop-a"] == codes["site/loop-b"] == codes["site/up/"] == "link-loop"
    assert codes["locked/"] == "unreadable-folder"
    assert [c for n, c in codes.items() if n.startswith("d" * 199)] == ["unreadable"]
    ingested = {paths[s] for sources in read_manifest(cohort)["source"] for s in sources}
    assert ingested == {"site/good.dcm", os.fsdecode(b"site/caf\xe9_scan.dcm")}
    assert report.found == len(ingested) + len(codes)
    again = ingest(root, cohort, key=KEY, workers=0, progress=False)  # the state with odd names reads back
    assert (again.found, again.units_run) == (report.found, 0)


# -- (c) key management ---------------------------------------------------------------------------------------------


def test_another_key_is_refused_and_a_new_key_announced(tmp_path, private_config, caplog):
    root = tmp_path / "source"
    _dicom(root / "a.dcm", patient=("P", "Some^One", "19990101"), accession="X", series=generate_uid())
    cohort = tmp_path / "cohort"
    with caplog.at_level(logging.WARNING):
        ingest(root, cohort, workers=0, progress=False)  # no key given: the key file is created
    announced = [r for r in caplog.records if r.levelno == logging.WARNING and "NEW pseudonym key" in r.getMessage()]
    assert announced and "Back it up" in announced[0].getMessage()
    assert str(private_config) in announced[0].getMessage()
    ingest(root, cohort, workers=0, progress=False)  # the same key again: fine
    with pytest.raises(ConfigurationError) as raised:
        ingest(root, cohort, key="another-key", workers=0, progress=False)
    message = str(raised.value)
    key_file = (private_config / "pseudonym.key").read_text().strip()
    assert key_fingerprint(key_file.encode()) in message and key_fingerprint(b"another-key") in message
    assert "another-key" not in message and key_file not in message


# -- (d) series as a radiologist's tools see them ------------------------------------------------------------------


def test_multi_echo_multi_phase_and_duplicate_instances(tmp_path):
    root = tmp_path / "source"
    patient = ("P7", "Echo^Phase", "19800101")
    echoes = generate_uid()
    for echo in (1, 2):
        for k in range(4):
            _dicom(root / "mr" / f"e{echo}_{k}.dcm", patient=patient, accession="B", series=echoes, modality="MR",
                   position=2.5 * k, EchoNumbers=echo, EchoTime=10.0 * echo, value=1100 + k + 50 * echo)
    phases = generate_uid()
    for phase in (1, 2, 3):
        for k in range(3):
            _dicom(root / "ct" / f"p{phase}_{k}.dcm", patient=patient, accession="B", series=phases, modality="CT",
                   position=3.0 * k, TemporalPositionIdentifier=phase, value=1100 + k + 20 * phase)
    repeats = generate_uid()
    for acquisition in (1, 2):  # the same positions acquired twice
        for k in range(3):
            _dicom(root / "rep" / f"a{acquisition}_{k}.dcm", patient=patient, accession="B", series=repeats,
                   modality="CT", position=3.0 * k, AcquisitionNumber=acquisition, value=1200 + k + 7 * acquisition)
    broken = generate_uid()  # cannot form a volume (a position repeats in one stack): 2D images, no rejection
    for k, position in enumerate([0.0, 2.5, 2.5]):
        _dicom(root / "odd" / f"s{k}.dcm", patient=patient, accession="B", series=broken, modality="CT",
               position=position, value=1300 + k)
    sop = generate_uid()
    for name, syntax in (("native.dcm", ExplicitVRLittleEndian), ("implicit.dcm", ImplicitVRLittleEndian),
                         ("rle.dcm", RLELossless)):
        _dicom(root / "dup" / name, patient=patient, accession="B", series=generate_uid(), sop=sop, syntax=syntax)

    cohort = tmp_path / "cohort"
    report = ingest(root, cohort, key=KEY, workers=0, progress=False)
    paths = source_paths(cohort)
    manifest = read_manifest(cohort)
    manifest["files"] = manifest["source"].map(lambda s: sorted(paths[f] for f in s))
    volumes = manifest[manifest["kind"] == "volume"]
    by_folder: dict[str, list[list[str]]] = {}
    for files in volumes["files"]:
        by_folder.setdefault(files[0].split("/")[0], []).append(files)
    assert sorted(len(f) for f in by_folder["mr"]) == [4, 4]
    assert all(len({Path(n).name[:2] for n in f}) == 1 for f in by_folder["mr"])  # one echo per volume
    assert sorted(len(f) for f in by_folder["ct"]) == [3, 3, 3]
    assert sorted(len(f) for f in by_folder["rep"]) == [3, 3]
    assert all(list(v) == [1, 4 if f[0].startswith("mr") else 3, 16, 16]
               for v, f in zip(volumes["shape"], volumes["files"], strict=True))
    odd = manifest[manifest["files"].map(lambda f: f[0].startswith("odd/"))]
    assert len(odd) == 3 and set(odd["kind"]) == {"image"}

    rejections = read_rejections(cohort)
    duplicates = rejections[rejections["code"] == "duplicate-instance"]
    assert sorted(paths[f] for f in duplicates["file"]) == ["dup/implicit.dcm", "dup/rle.dcm"]
    assert all("native" not in r and "dup/" not in r for r in duplicates["reason"])  # named by pseudonym
    kept = manifest[manifest["files"].map(lambda f: f[0].startswith("dup/"))]
    assert kept["files"].tolist() == [["dup/native.dcm"]]
    assert report.rejected == 2 and report.ingested + report.rejected + report.skipped == report.found

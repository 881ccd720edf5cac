"""Planning: scan records to units of decoding work, and the rejections known before decoding.

A unit is a DICOM series volume (``dicom_volume``), a DICOM image (``dicom_image``),
a multi-frame file (``dicom_multiframe``), a NIfTI file, a slide or a photograph;
the name is the decoder's (see :func:`clinical.ingest.decode.decoder_for`). Files
with the same content as an earlier one are rejected as duplicates (they would
leak across splits), and inconsistent series here (see :mod:`clinical.ingest.series`).

A unit's id is a digest of its decoder, its files and their digests, and the
options' fingerprint: a unit already decoded with the same id is not decoded again.
Patient, study and series keys come from the DICOM header, else from the folders:
patient = the parent folder (the file's stem at the root), study = the parent path,
series = the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath

from clinical.cohort.digest import files_digest
from clinical.errors import InvalidSeriesError
from clinical.ingest.dicom import VOLUME_MODALITIES, DicomHeader
from clinical.ingest.identity import keyed_hash
from clinical.ingest.options import IngestOptions
from clinical.ingest.series import order_slices
from clinical.ingest.units import Unit

__all__ = ["plan_units"]


def plan_units(records: list[dict], options: IngestOptions, *, key: bytes) -> tuple[list[Unit], list[dict]]:
    """Units of work and the rejections known before decoding (scan errors, duplicates, bad series).

    ``records`` are :func:`clinical.ingest.scan.scan` records (with ``path``); rejections are
    ``{"file", "stage", "reason"}`` rows.
    """
    rejections: list[dict] = []
    first_of_digest: dict[str, str] = {}
    usable = []
    for record in records:
        if record["stage"] is not None:
            rejections.append({"file": record["file"], "stage": record["stage"], "reason": record["reason"]})
        elif record["digest"] in first_of_digest:
            rejections.append({"file": record["file"], "stage": "detect",
                               "reason": f"duplicate: same content as {first_of_digest[record['digest']]}"})
        else:
            first_of_digest[record["digest"]] = record["file"]
            usable.append(record)
    fingerprint = options.fingerprint(key)
    units: list[Unit] = []
    series: dict[str, list[tuple[dict, DicomHeader]]] = {}
    for record in usable:
        name = record["file"]
        if record["format"] != "dicom":
            units.append(_file_unit(record, fingerprint, key))
            continue
        header = DicomHeader(**_header_fields(record["header"]))
        if not header.has_pixels or header.rows == 0 or header.columns == 0:
            reason = f"not an image: {header.sop_class} without Pixel Data (7FE0,0010) or Rows/Columns"
            rejections.append({"file": name, "stage": "detect", "reason": reason})
        elif header.frames == 1 and header.modality in VOLUME_MODALITIES and header.series_key:
            series.setdefault(header.series_key, []).append((record, header))
        else:
            decoder = "dicom_multiframe" if header.frames > 1 else "dicom_image"
            units.append(_dicom_unit(decoder, [record], header, fingerprint, key))
    for members in series.values():
        if len(members) == 1 or all(h.position is None and h.orientation is None for _, h in members):
            # a lone slice, or slices with no geometry at all (scouts, secondary captures): 2D images
            units.extend(_dicom_unit("dicom_image", [r], h, fingerprint, key) for r, h in members)
            continue
        headers = [h for _, h in members]
        try:
            order, spacing = order_slices(
                [(h.rows, h.columns) for h in headers], [h.position for h in headers], [h.orientation for h in headers]
            )
        except InvalidSeriesError as error:
            reason = f"{error} ({len(members)} files of one series)"
            rejections.extend({"file": r["file"], "stage": "group", "reason": reason} for r, _ in members)
            continue
        ordered = [members[i][0] for i in order]
        units.append(_dicom_unit("dicom_volume", ordered, headers[0], fingerprint, key, spacing=spacing))
    return units, rejections


def _header_fields(text: str) -> dict:
    fields = json.loads(text)
    for name in ("position", "orientation", "pixel_spacing"):
        if fields[name] is not None:
            fields[name] = tuple(fields[name])
    return fields


def _unit_id(decoder: str, records: list[dict], fingerprint: str) -> str:
    text = "\n".join([decoder, fingerprint, *(f"{r['file']}\t{r['digest']}" for r in records)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _dicom_unit(
    decoder: str, records: list[dict], header: DicomHeader, fingerprint: str, key: bytes, spacing: float | None = None
) -> Unit:
    names = [r["file"] for r in records]
    folder_keys = _folder_keys(names[0], key)
    digest = records[0]["digest"] if len(records) == 1 else files_digest(r["digest"] for r in records)
    plane = header.pixel_spacing or (float("nan"), float("nan"))
    return Unit(
        unit_id=_unit_id(decoder, records, fingerprint),
        decoder=decoder,
        files=tuple(names),
        paths=tuple(r["path"] for r in records),
        source_digest=digest,
        patient_key=header.patient_key or folder_keys[0],
        study_key=header.study_key or folder_keys[1],
        series_key=header.series_key or folder_keys[2],
        modality=header.modality,
        institution=header.institution,
        spacing=(spacing, *plane) if spacing is not None else tuple(plane),
    )


def _file_unit(record: dict, fingerprint: str, key: bytes) -> Unit:
    patient, study, series = _folder_keys(record["file"], key)
    decoder = record["format"]
    modality = {"slide": "SM", "photo": "XC", "nifti": "OT"}[decoder]
    return Unit(
        unit_id=_unit_id(decoder, [record], fingerprint),
        decoder=decoder,
        files=(record["file"],),
        paths=(record["path"],),
        source_digest=record["digest"],
        patient_key=patient,
        study_key=study,
        series_key=series,
        modality=modality,
    )


def _folder_keys(name: str, key: bytes) -> tuple[str, str, str]:
    """Patient = the parent folder (the file's stem at the root), study = the parent path, series = the file."""
    path = PurePosixPath(name)
    parent = path.parent
    patient = parent.name if parent.name else path.stem
    return keyed_hash(key, patient), keyed_hash(key, f"study:{parent.as_posix()}"), keyed_hash(key, f"series:{name}")

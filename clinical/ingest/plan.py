"""Planning: scan records to units of decoding work, and the rejections known before decoding.

A unit is a DICOM series volume (``dicom_volume``), a DICOM image (``dicom_image``),
a multi-frame file (``dicom_multiframe``), a NIfTI file, a slide or a photograph;
the name is the decoder's (see :func:`clinical.ingest.decode.decoder_for`). Files
with the same content as an earlier one are rejected as duplicates (they would
leak across splits), and so are further copies of one DICOM instance; a series is
split into stacks, each a volume or, when its slices cannot form one, 2D images
(see :mod:`clinical.ingest.series`).

A unit's id is a digest of its decoder, its files and their digests, and the
options' fingerprint: a unit already decoded with the same id is not decoded again.
Patient, study and series keys come from the DICOM header, else from the folders:
patient = the parent folder (the file's stem at the root), study = the parent path,
series = the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import PurePosixPath

from clinical.cohort.digest import files_digest
from clinical.errors import InvalidSeriesError
from clinical.ingest.channels import pair_channels
from clinical.ingest.dicom import VOLUME_MODALITIES, DicomHeader
from clinical.ingest.identity import keyed_hash
from clinical.ingest.options import IngestOptions
from clinical.ingest.reasons import Reason
from clinical.ingest.series import order_slices, pick_instance, split_stacks
from clinical.ingest.units import Unit

__all__ = ["plan_units"]

logger = logging.getLogger(__name__)


def plan_units(records: list[dict], options: IngestOptions, *, key: bytes) -> tuple[list[Unit], list[dict]]:
    """Units of work and the rejections known before decoding (scan errors, duplicates).

    ``records`` are :func:`clinical.ingest.scan.scan` records (with ``path``, and ``name``, the
    source-relative name the folder keys are made from; ``file`` names the file in every output);
    rejections are ``{"file", "stage", "code", "reason"}`` rows.
    """
    rejections: list[dict] = []
    first_of_digest: dict[str, str] = {}
    usable = []
    for record in records:
        if record["stage"] is not None:
            code = record.get("code") or str(Reason.UNSUPPORTED)
            rejections.append(_rejection(record["file"], record["stage"], code, record["reason"]))
        elif record["digest"] in first_of_digest:
            rejections.append(_rejection(record["file"], "detect", Reason.DUPLICATE_CONTENT,
                                         f"duplicate: same content as {first_of_digest[record['digest']]}"))
        else:
            first_of_digest[record["digest"]] = record["file"]
            usable.append(record)
    parsed = [_header(record) for record in usable]
    fingerprint = options.fingerprint(key)
    units: list[Unit] = []
    series: dict[str, list[tuple[dict, DicomHeader]]] = {}
    for index in _unique_instances(usable, parsed, rejections):
        record, header = usable[index], parsed[index]
        if header is None:
            units.append(_file_unit(record, fingerprint, key))
        elif not header.has_pixels or header.rows == 0 or header.columns == 0:
            reason = f"not an image: {header.sop_class} without Pixel Data (7FE0,0010) or Rows/Columns"
            rejections.append(_rejection(record["file"], "detect", Reason.NO_IMAGE, reason))
        elif header.frames == 1 and header.modality in VOLUME_MODALITIES and header.series_key:
            series.setdefault(header.series_key, []).append((record, header))
        else:
            decoder = "dicom_multiframe" if header.frames > 1 else "dicom_image"
            units.append(_dicom_unit(decoder, [record], header, fingerprint, key))
    for members in series.values():
        headers = [h for _, h in members]
        stacks = split_stacks(
            [_stack(r) for r, _ in members],
            [(h.rows, h.columns) for h in headers], [h.position for h in headers], [h.orientation for h in headers],
        )
        for stack in stacks:
            units.extend(_stack_units([members[i] for i in stack], fingerprint, key))
    if options.channels:
        units, refused = pair_channels(units, options.channels)
        rejections += [_rejection(f, "group", code, reason) for unit, code, reason in refused for f in unit.files]
    return units, rejections


def _stack_units(members: list[tuple[dict, DicomHeader]], fingerprint: str, key: bytes) -> list[Unit]:
    """One volume of the slices of one stack, or 2D images when they cannot form one (the reason logged)."""
    if len(members) == 1 or all(h.position is None and h.orientation is None for _, h in members):
        # a lone slice, or slices with no geometry at all (scouts, secondary captures): 2D images
        return [_dicom_unit("dicom_image", [r], h, fingerprint, key) for r, h in members]
    headers = [h for _, h in members]
    try:
        order, spacing = order_slices(
            [(h.rows, h.columns) for h in headers], [h.position for h in headers], [h.orientation for h in headers]
        )
    except InvalidSeriesError as error:
        logger.info("%d slices of one series stack cannot form a volume (%s): ingested as 2D images",
                    len(members), error)
        return [_dicom_unit("dicom_image", [r], h, fingerprint, key) for r, h in members]
    ordered = [members[i][0] for i in order]
    return [_dicom_unit("dicom_volume", ordered, headers[0], fingerprint, key, spacing=spacing)]


def _header(record: dict) -> DicomHeader | None:
    """A DICOM record's header, parsed from its JSON once; None for other formats."""
    if record["format"] != "dicom":
        return None
    fields = json.loads(record["header"])
    for name in ("position", "orientation", "pixel_spacing"):
        if fields[name] is not None:
            fields[name] = tuple(fields[name])
    return DicomHeader(**fields)


def _stack(record: dict) -> dict | None:
    """A DICOM record's stack elements: parsed where used, not kept for every record (memory at 100,000 files)."""
    return json.loads(record["stack"]) if record.get("stack") else None


def _unique_instances(records: list[dict], headers: list[DicomHeader | None], rejections: list[dict]) -> list[int]:
    """Indices of the records kept: one file per instance (:func:`~clinical.ingest.series.pick_instance` chooses).

    An instance is its SOP Instance UID with its matrix (Rows, Columns, Number of Frames, Samples
    per Pixel, Bits Allocated): the same instance transcoded keeps them; other copies are rejected.
    """
    copies: dict[tuple, list[tuple[int, str | None]]] = {}
    for index, (record, header) in enumerate(zip(records, headers, strict=True)):
        stack = _stack(record) if header is not None else None
        if stack and stack.get("instance"):
            identity = (stack["instance"], header.rows, header.columns, header.frames, stack.get("samples"),
                        stack.get("bits"))
            copies.setdefault(identity, []).append((index, stack.get("transfer_syntax")))
    dropped: set[int] = set()
    for found in copies.values():
        if len(found) < 2:
            continue
        kept = found[pick_instance([records[i]["file"] for i, _ in found], [syntax for _, syntax in found])][0]
        for i, syntax in found:
            if i != kept:
                dropped.add(i)
                rejections.append(_rejection(
                    records[i]["file"], "group", Reason.DUPLICATE_INSTANCE,
                    f"duplicate instance: same SOP Instance UID (0008,0018) as {records[kept]['file']}, "
                    f"stored again (transfer syntax {syntax or 'unknown'}); kept once",
                ))
    return [i for i in range(len(records)) if i not in dropped]


def _rejection(file: str, stage: str, code: Reason | str, reason: str) -> dict:
    return {"file": file, "stage": stage, "code": str(code), "reason": reason}


def _unit_id(decoder: str, records: list[dict], fingerprint: str) -> str:
    text = "\n".join([decoder, fingerprint, *(f"{r['file']}\t{r['digest']}" for r in records)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _dicom_unit(
    decoder: str, records: list[dict], header: DicomHeader, fingerprint: str, key: bytes, spacing: float | None = None
) -> Unit:
    names = [r["file"] for r in records]
    folder_keys = _folder_keys(records[0].get("name", names[0]), key)
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
        frame_key=header.frame_key,
        layouts=tuple(r.get("pixels") for r in records),
    )


def _file_unit(record: dict, fingerprint: str, key: bytes) -> Unit:
    patient, study, series = _folder_keys(record.get("name", record["file"]), key)
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

"""Multi-series items: the series of one study stacked as channels on one grid (PET/CT and the like).

Rule (``IngestOptions.channels``, ``clinical ingest --channels PT,CT``): within each study, the DICOM
volumes of the listed modalities are paired — exactly one series per modality, all with the same
Frame of Reference UID (0020,0052), i.e. co-registered by the scanner — and become one item whose
channels follow the list's order. A study with a listed modality missing is rejected
(``channel-missing``); one whose series differ in Frame of Reference, or that has two candidate
series of one modality, is rejected (``channel-mismatch``). Volumes of other modalities are not
touched.

Decoding (:func:`decode_channels`): every series is read in its physical units (HU for CT; PET in
Bq/ml converted to SUVbw by :func:`clinical.ingest.suv.suv_bw_factor`), and each is resampled onto
the grid of the series with the smallest voxels (PET onto CT) through the voxel-to-patient affines
of their Image Position/Orientation (Patient) (0020,0032)/(0020,0037) and spacings, with trilinear
interpolation (``scipy.ndimage.affine_transform``: ``clinical.ingest.resample`` changes spacing only,
not frames). Outside a series' field a channel takes that series' minimum. Each channel is then
mapped to [0, 1]: CT by the ``ct_window`` preset, PET as SUVbw / :data:`SUV_RANGE` clipped, others
by percentiles. ``target_spacing``/``target_size`` then apply to the stacked item as to any other.
The item's ``modality`` is the channels joined by ``+`` (``PT+CT``); its patient and study keys are
the study's, its series key that of the grid's series (the CT), so a slice-label table keyed by
that series lines up with the item's slices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import pydicom

from clinical.ingest.dicom import load_volume, quiet_pydicom, window
from clinical.ingest.intensity import percentile_scale, unit_interval_to_uint16
from clinical.ingest.options import IngestOptions
from clinical.ingest.reasons import Reason
from clinical.ingest.suv import SUV_TAGS, suv_bw_factor
from clinical.ingest.units import DecodedItem, Unit

__all__ = ["DECODER", "SUV_RANGE", "decode_channels", "pair_channels", "voxel_affine"]

#: The decoder name of multi-series units.
DECODER = "dicom_channels"
#: SUVbw mapped to 1 in the cached PET channel (0 to this, clipped): covers lymphoma uptake.
SUV_RANGE = 20.0

_GEOMETRY_TAGS = ["ImagePositionPatient", "ImageOrientationPatient"]


def pair_channels(units: list[Unit], channels: Sequence[str]) -> tuple[list[Unit], list[tuple[Unit, Reason, str]]]:
    """Replace the DICOM volumes of the listed modalities by one multi-series unit per study.

    Returns
    -------
    units, refused
        The units to decode (others untouched, then the paired ones), and the volumes refused with
        their code and reason (one rejection per file of each).
    """
    wanted = [m.upper() for m in channels]
    keep: list[Unit] = []
    by_study: dict[str, list[Unit]] = {}
    for unit in units:
        if unit.decoder == "dicom_volume" and unit.modality in wanted:
            by_study.setdefault(unit.study_key, []).append(unit)
        else:
            keep.append(unit)
    refused: list[tuple[Unit, Reason, str]] = []
    for members in by_study.values():
        present = {m: [u for u in members if u.modality == m] for m in wanted}
        missing = [m for m, found in present.items() if not found]
        several = [m for m, found in present.items() if len(found) > 1]
        frames = {u.frame_key for u in members}
        if missing:
            why = (f"--channels {','.join(wanted)} needs one series of each modality in the study; "
                   f"it has no {', '.join(missing)} series")
            refused += [(u, Reason.CHANNEL_MISSING, why) for u in members]
        elif several:
            why = (f"the study has {' and '.join(f'{len(present[m])} {m}' for m in several)} series; "
                   "which to stack as channels is ambiguous")
            refused += [(u, Reason.CHANNEL_MISMATCH, why) for u in members]
        elif len(frames) != 1 or None in frames:
            why = ("the series to stack differ in Frame of Reference UID (0020,0052) or lack it, so they are "
                   "not co-registered")
            refused += [(u, Reason.CHANNEL_MISMATCH, why) for u in members]
        else:
            keep.append(_combined([present[m][0] for m in wanted]))
    return keep, refused


def _combined(parts: list[Unit]) -> Unit:
    grid = min(parts, key=_voxel_volume)
    unit_id = hashlib.sha256("\n".join([DECODER, *(p.unit_id for p in parts)]).encode()).hexdigest()[:24]
    digest = hashlib.sha256("\n".join(p.source_digest for p in parts).encode()).hexdigest()
    return Unit(
        unit_id=unit_id, decoder=DECODER, files=tuple(f for p in parts for f in p.files),
        paths=tuple(x for p in parts for x in p.paths), source_digest=digest, patient_key=grid.patient_key,
        study_key=grid.study_key, series_key=grid.series_key, modality="+".join(p.modality for p in parts),
        institution=grid.institution, spacing=grid.spacing, frame_key=grid.frame_key, parts=tuple(parts),
    )


def _voxel_volume(unit: Unit) -> float:
    spacing = [s for s in (unit.spacing or ()) if np.isfinite(s)]
    return float(np.prod(spacing)) if len(spacing) == 3 else float("inf")


def voxel_affine(position: Sequence[float], orientation: Sequence[float], spacing: Sequence[float]) -> np.ndarray:
    """4×4 map from a volume's (slice, row, column) index to patient coordinates (mm, LPS).

    ``position`` is (0020,0032) of the first slice, ``orientation`` (0020,0037) (row cosine, then
    column cosine), ``spacing`` (slice, row, column) mm; slices run along row cosine × column cosine.
    """
    row_cos, col_cos = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    affine = np.eye(4)
    affine[:3, 0] = np.cross(row_cos, col_cos) * spacing[0]
    affine[:3, 1] = col_cos * spacing[1]  # moving down a row follows the column cosine
    affine[:3, 2] = row_cos * spacing[2]
    affine[:3, 3] = np.asarray(position, float)
    return affine


def decode_channels(unit: Unit, options: IngestOptions) -> Iterator[DecodedItem]:
    """A multi-series unit: one volume (C, D, H, W) on the grid of its finest series, channels in rule order."""
    grid = min(unit.parts, key=_voxel_volume)
    target = None
    channels = []
    risk = False
    for part in unit.parts:
        volume, first, flagged = load_volume(part, options, budget_count=len(unit.parts))
        risk = risk or flagged
        values = volume[..., 0]
        header = _header(part.paths[0])
        if part.modality == "PT":
            values = values * np.float32(suv_bw_factor(header))
        affine = voxel_affine(header.ImagePositionPatient, header.ImageOrientationPatient, part.spacing)
        if part is grid:
            target = (affine, values.shape)
        channels.append((part, first, values, affine))
    ref_affine, ref_shape = target
    out = []
    for part, first, values, affine in channels:
        if part is not grid:
            to_part = np.linalg.inv(affine) @ ref_affine
            from scipy import ndimage  # here: scipy costs a worker that decodes no series pair half a second

            values = ndimage.affine_transform(values, to_part[:3, :3], offset=to_part[:3, 3], output_shape=ref_shape,
                                              order=1, mode="constant", cval=float(values.min()))
        if part.modality == "PT":
            scaled = np.clip(values / SUV_RANGE, 0.0, 1.0)
        elif part.modality == "CT":
            scaled = window(values[..., None], first, modality="CT", ct_window=options.ct_window)[..., 0]
        else:
            scaled = percentile_scale(values)
        out.append(scaled)
    yield DecodedItem(unit_interval_to_uint16(np.stack(out)), "volume", grid.spacing,
                      extra={"burned_in_risk": 1} if risk else {})


def _header(path: str) -> pydicom.Dataset:
    """Geometry and SUV elements of a series' first file (header only)."""
    with quiet_pydicom():
        return pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=_GEOMETRY_TAGS + SUV_TAGS)

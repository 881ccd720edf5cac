"""Grouping DICOM slices into volumes and checking that they really form one.

Rule: the single-frame image files of one series (same SeriesInstanceUID
(0020,000E)) of a cross-sectional modality (CT, MR, PT, NM) with at least two
files form one volume. Every other image file is one 2D image: radiographs, a
lone slice, and slices of a series of which none has Image Position/Orientation
(Patient). A multi-frame file is one volume whose frames are the depth axis, in
stored order (a cine loop's time axis becomes depth, as the (2+1)D models expect).

Before volumes are built, as a radiologist's viewer and dcm2niix do:

1. identical instances (same SOP Instance UID (0008,0018) and the same Rows, Columns, Number
   of Frames, Samples per Pixel and Bits Allocated, e.g. one instance stored in several
   transfer syntaxes; a reused UID on a different image is not a copy) are kept once
   (:func:`pick_instance`: native uncompressed first, then the first by name); the others are
   rejected as ``duplicate-instance``;
2. a series is split into stacks (:func:`split_stacks`) by Echo Numbers (0018,0086) or Echo
   Time (0018,0081), Temporal Position Identifier (0020,0100), Image Type (0008,0008),
   Image Orientation (Patient) and matrix size, and, when positions still repeat within a
   stack, by Acquisition Number (0020,0012) (some scanners number every slice as its own
   acquisition, so it only splits when it must);
3. a stack whose slices cannot form a volume (repeated positions, gaps, missing geometry)
   becomes 2D images, with the reason logged.

Slices are ordered by Image Position (Patient) (0020,0032) projected on the slice
normal, the cross product of the two direction cosines of Image Orientation
(Patient) (0020,0037); the slice spacing is the median step between neighbours.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pydicom

from clinical.errors import IngestError, InvalidSeriesError
from clinical.ingest.dicom import quiet_pydicom
from clinical.ingest.identity import keyed_hash
from clinical.ingest.values import Values

__all__ = [
    "DUPLICATE_TOLERANCE_MM",
    "GAP_TOLERANCE",
    "STACK_TAGS",
    "order_slices",
    "pick_instance",
    "split_stacks",
    "stack_of",
]

#: What splits a series into stacks, and the instance's identity.
STACK_TAGS = ["SOPInstanceUID", "EchoNumbers", "EchoTime", "TemporalPositionIdentifier", "AcquisitionNumber",
              "ImageType", "SamplesPerPixel", "BitsAllocated"]
#: Transfer syntaxes with native (uncompressed) pixel data: the copy of an instance kept first.
_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")

#: Two slices closer than this along the normal (mm) are duplicates.
DUPLICATE_TOLERANCE_MM = 0.01
#: A step further than this fraction from the median step means a missing slice or an irregular series.
GAP_TOLERANCE = 0.1
_ORIENTATION_TOLERANCE = 1e-3


def order_slices(
    sizes: Sequence[tuple[int, int]],
    positions: Sequence[tuple[float, ...] | None],
    orientations: Sequence[tuple[float, ...] | None],
) -> tuple[list[int], float]:
    """Order the slices of one series along their normal.

    Parameters
    ----------
    sizes
        (Rows, Columns) of each slice.
    positions, orientations
        Image Position (Patient) (mm) and Image Orientation (Patient) of each slice.

    Returns
    -------
    order, spacing
        Indices of the slices from first to last along the normal, and the slice spacing in mm.

    Raises
    ------
    InvalidSeriesError
        On mixed matrix sizes, missing positions or orientations, mixed
        orientations, duplicate positions, or irregular gaps.
    """
    counts = Counter(sizes)
    if len(counts) > 1:
        described = ", ".join(f"{r}×{c} ({n} files)" for (r, c), n in counts.most_common())
        raise InvalidSeriesError(f"inconsistent series: mixed matrix sizes {described}")
    missing = sum(p is None or o is None for p, o in zip(positions, orientations, strict=True))
    if missing:
        raise InvalidSeriesError(
            f"inconsistent series: {missing} of {len(positions)} slices lack Image Position/Orientation (Patient) "
            "(0020,0032)/(0020,0037), so the slices cannot be ordered"
        )
    cosines = np.asarray(orientations, dtype=np.float64)
    if np.abs(cosines - cosines[0]).max() > _ORIENTATION_TOLERANCE:
        raise InvalidSeriesError("inconsistent series: slices have different Image Orientation (Patient) (0020,0037)")
    normal = np.cross(cosines[0, :3], cosines[0, 3:])
    depth = np.asarray(positions, dtype=np.float64) @ normal
    order = np.argsort(depth, kind="stable")
    steps = np.diff(depth[order])
    duplicates = int((steps < DUPLICATE_TOLERANCE_MM).sum())
    if duplicates:
        raise InvalidSeriesError(
            f"inconsistent series: {duplicates} duplicate slice position(s) along the slice normal "
            f"(closer than {DUPLICATE_TOLERANCE_MM} mm)"
        )
    spacing = float(np.median(steps))
    deviation = np.abs(steps - spacing)
    if deviation.max() > GAP_TOLERANCE * spacing:
        raise InvalidSeriesError(
            f"inconsistent series: irregular slice gaps from {steps.min():.3g} to {steps.max():.3g} mm "
            f"(median {spacing:.3g} mm); a slice is probably missing"
        )
    return [int(i) for i in order], spacing


def stack_of(ds: pydicom.Dataset | Values, key: bytes) -> dict:
    """The elements of one parsed file (at least :data:`STACK_TAGS`) that split its series into stacks.

    ``ds`` is the parsed data set, or its :func:`~clinical.ingest.values.values_of`.

    Returns ``{"instance", "echo", "temporal", "acquisition", "image_type", "transfer_syntax", "samples",
    "bits"}`` (the SOP Instance UID as a keyed hash), None for what the file does not have.

    Raises
    ------
    IngestError
        When an element cannot be read.
    """
    try:
        with quiet_pydicom():
            uid = str(ds.get("SOPInstanceUID", "") or "").strip()
            echo = ds.get("EchoNumbers", None)
            if echo in (None, "") and ds.get("EchoTime", None) not in (None, ""):
                echo = f"TE{float(ds.EchoTime):g}"
            image_type = ds.get("ImageType", None)
            meta = getattr(ds, "file_meta", None)
            return {
                "instance": keyed_hash(key, f"instance:{uid}") if uid else None,
                "echo": None if echo in (None, "") else str(echo),
                "temporal": _text(ds.get("TemporalPositionIdentifier", None)),
                "acquisition": _text(ds.get("AcquisitionNumber", None)),
                "image_type": "\\".join(str(v) for v in image_type) if image_type not in (None, "") else None,
                "transfer_syntax": str(meta.get("TransferSyntaxUID", "")) if meta is not None else None,
                "samples": _text(ds.get("SamplesPerPixel", None)),
                "bits": _text(ds.get("BitsAllocated", None)),
            }
    except Exception as error:  # pydicom raises many types on broken values
        raise IngestError(f"the DICOM header cannot be parsed ({type(error).__name__})") from error


def _text(value: object) -> str | None:
    return None if value in (None, "") else str(value).strip()


def pick_instance(names: Sequence[str], transfer_syntaxes: Sequence[str | None]) -> int:
    """Which of several copies of one instance to keep: native uncompressed first, then the first by name."""
    return min(range(len(names)), key=lambda i: (transfer_syntaxes[i] not in _NATIVE, names[i]))


def split_stacks(
    stacks: Sequence[dict | None],
    sizes: Sequence[tuple[int, int]],
    positions: Sequence[tuple[float, ...] | None],
    orientations: Sequence[tuple[float, ...] | None],
) -> list[list[int]]:
    """Indices of the slices of one series grouped into stacks (see the module docstring), in a stable order."""
    groups: dict[tuple, list[int]] = {}
    for index, stack in enumerate(stacks):
        stack = stack or {}
        orientation = None if orientations[index] is None else tuple(round(c, 3) for c in orientations[index])
        key = (stack.get("echo"), stack.get("temporal"), stack.get("image_type"), orientation, tuple(sizes[index]))
        groups.setdefault(tuple("" if v is None else str(v) for v in key), []).append(index)
    result: list[list[int]] = []
    for members in groups.values():
        if _repeats(positions, members) and len({(stacks[i] or {}).get("acquisition") for i in members}) > 1:
            by_acquisition: dict[str, list[int]] = {}
            for i in members:
                by_acquisition.setdefault(str((stacks[i] or {}).get("acquisition")), []).append(i)
            result.extend(by_acquisition.values())
        else:
            result.append(members)
    return result


def _repeats(positions: Sequence[tuple[float, ...] | None], members: list[int]) -> bool:
    seen = [tuple(round(c, 2) for c in positions[i]) for i in members if positions[i] is not None]
    return len(seen) != len(set(seen))

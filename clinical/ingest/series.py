"""Grouping DICOM slices into volumes and checking that they really form one.

Rule: the single-frame image files of one series (same SeriesInstanceUID
(0020,000E)) of a cross-sectional modality (CT, MR, PT, NM) with at least two
files form one volume. Every other image file is one 2D image: radiographs, a
lone slice, and slices of a series of which none has Image Position/Orientation
(Patient). A multi-frame file is one volume whose frames are the depth axis, in
stored order (a cine loop's time axis becomes depth, as the (2+1)D models expect).

Slices are ordered by Image Position (Patient) (0020,0032) projected on the slice
normal, the cross product of the two direction cosines of Image Orientation
(Patient) (0020,0037); the slice spacing is the median step between neighbours.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from clinical.errors import InvalidSeriesError

__all__ = ["DUPLICATE_TOLERANCE_MM", "GAP_TOLERANCE", "order_slices"]

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

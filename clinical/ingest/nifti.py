"""NIfTI-1/2 volumes (``.nii``, ``.nii.gz``, and ``ni1`` header/image pairs).

- Reoriented with ``nibabel.as_closest_canonical`` (RAS+), then transposed from
  (x, y, z) to (z, y, x), so depth runs inferior→superior like an ascending axial
  DICOM series. Rows and columns are not flipped (rows run posterior→anterior and
  columns left→right, mirrored relative to a DICOM axial display; a classifier is
  indifferent, and the array stays nibabel's canonical data).
- Spacing (mm) from the header zooms, in the same (D, H, W) order.
- 4D rule: each volume along the 4th axis becomes one item (``frame`` column);
  a 4th axis of length 1 is dropped. More than four dimensions is a rejection.
- The reader is chosen by content: a NIfTI whose name lacks ``.nii``/``.nii.gz`` is read
  from its bytes (nibabel itself goes by the extension).
- NaN becomes the minimum finite value, +inf the maximum and −inf the minimum,
  with a warning naming the file and the count.
- Intensities are scaled to [0, 1] by the 0.5 and 99.5 percentiles of each volume
  (:func:`clinical.ingest.intensity.percentile_scale`; NIfTI carries no modality, so
  no HU window can be assumed).
- A zero-sized dimension is a rejection.
- Decoded-size budget: the header's dims × bitpix are checked against ``max_decoded_mb``
  before any voxel is read (code ``too-large``); a gzip stream read from its bytes is never
  inflated past the header's vox_offset + data size, since the stream can be much longer
  than the header says (a gzip bomb). Data shorter than the header declares is a
  ``corrupt-pixels`` rejection.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from clinical.errors import IngestError, UnsupportedFileError
from clinical.ingest.intensity import percentile_scale, unit_interval_to_uint16
from clinical.ingest.reasons import Reason, Rejected
from clinical.ingest.units import DecodedItem, Unit

if TYPE_CHECKING:
    from clinical.ingest.options import IngestOptions

__all__ = ["decode", "read_nifti_volumes"]

logger = logging.getLogger(__name__)


def read_nifti_volumes(
    path: str | Path, *, name: str, options: IngestOptions | None = None
) -> Iterator[tuple[int, np.ndarray, list[float]]]:
    """Yield ``(frame, volume, spacing)``: float32 (D, H, W) in [0, 1] and mm per voxel.

    ``name`` is the file's relative path, used in warnings; ``options`` give the decoded-size
    budget (``max_decoded_mb``, checked from the header before any voxel is read).

    Raises
    ------
    clinical.ingest.reasons.Rejected
        ``too-large`` over the budget, ``corrupt-pixels`` when the data is shorter than declared.
    IngestError
        When nibabel cannot read the file.
    UnsupportedFileError
        On a zero-sized dimension or more than four dimensions.
    """
    try:
        image = _load(Path(path), options)
        if options is not None:
            _check_size(image.dataobj.shape, image.dataobj.dtype, options)
        image = nib.as_closest_canonical(image)  # reorienting reads the voxels: after the budget check
    except Rejected:
        raise
    except FileNotFoundError as error:
        raise IngestError("the .img data file of this NIfTI header/image pair is missing") from error
    except Exception as error:  # nibabel raises ImageFileError, EOFError, ValueError, ... on broken files
        if _truncated(error):
            raise Rejected(Reason.CORRUPT_PIXELS, f"the NIfTI data is truncated ({type(error).__name__})") from error
        raise IngestError(f"nibabel cannot read the NIfTI header ({type(error).__name__})") from error
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 2 or 0 in shape:
        raise UnsupportedFileError(f"zero-sized or missing dimension in NIfTI shape {list(shape)}")
    if len(shape) > 4:
        raise UnsupportedFileError(f"NIfTI with {len(shape)} dimensions {list(shape)}; at most 4 are supported")
    zooms = [float(z) if z > 0 else float("nan") for z in image.header.get_zooms()[:3]]
    zooms += [float("nan")] * (3 - len(zooms))
    frames = shape[3] if len(shape) == 4 else 1
    for frame in range(frames):
        try:
            data = np.asarray(image.dataobj[..., frame] if len(shape) == 4 else image.dataobj, dtype=np.float32)
        except Exception as error:  # truncated data raises OSError/EOFError/ValueError
            if _truncated(error):
                reason = f"the NIfTI data is shorter than its header declares ({type(error).__name__})"
                raise Rejected(Reason.CORRUPT_PIXELS, reason) from error
            raise IngestError(f"the NIfTI data cannot be read ({type(error).__name__})") from error
        if data.ndim == 2:
            data = data[:, :, None]
        data = _finite(data, name=name)
        volume = np.ascontiguousarray(data.transpose(2, 1, 0))
        yield frame, percentile_scale(volume), [zooms[2], zooms[1], zooms[0]]


def _load(path: Path, options: IngestOptions | None) -> nib.spatialimages.SpatialImage:
    """nibabel picks the reader by extension; a NIfTI under another name is read from its bytes.

    nibabel's own reader is lazy (the header only); the bytes are read through a capped stream:
    the header first, then at most vox_offset + the data size it declares, within the budget.
    """
    if path.name.lower().endswith((".nii", ".nii.gz", ".hdr", ".img", ".hdr.gz", ".img.gz")):
        return nib.load(str(path))
    with open(path, "rb") as raw:
        packed = raw.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if packed else open(path, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
        image_class = nib.Nifti2Image if head[4:8] in (b"n+2\x00", b"ni2\x00") else nib.Nifti1Image
        header = image_class.header_class.from_fileobj(io.BytesIO(head))
        if options is not None:
            _check_size(header.get_data_shape(), header.get_data_dtype(), options)
        wanted = int(header.get_data_offset()) + _data_bytes(header.get_data_shape(), header.get_data_dtype())
        data = head[:wanted] + handle.read(max(wanted - len(head), 0))
    if len(data) < wanted:
        raise Rejected(
            Reason.CORRUPT_PIXELS, f"the NIfTI data holds {len(data)} bytes where its header declares {wanted}"
        )
    return image_class.from_bytes(data)


#: Enough for a NIfTI-2 header (540 bytes) and its extension flag.
_HEADER_BYTES = 544


def _data_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """dims × bitpix of the header, in bytes (what reading every voxel allocates at the stored type)."""
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def _check_size(shape: tuple[int, ...], dtype: np.dtype, options: IngestOptions) -> None:
    dims = "×".join(str(int(d)) for d in shape)
    options.check_decoded_size(_data_bytes(shape, dtype), f"NIfTI dims {dims} at {np.dtype(dtype).itemsize * 8} bits")


def _truncated(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, EOFError) or "truncat" in text or ("expected" in text and "bytes" in text)


def _finite(data: np.ndarray, *, name: str) -> np.ndarray:
    bad = ~np.isfinite(data)
    if not bad.any():
        return data
    finite = data[~bad]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    logger.warning(
        "%s: %d non-finite voxel(s) replaced (NaN and -inf by the minimum %g, +inf by the maximum %g).",
        name, int(bad.sum()), low, high,
    )
    return np.nan_to_num(data, nan=low, posinf=high, neginf=low)


def decode(unit: Unit, options: IngestOptions) -> Iterator[DecodedItem]:
    """One volume (1, D, H, W) per frame of the 4th axis, in the uint16 cache dtype, within ``options``' budget."""
    for frame, volume, spacing in read_nifti_volumes(unit.paths[0], name=unit.files[0], options=options):
        yield DecodedItem(unit_interval_to_uint16(volume[None]), "volume", spacing, f"t{frame}", {"frame": frame})

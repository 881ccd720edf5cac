"""Recognise a file's format by its content, never by its extension.

Magic numbers checked, in order:

- DICOM ``DICM`` after the 128-byte preamble (first, because a preamble may
  hold a TIFF header: dual-personality DICOM-TIFF files);
- NIfTI-1 ``n+1``/``ni1`` at byte 344, NIfTI-2 ``n+2``/``ni2`` at byte 4
  (also inside a gzip stream, magic ``1f 8b``);
- TIFF ``II*\\0`` / ``MM\\0*`` (and BigTIFF ``II+\\0`` / ``MM\\0+``);
- PNG ``\\x89PNG``, JPEG ``ff d8 ff``;
- DICOM without preamble: a header-only :func:`pydicom.dcmread` with
  ``force=True`` that finds a SOP Class UID (0008,0016) or Rows (0028,0010).
"""

from __future__ import annotations

import gzip
from pathlib import Path

__all__ = ["FORMATS", "detect_format"]

#: What :func:`detect_format` can answer (``None`` means unrecognised).
FORMATS = ("dicom", "nifti", "tiff", "png", "jpeg")

_HEAD = 352


def detect_format(path: str | Path) -> str | None:
    """Return one of :data:`FORMATS` for the file at ``path``, or ``None`` when no format matches.

    Raises
    ------
    OSError
        When the file cannot be read at all.
    """
    with open(path, "rb") as handle:
        head = handle.read(_HEAD)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(_HEAD)
        except (OSError, EOFError):
            return None
        return "nifti" if _is_nifti(head) else None
    if head[128:132] == b"DICM":  # first: a DICOM preamble may itself hold a TIFF header (dual-personality files)
        return "dicom"
    if _is_nifti(head):
        return "nifti"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"\x89PNG":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return "dicom" if _is_headerless_dicom(path) else None


def _is_nifti(head: bytes) -> bool:
    return head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00")


def _is_headerless_dicom(path: str | Path) -> bool:
    """A DICOM data set stored without preamble and file meta: only a forced read can tell."""
    import pydicom  # deferred: only needed for the rare file that no magic number matched

    from clinical.ingest.dicom import quiet_pydicom

    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["SOPClassUID", "Rows"])
            return "SOPClassUID" in ds or "Rows" in ds
    except Exception:  # any parse failure means "not DICOM", which is the answer asked for
        return False

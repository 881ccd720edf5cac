"""What the planner hands a decoder (:class:`Unit`) and what a decoder gives back (:class:`DecodedItem`).

Cached array dtypes (values in [0, 1] are stored scaled to the dtype's maximum):

============  =========  ====================================================
kind          dtype      why
============  =========  ====================================================
image/volume  uint16     windowed DICOM/NIfTI intensities in [0, 1] × 65535:
                         keeps 12–16-bit detector precision at half of float32
tile          uint8      RGB slide tiles are 8-bit at the source
photo         uint8 or   as stored: 8-bit photographs stay uint8, 16-bit
              uint16     scans stay uint16 (divide by 255 or 65535)
============  =========  ====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DecodedItem", "Unit"]


@dataclass(frozen=True)
class Unit:
    """One piece of decoding work and the PHI-free facts needed to describe its items.

    ``decoder`` names the decoder (see :func:`clinical.ingest.decode.decoder_for`); ``files``
    are the source-relative names, ``paths`` where they are read; ``spacing`` (mm) is what
    the DICOM headers said, for the decoders that take it from the plan.
    """

    unit_id: str
    decoder: str
    files: tuple[str, ...]
    paths: tuple[str, ...]
    source_digest: str
    patient_key: str
    study_key: str
    series_key: str
    modality: str
    institution: str | None = None
    spacing: tuple[float, ...] | None = None
    #: Keyed hash of Frame of Reference UID (0020,0052): series that share it are co-registered.
    frame_key: str | None = None
    #: A multi-series unit's series, one per channel in channel order (see :mod:`clinical.ingest.channels`).
    parts: tuple[Unit, ...] = ()
    #: The scan's pixel layout of each path, or None where it recorded none (see :mod:`clinical.ingest.layout`).
    layouts: tuple[str | None, ...] = ()

    def layout(self, index: int) -> str | None:
        """The scan's pixel layout of ``paths[index]``, if it recorded one."""
        return self.layouts[index] if self.layouts else None


@dataclass(frozen=True)
class DecodedItem:
    """One item of a file: the array in the cache dtype, channels first, and its kind and spacing.

    ``position`` says where in its unit the item lies (``"0"``, a frame, a tile) and, with the
    unit's content digest, makes the item id; ``extra`` holds the manifest columns only some
    kinds have (``frame``; ``tile_x``, ``tile_y``, ``tile_level``; the ``quality_*`` measures of photographs).
    """

    array: np.ndarray
    kind: str
    spacing: tuple[float, ...]
    position: str = "0"
    extra: Mapping[str, int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))


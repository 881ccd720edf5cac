"""The ingest options and their defaults, kept here once.

:class:`IngestOptions` is what decoding needs besides the files: windowing,
resampling, slide and photograph tiling, the decoded-size budget, the decompression-bomb
guard, burned-in annotation. Its field defaults are the defaults of
:func:`clinical.ingest.ingest`, of ``clinical ingest`` and of the served model; :data:`DEFAULTS` is an instance
holding them. The options are PHI-free and hold no key, so they are written to
``cohort.json`` and into a served model's spec as they are, and read back with
:meth:`IngestOptions.from_dict`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from clinical.errors import ConfigurationError
from clinical.ingest.dicom import CT_WINDOWS, DEFAULT_CT_WINDOW, VOLUME_MODALITIES
from clinical.ingest.identity import key_fingerprint
from clinical.ingest.reasons import Reason, Rejected
from clinical.ingest.resample import validate_target

__all__ = ["DEFAULTS", "DEFAULT_EXCLUDE", "MAX_DEFAULT_WORKERS", "IngestOptions", "default_workers"]

#: File-name patterns that are never counted as inputs: hidden files and sidecar tables/notes.
DEFAULT_EXCLUDE = (".*", "*.csv", "*.tsv", "*.json", "*.md", "*.txt")

#: Without ``workers``, ingest uses one process per CPU, at most this many.
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Processes ingest uses when ``workers`` is not given: the number of CPUs, at most :data:`MAX_DEFAULT_WORKERS`."""
    return min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS)


@dataclass(frozen=True)
class IngestOptions:
    """Everything a worker needs besides the unit; validated when built, picklable for the process pool.

    Attributes
    ----------
    target_spacing, target_size
        Optional resampling of every array (mm, µm for tiles; pixels), see :mod:`clinical.ingest.resample`.
    ct_window
        CT window preset (see :data:`clinical.ingest.dicom.CT_WINDOWS`) or ``"header"``.
    tile_size, tile_level, max_tiles_per_slide, min_tissue
        Slide tiling (see :mod:`clinical.ingest.slides`).
    photo_tile
        Cut photographs larger than this many pixels into tiles of that size (None: whole photos).
    max_pixels
        Decompression-bomb guard for photographs (None: ``PIL.Image.MAX_IMAGE_PIXELS``; PIL
        itself refuses anything over twice its own limit whatever this says).
    max_decoded_mb
        The decoded-size budget of one unit in MiB, checked from the headers before any pixel is
        allocated, for every format: DICOM Rows × Columns × Number of Frames × Samples per Pixel ×
        Bits Allocated, NIfTI dims × bitpix, the slide level read whole, a photograph's size × its
        mode's bytes; a gzip stream is never inflated past it. Decoding works in float32 and
        makes a copy or two, so peak memory per worker is a few times this. Over it, the unit is
        rejected with code ``too-large`` (:mod:`clinical.ingest.reasons`).
    keep_burned_in
        Keep DICOM images whose Burned In Annotation (0028,0301) is YES (text, often the patient's
        name, drawn into the pixels); by default they are rejected (code ``burned-in-annotation``).
    channels
        Stack the series of these modalities of each study as the channels of one item, in this
        order (e.g. ``("PT", "CT")``; PET as SUVbw), see :mod:`clinical.ingest.channels`. None: each
        series is its own item.

    Raises
    ------
    ConfigurationError
        On a value outside what is allowed, naming the option.
    """

    target_spacing: tuple[float, ...] | None = None
    target_size: tuple[float, ...] | None = None
    ct_window: str = DEFAULT_CT_WINDOW
    tile_size: int = 224
    tile_level: int = 0
    max_tiles_per_slide: int | None = 200
    min_tissue: float = 0.5
    photo_tile: int | None = None
    max_pixels: int | None = None
    max_decoded_mb: float = 1024.0
    keep_burned_in: bool = False
    channels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.ct_window != "header" and self.ct_window not in CT_WINDOWS:
            raise ConfigurationError(f"ct_window must be one of {[*CT_WINDOWS, 'header']}; got {self.ct_window!r}.")
        for name, minimum in (("tile_size", 1), ("tile_level", 0)):
            value = getattr(self, name)
            if int(value) != value or value < minimum:
                raise ConfigurationError(f"{name} must be an integer >= {minimum}; got {value!r}.")
        for name in ("max_tiles_per_slide", "photo_tile", "max_pixels"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise ConfigurationError(f"{name} must be a positive integer or None; got {value!r}.")
        if isinstance(self.max_decoded_mb, bool) or not isinstance(self.max_decoded_mb, int | float) or not (
            0 < self.max_decoded_mb < float("inf")
        ):
            raise ConfigurationError(f"max_decoded_mb must be a positive number of MiB; got {self.max_decoded_mb!r}.")
        if not isinstance(self.keep_burned_in, bool):
            raise ConfigurationError(f"keep_burned_in must be True or False; got {self.keep_burned_in!r}.")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ConfigurationError(f"min_tissue must be a fraction in [0, 1]; got {self.min_tissue!r}.")
        normalised = {
            "target_spacing": validate_target("target_spacing", self.target_spacing),
            "target_size": validate_target("target_size", self.target_size),
            "tile_size": int(self.tile_size),
            "tile_level": int(self.tile_level),
            "min_tissue": float(self.min_tissue),
            "max_decoded_mb": float(self.max_decoded_mb),
            "channels": _check_channels(self.channels),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    @property
    def max_decoded_bytes(self) -> int:
        """:attr:`max_decoded_mb` in bytes."""
        return int(self.max_decoded_mb * (1 << 20))

    def check_decoded_size(self, nbytes: int, what: str) -> None:
        """Refuse a decode whose header claims ``nbytes`` of pixels, more than :attr:`max_decoded_mb`.

        ``what`` says where the claim comes from (e.g. ``"Rows × Columns × ... = 60000×60000×1000×1×16 bits"``).

        Raises
        ------
        clinical.ingest.reasons.Rejected
            With code ``too-large``, naming the claimed size and the limit.
        """
        if nbytes > self.max_decoded_bytes:
            raise Rejected(
                Reason.TOO_LARGE,
                f"decoded size {_mib(nbytes)} MiB claimed by the header ({what}) exceeds the budget "
                f"max_decoded_mb={self.max_decoded_mb:g}; raise --max-decoded-mb to ingest it",
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> IngestOptions:
        """Options from a mapping such as ``cohort.json``'s ``options``; other keys are ignored, lists become tuples."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in dict(values or {}).items() if k in known})

    def as_dict(self) -> dict[str, Any]:
        """The options as plain values, for ``cohort.json`` and a served model's spec."""
        return asdict(self)

    def fingerprint(self, key: bytes) -> str:
        """Changes when any option or the pseudonym key changes (the key itself is not revealed)."""
        public = {**self.as_dict(), "key": key_fingerprint(key)}
        return hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_channels(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(str(v).strip().upper() for v in ([value] if isinstance(value, str) else value))
    if len(names) < 2 or len(set(names)) != len(names) or not set(names) <= VOLUME_MODALITIES:
        raise ConfigurationError(
            f"channels must be two or more different modalities among {sorted(VOLUME_MODALITIES)} "
            f"(e.g. PT,CT); got {value!r}."
        )
    return names


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):,.1f}"


#: The default options.
DEFAULTS = IngestOptions()

"""The one way to decode: planned units to items, resampling included, for ingest and for single files.

Each format's decoders live in its module (:func:`clinical.ingest.dicom.decode_image`,
:func:`~clinical.ingest.dicom.decode_multiframe`, :func:`~clinical.ingest.dicom.decode_volume`,
:func:`clinical.ingest.nifti.decode`, :func:`clinical.ingest.slides.decode`,
:func:`clinical.ingest.photos.decode`), registered here under the names the planner gives
units (:func:`decoder_for`, :func:`register_decoder`). :func:`decode` runs a unit's
decoder and resamples each item to the options' target; :func:`read_file` does the same
for one file or its bytes, through the same scan and plan as :func:`clinical.ingest.ingest`,
so that a served prediction (``clinical.tracking.pyfunc``) sees the array a training item did.
"""

from __future__ import annotations

import dataclasses
import importlib
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from clinical.errors import ConfigurationError, IngestError
from clinical.ingest import channels, dicom
from clinical.ingest.options import IngestOptions
from clinical.ingest.plan import plan_units
from clinical.ingest.reasons import Rejected
from clinical.ingest.resample import resample
from clinical.ingest.scan import scan_file
from clinical.ingest.units import DecodedItem, Unit

__all__ = ["Decoder", "Decoding", "decode", "decoder_for", "decoder_names", "read_file", "register_decoder"]

#: A decoder: the items of one unit, arrays in the cache dtype, channels first; raises IngestError on bad input.
Decoder = Callable[[Unit, IngestOptions], Iterator[DecodedItem]]

#: Each decoder, or where it lives: a format's libraries (nibabel, scikit-image, scipy) load when a unit of
#: that format is first decoded, so a worker that decodes DICOM does not spend a second importing them.
_DECODERS: dict[str, Decoder | str] = {
    "dicom_image": dicom.decode_image,
    "dicom_multiframe": dicom.decode_multiframe,
    "dicom_volume": dicom.decode_volume,
    channels.DECODER: channels.decode_channels,
    "nifti": "clinical.ingest.nifti:decode",
    "slide": "clinical.ingest.slides:decode",
    "photo": "clinical.ingest.photos:decode",
}

#: Identity does not matter for a single file: nothing is hashed into an output.
_NO_KEY = b"\0" * 32


def decoder_names() -> tuple[str, ...]:
    """The names units can have."""
    return tuple(_DECODERS)


def decoder_for(name: str) -> Decoder:
    """The decoder of units named ``name``.

    Raises
    ------
    ConfigurationError
        When no decoder has that name.
    """
    try:
        decoder = _DECODERS[name]
    except KeyError:
        raise ConfigurationError(f"No decoder is named {name!r}; the decoders are {list(_DECODERS)}.") from None
    if isinstance(decoder, str):
        module, function = decoder.split(":")
        decoder = _DECODERS[name] = getattr(importlib.import_module(module), function)
    return decoder


def register_decoder(name: str, decoder: Decoder) -> Decoder:
    """Make ``decoder`` decode the units named ``name`` (one of :func:`decoder_names`); return the one it replaces.

    Registration holds in this process: ingest with ``workers > 0`` decodes in fresh
    worker processes, which only see decoders registered when they import their module.

    Raises
    ------
    ConfigurationError
        When ``name`` is not a unit name the planner gives.
    """
    previous = decoder_for(name)
    _DECODERS[name] = decoder
    return previous


class Decoding:
    """The items of one unit, each resampled to the options' target; :attr:`stage` names the step running.

    ``stage`` is ``"decode"`` or ``"resample"``: the stage a rejection is recorded at
    when iterating raises.
    """

    def __init__(self, unit: Unit, options: IngestOptions) -> None:
        self.unit = unit
        self.options = options
        self.stage = "decode"

    def __iter__(self) -> Iterator[DecodedItem]:
        options = self.options
        for item in decoder_for(self.unit.decoder)(self.unit, options):
            if options.target_spacing is not None or options.target_size is not None:
                self.stage = "resample"
                array, spacing = resample(
                    item.array, item.spacing, target_spacing=options.target_spacing, target_size=options.target_size
                )
                item = dataclasses.replace(item, array=array, spacing=tuple(spacing))
                self.stage = "decode"
            yield item


def decode(unit: Unit, options: IngestOptions) -> Decoding:
    """The items of ``unit`` (decoded, then resampled), lazily: iterate to decode."""
    return Decoding(unit, options)


def read_file(
    source: str | Path | bytes, *, options: IngestOptions | Mapping[str, Any] | None = None
) -> list[DecodedItem]:
    """Decode one DICOM, NIfTI, slide or photograph file (a path, or its bytes) into its items, as ingest would.

    Parameters
    ----------
    source
        The file, or its content (written to a temporary file named ``request``).
    options
        The cohort's ingest options (``cohort.json``'s ``options``) so that
        windowing, resampling and tiling match the cohort; defaults otherwise.

    Raises
    ------
    IngestError
        With the reason ingest would have written in its rejections, after the file's name; a
        :class:`~clinical.ingest.reasons.Rejected` (an ``IngestError``) carries its ``code`` too. The
        decoded-size budget, pixel-integrity and burned-in checks of ingest apply here as well.
    ConfigurationError
        When ``options`` hold a value outside what is allowed.
    """
    if isinstance(source, bytes):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "request"
            path.write_bytes(source)
            return read_file(path, options=options)
    options = options if isinstance(options, IngestOptions) else IngestOptions.from_dict(options)
    name = Path(source).name
    record = scan_file(str(source), name, _NO_KEY)
    if record["stage"] is not None:
        raise _refusal(name, record)
    units, rejections = plan_units([{**record, "path": str(source)}], options, key=_NO_KEY)
    if rejections:
        raise _refusal(name, rejections[0])
    return [item for unit in units for item in decode(unit, options)]


def _refusal(name: str, rejection: Mapping[str, Any]) -> IngestError:
    """The error of a scan or plan rejection: a :class:`~clinical.ingest.reasons.Rejected` when it has a code."""
    message = f"{name}: {rejection['reason']}"
    return Rejected(rejection["code"], message) if rejection.get("code") else IngestError(message)

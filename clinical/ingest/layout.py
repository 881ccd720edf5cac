"""What a DICOM file's decoding reads, kept from the scan's one parse: converted values and where its pixels lie.

Decoding parsed each file's header a second time, and then read a dozen elements through the data set
three times over (screening, pydicom's pixel options, the Modality LUT and the window): on a small file
that was most of its decoding time. The scan's parse already holds those elements. :func:`layout_of`
records their values as pydicom converted them (:data:`VALUE_TAGS`), the options pydicom's decoder takes
from a data set (those of ``pydicom.pixels.utils.as_pixel_options``), and the offset and length of Pixel Data
(7FE0,0010). :func:`header_from_layout` gives back a :class:`PixelHeader`: those values read as a data set
is read, whose :attr:`~PixelHeader.pixel_array` is pydicom's decoder for the file's transfer syntax run
on the file's Pixel Data bytes with those options, so every LUT and window step after it is that of a
parsed file.

Only what decodes exactly this way is recorded: a transfer syntax of native Pixel Data whose byte offsets
are the file's (not deflated, not encapsulated), and none of the elements whose steps need the data set
itself (:data:`_NEEDS_DATASET`: LUT and palette tables, functional groups, float pixel data). A file
outside that, or whose bytes changed since the scan (its digest), is parsed as before. The values are
those of the Image Pixel, Modality LUT, VOI LUT and geometry modules and the SOP class: no identifier,
nothing about the patient.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_keyword
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import _IMAGE_PIXEL
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from clinical.cohort.digest import bytes_digest
from clinical.ingest.values import Values

__all__ = ["PIXEL_TAGS", "VALUE_TAGS", "PixelHeader", "header_from_layout", "layout_of"]

#: What screening, decoding, the Modality LUT and windowing read, and spacing: a layout keeps their values.
VALUE_TAGS = (
    "SOPClassUID", "Modality", "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames",
    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "BurnedInAnnotation",
    "PixelSpacing", "ImagerPixelSpacing", "SpacingBetweenSlices", "SliceThickness",
)
#: A file with any of these is parsed at decoding: their steps read tables and sequences from the data set.
_NEEDS_DATASET = (
    "ExtendedOffsetTable", "ExtendedOffsetTableLengths", "FloatPixelData", "DoubleFloatPixelData",
    "ModalityLUTSequence", "VOILUTSequence",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "AlphaPaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "AlphaPaletteColorLookupTableData", "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData", "SegmentedBluePaletteColorLookupTableData",
    "SegmentedAlphaPaletteColorLookupTableData", "PaletteColorLookupTableUID", "SharedFunctionalGroupsSequence",
)
#: What the scan's parse reads for decoding: the parse of a file without a layout reads the same.
PIXEL_TAGS = (*VALUE_TAGS, "HighBit", "PixelData", "PixelPaddingValue", "PixelPaddingRangeLimit", "RescaleType",
              "VOILUTFunction", *_NEEDS_DATASET)
_NEEDS_DATASET_NUMBERS = tuple(Tag(keyword) for keyword in _NEEDS_DATASET)
#: The Image Pixel elements pydicom's decoder reads from a data set, with its option names.
_DECODER_OPTIONS = tuple((dictionary_keyword(tag), option) for tag, option in _IMAGE_PIXEL.items())

#: Transfer syntaxes whose Pixel Data is native and at its place in the file: (implicit VR, little endian).
_NATIVE = {ImplicitVRLittleEndian: (True, True), ExplicitVRLittleEndian: (False, True),
           ExplicitVRBigEndian: (False, False)}
_PIXEL_DATA = BaseTag(0x7FE00010)


class PixelHeader(Values):
    """The recorded values of one file by keyword, with its Pixel Data: read as a parsed data set is read.

    ``get``, ``in`` and attribute access by keyword work as on a :class:`~pydicom.dataset.Dataset`, so
    screening, :func:`pydicom.pixels.apply_modality_lut`, windowing and spacing read it unchanged;
    :attr:`pixel_array` is what the data set's would be.
    """

    def __init__(self, values: dict[str, Any], pixels: bytes, syntax: str, options: dict[str, Any]) -> None:
        super().__init__(values, PixelData=pixels)
        self._syntax = syntax
        self._options = options

    @property
    def pixel_array(self) -> np.ndarray:
        """The decoded pixels, by the decoder and options ``Dataset.pixel_array`` uses for this file."""
        return get_decoder(self._syntax).as_array(self["PixelData"], validate=True, **self._options)[0]


def layout_of(ds: pydicom.Dataset, values: Mapping[str, Any], digest: str) -> str | None:
    """The layout of a parsed file as JSON (see the module docstring), or None when it cannot be decoded from one.

    ``ds`` must be the parse of the whole file with Pixel Data deferred, ``values`` its
    :func:`~clinical.ingest.values.values_of`; ``digest`` is the file's content digest. Never raises: a
    layout only saves time, so an odd file simply gets none.
    """
    try:
        return _layout(ds, values, digest)
    except Exception:  # pydicom raises many types on odd elements
        return None


def _layout(ds: pydicom.Dataset, values: Mapping[str, Any], digest: str) -> str | None:
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    if syntax not in _NATIVE or tuple(ds.original_encoding) != _NATIVE[syntax]:
        return None
    pixels = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if not isinstance(pixels, RawDataElement) or pixels.length in (0, 0xFFFFFFFF):  # encapsulated: undefined
        return None
    if any(tag in ds for tag in _NEEDS_DATASET_NUMBERS):
        return None
    kept = {keyword: _plain(values[keyword]) for keyword in VALUE_TAGS if keyword in values}
    if str(kept.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        return None
    return json.dumps({"digest": digest, "syntax": syntax, "pixel_data": [pixels.value_tell, pixels.length],
                       "values": kept, "options": _decoder_options(values, pixels.VR)}, allow_nan=False)


def _decoder_options(values: Mapping[str, Any], vr: str | None) -> dict[str, Any]:
    """The options pydicom's decoder takes from a data set (``as_pixel_options``, Pixel Data's keyword and VR).

    From the converted values: ``as_pixel_options`` reads the data set's elements again.
    """
    options = {option: values[keyword] for keyword, option in _DECODER_OPTIONS if keyword in values}
    frames = options.get("number_of_frames", 1)
    frames = int(frames) if isinstance(frames, str) else frames
    options["number_of_frames"] = 1 if frames in (None, 0) else frames  # as pydicom assumes, with a warning
    return {**options, "pixel_keyword": "PixelData", "pixel_vr": vr}


def _plain(value: Any) -> Any:
    """A converted value as JSON holds it: pydicom's number and string types are subclasses of the plain ones."""
    if isinstance(value, MultiValue | Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    raise TypeError(f"a {type(value).__name__} value is not recorded")  # bytes, sequences: parse the file instead


def header_from_layout(layout: str, data: bytes) -> PixelHeader | None:
    """The :class:`PixelHeader` of the file whose bytes are ``data``, from its layout, or None.

    None when ``data`` is not the content the layout was recorded from, or the layout cannot be read
    (the file is then parsed).
    """
    try:
        spec = json.loads(layout)
        if bytes_digest(data) != spec["digest"]:
            return None
        offset, length = spec["pixel_data"]
        return PixelHeader(spec["values"], data[offset:offset + length], spec["syntax"], spec["options"])
    except Exception:  # a damaged scan state: parse the file instead
        return None

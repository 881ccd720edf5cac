"""Where a DICOM file's pixels lie and the elements that decode them, kept from the scan's one parse.

Decoding parsed each file's header a second time, about two thirds of a small file's decoding time.
The scan's parse already holds the elements decoding reads (:data:`PIXEL_TAGS`) as pydicom read them,
raw bytes not yet converted, and the offset and length of Pixel Data (7FE0,0010). :func:`layout_of`
records them; :func:`dataset_from_layout` rebuilds from them and the file's bytes the very data set a
parse of those elements gives, as pydicom builds one (a :class:`Dataset` of :class:`RawDataElement`,
converted when read), so every decoder, LUT and window step after it is that of a parsed file.

Only what rebuilds exactly is recorded: a transfer syntax of native Pixel Data whose byte offsets are the
file's (not deflated, not encapsulated); every pixel element a short value pydicom left raw (no
sequence, no palette or LUT data it deferred). A file outside that, or whose bytes changed since the
scan (its digest), is parsed as before. The elements are those of the Image Pixel, Modality LUT and VOI
LUT modules and the SOP class: no identifier, nothing about the patient.
"""

from __future__ import annotations

import json

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from clinical.cohort.digest import bytes_digest

__all__ = ["PIXEL_TAGS", "dataset_from_layout", "layout_of"]

#: What decoding, the Modality LUT, windowing and spacing read (Image Pixel module, palettes, LUTs, geometry):
#: the scan parses them too, and a layout keeps them.
PIXEL_TAGS = (
    "SOPClassUID", "Modality", "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames",
    "ExtendedOffsetTable", "ExtendedOffsetTableLengths", "PixelData", "FloatPixelData", "DoubleFloatPixelData",
    "PixelPaddingValue", "PixelPaddingRangeLimit", "RescaleSlope", "RescaleIntercept", "RescaleType",
    "ModalityLUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "AlphaPaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "AlphaPaletteColorLookupTableData", "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData", "SegmentedBluePaletteColorLookupTableData",
    "SegmentedAlphaPaletteColorLookupTableData", "PaletteColorLookupTableUID",
    "SharedFunctionalGroupsSequence", "PixelSpacing", "ImagerPixelSpacing", "SpacingBetweenSlices", "SliceThickness",
    "BurnedInAnnotation",
)
_PIXEL_TAG_NUMBERS = tuple(Tag(keyword) for keyword in PIXEL_TAGS)

#: Transfer syntaxes whose Pixel Data is native and at its place in the file: (implicit VR, little endian).
_NATIVE = {ImplicitVRLittleEndian: (True, True), ExplicitVRLittleEndian: (False, True),
           ExplicitVRBigEndian: (False, False)}
_PIXEL_DATA = BaseTag(0x7FE00010)
#: Other pixel payloads: a file with one of them is parsed (they are rare; their VRs differ).
_OTHER_PAYLOADS = (BaseTag(0x7FE00008), BaseTag(0x7FE00009))
#: An element longer than this is not recorded (palette and LUT data, long text): the file is parsed.
_MAX_VALUE = 256


def layout_of(ds: pydicom.Dataset, digest: str) -> str | None:
    """The layout of a parsed file as JSON (see the module docstring), or None when it cannot be rebuilt exactly.

    ``ds`` must be the parse of the whole file with Pixel Data deferred, before any of
    :data:`PIXEL_TAGS` has been read (reading converts an element and its raw bytes are gone; such a
    file is then only parsed again at decoding, never decoded wrongly). ``digest`` is the file's content
    digest. Never raises: a layout only saves time, so an odd file simply gets none.
    """
    try:
        return _layout(ds, digest)
    except Exception:  # pydicom raises many types on odd elements
        return None


def _layout(ds: pydicom.Dataset, digest: str) -> str | None:
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    if syntax not in _NATIVE or tuple(ds.original_encoding) != _NATIVE[syntax]:
        return None
    pixels = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if not isinstance(pixels, RawDataElement) or pixels.length in (0, 0xFFFFFFFF):  # encapsulated: undefined
        return None
    if any(tag in ds for tag in _OTHER_PAYLOADS):
        return None
    elements = []
    for tag in _PIXEL_TAG_NUMBERS:
        if tag == _PIXEL_DATA or tag not in ds:
            continue
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.length > _MAX_VALUE or (raw.value is None and raw.length):
            return None  # converted, long, or deferred (pydicom keeps some empty values as None)
        elements.append([int(tag), raw.VR, None if raw.value is None else raw.value.hex()])
    return json.dumps({"digest": digest, "syntax": syntax, "pixel_data": [pixels.value_tell, pixels.length,
                                                                          pixels.VR], "elements": elements})


def dataset_from_layout(layout: str, data: bytes) -> pydicom.Dataset | None:
    """The data set of the recorded elements and Pixel Data from ``data`` (the file's bytes), or None.

    None when ``data`` is not the content the layout was recorded from, or the layout cannot be read
    (the file is then parsed).
    """
    try:
        spec = json.loads(layout)
        return _dataset(spec, data) if bytes_digest(data) == spec["digest"] else None
    except Exception:  # a damaged scan state: parse the file instead
        return None


def _dataset(spec: dict, data: bytes) -> pydicom.Dataset:
    implicit, little = _NATIVE[spec["syntax"]]
    offset, length, vr = spec["pixel_data"]
    elements = {}
    for tag, element_vr, text in spec["elements"]:
        value = None if text is None else bytes.fromhex(text)
        elements[BaseTag(tag)] = RawDataElement(BaseTag(tag), element_vr, len(value or b""), value, 0, implicit,
                                                little)
    elements[_PIXEL_DATA] = RawDataElement(_PIXEL_DATA, vr, length, data[offset:offset + length], offset, implicit,
                                           little)
    ds = Dataset(elements)
    ds.set_original_encoding(implicit, little)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(spec["syntax"])
    return ds

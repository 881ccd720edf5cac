"""The scan's parse of a DICOM file held in memory: what pydicom's reader gives, from a quicker walk.

pydicom's reader makes and checks every element it passes, wanted or not, a few microseconds each; a
vendor's CT slice has some 250 elements of which the scan wants 40, so that walk was most of the scan.
:func:`read_wanted` walks the top-level data set itself: 8 or 12 header bytes an element, unwanted values
skipped (those of undefined length item by item), and hands the wanted ones to pydicom as the raw
elements its reader makes, in a data set built as its reader builds one (preamble and File Meta are
read by pydicom itself). Written by hand because pydicom has no walk that skips faster.

It gives None, and the caller parses with pydicom, wherever the walk might not give pydicom's result
exactly: no 'DICM' prefix, no or a deflated transfer syntax, a private one, a command set, a first
element whose VR says otherwise than the transfer syntax, a VR pydicom does not know, an item or
delimiter out of place, a wanted element of undefined length other than encapsulated Pixel Data, or
anything running past the end of the data. One difference is left, in malformed files only: an item of
defined length inside a skipped sequence is skipped by its length, where pydicom reads its elements and
goes on from wherever the last of them ends.
"""

from __future__ import annotations

import io
from struct import Struct

import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

__all__ = ["CHARSET", "read_wanted"]

_KNOWN_VR = frozenset(str(vr).encode(default_encoding) for vr in VR)
_LONG_VR = frozenset(str(vr).encode(default_encoding) for vr in EXPLICIT_VR_LENGTH_32)
#: Specific Character Set (0008,0005), which pydicom's reader always reads.
CHARSET = 0x00080005
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


class _Unlike(Exception):
    """The walk cannot promise pydicom's result for this file: parse it with pydicom."""


def read_wanted(data: bytes, wanted: frozenset[int], defer_size: int) -> FileDataset | None:
    """``pydicom.dcmread(BytesIO(data), force=True, defer_size=defer_size, specific_tags=wanted)``, or None.

    ``wanted`` must hold Specific Character Set (0008,0005), as pydicom's reader adds it. None where the
    walk might differ from pydicom's reader (see the module docstring); never raises.
    """
    try:
        return _read(data, wanted, defer_size)
    except Exception:  # _Unlike, and pydicom's own errors on the File Meta: pydicom's reader decides
        return None


def _read(data: bytes, wanted: frozenset[int], defer_size: int) -> FileDataset | None:
    fp = io.BytesIO(data)
    preamble = read_preamble(fp, True)
    if preamble is None:
        return None
    file_meta = _read_file_meta_info(fp)
    syntax = file_meta.get("TransferSyntaxUID")
    if not syntax or syntax == DeflatedExplicitVRLittleEndian or syntax in pydicom.uid.PrivateTransferSyntaxes:
        return None
    implicit, little = syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    start = fp.tell()
    if len(data) - start < 8 or data[start:start + 2] == b"\0\0":  # nothing left, or a command set
        return None
    elements: dict[BaseTag, RawDataElement] = {}
    _Walk(data, implicit, little, wanted, defer_size, elements).elements(start, top=True)
    dataset = Dataset(elements)
    charset = elements.get(BaseTag(CHARSET))
    encoding = convert_encodings(convert_raw_data_element(charset).value) if charset else default_encoding
    dataset.set_original_encoding(implicit, little, encoding)
    ds = FileDataset(fp, dataset, preamble, file_meta, implicit, little)
    ds.set_original_encoding(implicit, little, dataset._character_set)
    return ds


class _Walk:
    """One file's walk: its bytes, encoding, the wanted tags, and the raw elements found."""

    def __init__(self, data: bytes, implicit: bool, little: bool, wanted: frozenset[int], defer_size: int,
                 found: dict[BaseTag, RawDataElement]) -> None:
        endian = "<" if little else ">"
        self.data, self.end, self.implicit, self.little = data, len(data), implicit, little
        self.wanted, self.defer_size, self.found = wanted, defer_size, found
        self.head = Struct(endian + ("HHL" if implicit else "HH2sH"))  # tag, (VR,) length
        self.item = Struct(endian + "HHL")  # items and delimiters have no VR in either encoding
        self.u32 = Struct(endian + "L")

    def elements(self, pos: int, *, top: bool) -> int:
        """Walk elements from ``pos`` to the end (top level) or to an item delimiter; return the position after."""
        data, end, implicit, wanted = self.data, self.end, self.implicit, self.wanted
        head, u32 = self.head, self.u32
        if (top or not implicit) and end - pos >= 6:  # pydicom's guess of the encoding from the first element
            looks_explicit = 0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B
            if looks_explicit == implicit:
                raise _Unlike("the first element's VR says otherwise than the transfer syntax")
        while end - pos >= 8:
            if implicit:
                group, number, length = head.unpack_from(data, pos)
                vr, value_at = None, pos + 8
            else:
                group, number, raw_vr, length = head.unpack_from(data, pos)
                if group == 0xFFFE:
                    vr = value_at = None  # an item tag: no VR
                elif raw_vr in _LONG_VR:
                    if end - pos < 12:
                        raise _Unlike("an element header runs past the end")
                    vr, length, value_at = raw_vr, u32.unpack_from(data, pos + 8)[0], pos + 12
                elif raw_vr in _KNOWN_VR:
                    vr, value_at = raw_vr, pos + 8
                else:
                    raise _Unlike("a VR pydicom does not know")
            tag = group << 16 | number
            if group == 0xFFFE:
                if tag == _ITEM_END and not top:
                    return pos + 8
                raise _Unlike("an item tag among elements")
            if length != _UNDEFINED:
                pos = value_at + length
                if pos > end:
                    raise _Unlike("a value runs past the end")
                if top and tag in wanted:
                    self._keep(tag, vr, length, value_at)
            elif top and tag in wanted:
                pos = self._keep_encapsulated(tag, vr, value_at)
            else:
                pos = self.items(value_at)
        if top:
            return pos  # pydicom stops at fewer than 8 bytes
        raise _Unlike("an item runs past the end")

    def items(self, pos: int, *, fragments: bool = False) -> int:
        """Skip a value of undefined length, item by item, to its sequence delimiter; return the position after.

        ``fragments``: the items of encapsulated Pixel Data, each of defined length, as pydicom reads them.
        """
        data, end = self.data, self.end
        while True:
            if end - pos < 8:
                raise _Unlike("a sequence runs past the end")
            group, number, length = self.item.unpack_from(data, pos)
            tag = group << 16 | number
            pos += 8
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM:
                raise _Unlike("no item where one belongs")
            if length == _UNDEFINED and not fragments:
                pos = self.elements(pos, top=False)
            elif length == _UNDEFINED or pos + length > end:
                raise _Unlike("an item runs past the end")
            else:
                pos += length

    def _keep(self, tag: int, raw_vr: bytes | None, length: int, pos: int) -> None:
        """The raw element pydicom's reader makes of a value of defined length (deferred when long)."""
        vr = raw_vr.decode(default_encoding) if raw_vr is not None else None
        if length > self.defer_size and tag != CHARSET:
            value = None
        else:
            value = self.data[pos:pos + length] if length else empty_value_for_VR(vr, raw=True)
        self.found[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, length, value, pos, self.implicit, self.little)

    def _keep_encapsulated(self, tag: int, raw_vr: bytes | None, pos: int) -> int:
        """Encapsulated Pixel Data as pydicom reads it: its fragments to the delimiter, deferred when long."""
        vr = raw_vr.decode(default_encoding) if raw_vr is not None else None
        if vr not in ("OB", "OW"):
            raise _Unlike("a wanted element of undefined length")
        after = self.items(pos, fragments=True)
        count = after - 4 - pos  # pydicom counts the fragments and the delimiter's tag, not its length
        value = None if self.defer_size <= count else self.data[pos:after - 8]
        self.found[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, _UNDEFINED, value, pos, self.implicit, self.little)
        return after

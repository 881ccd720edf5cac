"""A parsed header's element values by keyword, each converted once, read as the data set is read.

Every read of a pydicom data set looks the keyword up, finds the element and, the first time, converts
it; on a small file the scan's forty reads of its parsed header cost as much as the parse. :func:`values_of`
converts each element once, with the call the data set's own read makes, into a :class:`Values`: a
``dict`` that answers ``get``, ``in`` and attribute access by keyword as the data set does, so the
header, stack and layout steps read it as they would read the data set.
"""

from __future__ import annotations

from typing import Any

import pydicom
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element

from clinical.ingest.elements import CHARSET

__all__ = ["Values", "values_of"]

#: Pixel payloads: a deferred one is known to be there without reading it.
_PAYLOADS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


class Values(dict):
    """Element values by keyword, readable as a data set (``get``, ``in``, attribute access by keyword)."""

    def __getattr__(self, keyword: str) -> Any:
        try:
            return self[keyword]
        except KeyError:
            raise AttributeError(keyword) from None


def values_of(ds: pydicom.Dataset) -> Values | pydicom.Dataset:
    """The values of every element of ``ds`` by keyword (its ``file_meta`` kept), or ``ds`` itself.

    ``ds`` itself when an element cannot be converted, so that reading it raises where it did; a deferred
    pixel payload's value is None (it is not read), another deferred value is read as the data set reads it.
    """
    try:
        return _values(ds)
    except Exception:  # pydicom raises many types on odd values: the data set's own reads report them
        return ds


def _values(ds: pydicom.Dataset) -> Values:
    values = Values()
    charset = ds.original_character_set
    for tag in ds.keys():  # noqa: SIM118 -- iterating a data set itself converts every element
        try:
            keyword = dictionary_keyword(tag)
        except KeyError:  # private or unknown: never read by keyword
            continue
        element = ds.get_item(tag, keep_deferred=True)
        if not isinstance(element, RawDataElement):
            values[keyword] = element.value
        elif element.value is None and element.length != 0:
            values[keyword] = None if tag in _PAYLOADS else ds[tag].value
        else:
            encoding = default_encoding if tag == CHARSET else charset
            values[keyword] = convert_raw_data_element(element, encoding=encoding, ds=ds).value
    if (meta := getattr(ds, "file_meta", None)) is not None:
        values.file_meta = meta
    return values

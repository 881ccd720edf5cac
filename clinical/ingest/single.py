"""One file decoded exactly as ingest decodes it, without writing a cohort; and a fingerprint of the sources.

The served model (``clinical.tracking.pyfunc``) takes DICOM or NIfTI bytes
from a caller; reading them through the same scan, plan and handlers as
:func:`clinical.ingest.ingest` guarantees that a served prediction sees the
same array a training item did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from clinical.cohort.digest import bytes_digest, file_digest
from clinical.errors import IngestError
from clinical.ingest.engine import _HANDLERS, DEFAULT_EXCLUDE, IngestOptions, _plan, _scan_one, _walk
from clinical.ingest.resample import resample

__all__ = ["DecodedItem", "read_file", "sources_fingerprint"]

#: Identity does not matter for a single file: nothing is hashed into an output.
_NO_KEY = b"\0" * 32


@dataclass(frozen=True)
class DecodedItem:
    """One item of a file: the array in the cache dtype, channels first, and its kind and spacing."""

    array: np.ndarray
    kind: str
    spacing: tuple[float, ...]


def read_file(path: str | Path, *, options: IngestOptions | Mapping[str, Any] | None = None) -> list[DecodedItem]:
    """Decode one DICOM, NIfTI, slide or photograph file into its items.

    Parameters
    ----------
    options
        The cohort's ingest options (``cohort.json``'s ``options``) so that
        windowing, resampling and tiling match the cohort; defaults otherwise.

    Raises
    ------
    IngestError
        With the reason ingest would have written in its rejections.
    """
    options = _as_options(options)
    record = _scan_one((str(path), Path(path).name, options.key))
    if record["stage"] is not None:
        raise IngestError(f"{Path(path).name}: {record['reason']}")
    units, rejections = _plan([{**record, "path": str(path)}], options)
    if rejections:
        raise IngestError(f"{Path(path).name}: {rejections[0]['reason']}")
    items = []
    for unit in units:
        for array, _position, kind, spacing, _extras in _HANDLERS[unit.handler](unit, options):
            if options.target_spacing is not None or options.target_size is not None:
                array, spacing = resample(
                    array, spacing, target_spacing=options.target_spacing, target_size=options.target_size
                )
            items.append(DecodedItem(array=array, kind=kind, spacing=tuple(float(s) for s in spacing)))
    return items


def _as_options(options: IngestOptions | Mapping[str, Any] | None) -> IngestOptions:
    if isinstance(options, IngestOptions):
        return options
    known = {f.name for f in fields(IngestOptions)} - {"key"}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(options or {}).items() if k in known}
    return IngestOptions(key=_NO_KEY, **values)


def sources_fingerprint(
    sources: str | Path | Sequence[str | Path],
    *,
    labels: str | Path | None = None,
    sites: str | Path | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> str:
    """A digest that changes when any input file is added, removed or rewritten, or the label/site tables change.

    Built from each file's name, size and modification time (the same test
    ingest uses to skip unchanged files), not from its bytes, so a nightly
    pipeline can tell in seconds whether there is anything new to ingest.
    """
    entries = [
        f"{name}\t{os.stat(path).st_size}\t{os.stat(path).st_mtime_ns}"
        for path, name in _walk(sources, exclude=exclude, skip=set(), cohort=Path("/nonexistent-cohort"))
    ]
    tables = [file_digest(p) if p is not None else "-" for p in (labels, sites)]
    return bytes_digest("\n".join([*tables, *entries]).encode())

"""Ingest of DICOM, NIfTI, whole slides and photographs into a PHI-free cohort manifest.

``ingest(sources, out)`` is the one entry point (:mod:`~clinical.ingest.engine`), with its
options and their defaults in :mod:`~clinical.ingest.options`. It walks and scans the sources
(:mod:`~clinical.ingest.scan`, recognition in :mod:`~clinical.ingest.detect`), plans units of
work (:mod:`~clinical.ingest.plan`, grouping in :mod:`~clinical.ingest.series`) and decodes them
(:mod:`~clinical.ingest.decode`, resampling in :mod:`~clinical.ingest.resample`) with the
decoders of the format modules (:mod:`~clinical.ingest.dicom`, :mod:`~clinical.ingest.nifti`,
:mod:`~clinical.ingest.slides`, :mod:`~clinical.ingest.photos`), keeping its scan state and parts
in :mod:`~clinical.ingest.journal`. Pseudonyms are in :mod:`~clinical.ingest.identity`, labels and
sites (and slice labels) in :mod:`~clinical.ingest.labels`; series stacked as
channels (PET/CT) in :mod:`~clinical.ingest.channels`, PET to SUVbw in :mod:`~clinical.ingest.suv`.
:func:`read_file` decodes one file as ingest would.
Outputs name source files by keyed pseudonyms; :func:`source_paths` maps them back to the
real relative paths from the private map kept beside the key (never inside the cohort).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clinical.lazy import lazy_exports

#: Name → module it comes from, loaded on first use (:mod:`clinical.lazy`): a worker that scans or
#: decodes imports its own modules, not the engine's pandas.
_SOURCES = {
    "DEFAULTS": "clinical.ingest.options",
    "DEFAULT_EXCLUDE": "clinical.ingest.options",
    "DecodedItem": "clinical.ingest.units",
    "IngestOptions": "clinical.ingest.options",
    "IngestReport": "clinical.ingest.engine",
    "decoder_for": "clinical.ingest.decode",
    "ingest": "clinical.ingest.engine",
    "keyed_hash": "clinical.ingest.identity",
    "load_key": "clinical.ingest.identity",
    "read_file": "clinical.ingest.decode",
    "read_slice_labels": "clinical.ingest.labels",
    "register_decoder": "clinical.ingest.decode",
    "source_paths": "clinical.ingest.identity",
    "sources_fingerprint": "clinical.ingest.scan",
}

if TYPE_CHECKING:
    from clinical.ingest.decode import decoder_for, read_file, register_decoder
    from clinical.ingest.engine import IngestReport, ingest
    from clinical.ingest.identity import keyed_hash, load_key, source_paths
    from clinical.ingest.labels import read_slice_labels
    from clinical.ingest.options import DEFAULT_EXCLUDE, DEFAULTS, IngestOptions
    from clinical.ingest.scan import sources_fingerprint
    from clinical.ingest.units import DecodedItem

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)

__all__ = [
    "DEFAULTS",
    "DEFAULT_EXCLUDE",
    "DecodedItem",
    "IngestOptions",
    "IngestReport",
    "decoder_for",
    "ingest",
    "keyed_hash",
    "load_key",
    "read_file",
    "read_slice_labels",
    "register_decoder",
    "source_paths",
    "sources_fingerprint",
]

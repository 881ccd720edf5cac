"""Ingest of DICOM, NIfTI, whole slides and photographs into a PHI-free cohort manifest.

``ingest(sources, out)`` is the one entry point; the modules hold one format each
(:mod:`~clinical.ingest.dicom`, :mod:`~clinical.ingest.nifti`, :mod:`~clinical.ingest.slides`,
:mod:`~clinical.ingest.photos`), grouping (:mod:`~clinical.ingest.series`), recognition
(:mod:`~clinical.ingest.detect`), pseudonyms (:mod:`~clinical.ingest.identity`), labels and
sites (:mod:`~clinical.ingest.labels`) and resampling (:mod:`~clinical.ingest.resample`).
"""

from __future__ import annotations

from clinical.ingest.engine import DEFAULT_EXCLUDE, IngestOptions, IngestReport, ingest
from clinical.ingest.identity import keyed_hash, load_key
from clinical.ingest.single import DecodedItem, read_file, sources_fingerprint

__all__ = [
    "DEFAULT_EXCLUDE",
    "DecodedItem",
    "IngestOptions",
    "IngestReport",
    "ingest",
    "keyed_hash",
    "load_key",
    "read_file",
    "sources_fingerprint",
]

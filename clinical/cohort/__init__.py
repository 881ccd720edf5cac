"""The cohort manifest: schema, read/write, digest; and the synthetic demo cohort."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clinical.lazy import lazy_exports

#: Name → module it comes from, loaded on first use (:mod:`clinical.lazy`): the digests that ingest
#: workers use do not import the manifest's pandas.
_SOURCES = {
    "ITEM_KINDS": "clinical.cohort.manifest",
    "MANIFEST_COLUMNS": "clinical.cohort.manifest",
    "REJECTION_COLUMNS": "clinical.cohort.manifest",
    "bytes_digest": "clinical.cohort.digest",
    "code_digest": "clinical.cohort.digest",
    "cohort_digest": "clinical.cohort.manifest",
    "file_digest": "clinical.cohort.digest",
    "files_digest": "clinical.cohort.digest",
    "read_cohort_meta": "clinical.cohort.manifest",
    "read_manifest": "clinical.cohort.manifest",
    "read_rejections": "clinical.cohort.manifest",
    "table_digest": "clinical.cohort.digest",
    "validate_manifest": "clinical.cohort.manifest",
    "write_manifest": "clinical.cohort.manifest",
    "write_rejections": "clinical.cohort.manifest",
}

if TYPE_CHECKING:
    from clinical.cohort.digest import bytes_digest, code_digest, file_digest, files_digest, table_digest
    from clinical.cohort.manifest import (
        ITEM_KINDS,
        MANIFEST_COLUMNS,
        REJECTION_COLUMNS,
        cohort_digest,
        read_cohort_meta,
        read_manifest,
        read_rejections,
        validate_manifest,
        write_manifest,
        write_rejections,
    )

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)

__all__ = [
    "ITEM_KINDS",
    "MANIFEST_COLUMNS",
    "REJECTION_COLUMNS",
    "bytes_digest",
    "code_digest",
    "cohort_digest",
    "file_digest",
    "files_digest",
    "read_cohort_meta",
    "read_manifest",
    "read_rejections",
    "table_digest",
    "validate_manifest",
    "write_manifest",
    "write_rejections",
]

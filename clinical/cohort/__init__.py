"""The cohort manifest: schema, read/write, digest; and the synthetic demo cohort."""

from __future__ import annotations

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

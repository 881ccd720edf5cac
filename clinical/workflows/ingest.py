"""From sources to a cohort, as files: in a module of its own, so that ingesting imports no training or audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clinical.ingest import IngestReport, ingest

__all__ = ["ingest_cohort"]


def ingest_cohort(sources: list[str | Path], cohort_dir: str | Path, **options: Any) -> IngestReport:
    """Ingest ``sources`` into ``cohort_dir`` (manifest, rejections, arrays); see :func:`clinical.ingest.ingest`."""
    return ingest(sources, cohort_dir, **options)

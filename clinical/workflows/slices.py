"""``slice_cohort``: a volume cohort and its split as the cohort and split of their axial slices.

``clinical train --slices`` calls it so that every later use case (folds, pooling, the final
model, registration) reads an ordinary cohort folder. The slice cohort holds no arrays: its
paths lead back to the volume cohort's cache. Each slice keeps its volume's fold and role, so
the split stays the patient-level one it was made as.
"""

from __future__ import annotations

import os
from pathlib import Path

from clinical.cohort import read_cohort_meta, read_manifest, write_manifest
from clinical.data import slice_items
from clinical.ingest import read_slice_labels
from clinical.ingest.identity import load_key
from clinical.splits import read_split, write_split

__all__ = ["slice_cohort"]


def slice_cohort(
    cohort_dir: str | Path, split_path: str | Path, out: str | Path, *, slice_labels: str | Path | None = None,
    key: str | bytes | None = None,
) -> tuple[Path, Path]:
    """Write ``out/cohort`` (one ``image`` item per axial slice) and ``out/split.parquet``; return both paths.

    ``slice_labels`` is a CSV ``series_uid, slice, label`` (see :func:`clinical.ingest.read_slice_labels`;
    its UIDs are hashed with the cohort's pseudonym ``key``); without it each slice takes its volume's label.

    Raises
    ------
    ManifestError
        When the cohort has no volumes or the slice labels name slices its volumes do not have.
    ConfigurationError
        When the slice-label file is missing or malformed.
    """
    cohort_dir, out = Path(cohort_dir), Path(out)
    table = read_slice_labels(slice_labels, load_key(key)) if slice_labels is not None else None
    view = slice_items(read_manifest(cohort_dir), slice_labels=table)
    sliced = out / "cohort"
    sliced.mkdir(parents=True, exist_ok=True)
    view["path"] = [os.path.relpath(cohort_dir.resolve() / p, sliced.resolve()) for p in view["path"]]
    digest = write_manifest(view, sliced, meta={"sliced_from": read_cohort_meta(cohort_dir).get("digest")})
    split, meta = read_split(split_path)
    rows = view[["item_id", "volume_id"]].merge(split.rename(columns={"item_id": "volume_id"}), on="volume_id")
    rows = rows.drop(columns=["volume_id"])
    rows.attrs["split"] = {k: v for k, v in meta.items() if k not in ("digest", "cohort_digest", "rows", "items")}
    write_split(rows, out / "split.parquet", cohort_digest=digest)
    return sliced, out / "split.parquet"


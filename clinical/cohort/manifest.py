"""The cohort manifest: the contract between ingest and every later stage.

A cohort is a folder::

    COHORT/manifest.parquet     one row per trainable item (image, volume, tile, crop)
    COHORT/rejections.parquet   one row per input that could not be ingested, with the reason
    COHORT/cohort.json          the manifest digest and how the cohort was made
    COHORT/arrays/...           the cached arrays the ``path`` column points to

Later stages read these files, never ingest's Python objects, so each stage
can run in its own process and be cached by the digest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from clinical.cohort.digest import table_digest
from clinical.errors import ManifestError

__all__ = [
    "COHORT_META",
    "ITEM_KINDS",
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "REJECTIONS_FILE",
    "REJECTION_COLUMNS",
    "cohort_digest",
    "read_cohort_meta",
    "read_manifest",
    "read_rejections",
    "validate_manifest",
    "write_manifest",
    "write_rejections",
]

MANIFEST_FILE = "manifest.parquet"
REJECTIONS_FILE = "rejections.parquet"
COHORT_META = "cohort.json"

#: What one row stands for; each kind has its own transform preset in ``clinical.data``.
ITEM_KINDS = ("image", "volume", "tile", "photo")

#: Required columns and their pandas dtypes. Extra columns (tile coordinates,
#: frame index, view, ...) are allowed and kept.
MANIFEST_COLUMNS: dict[str, str] = {
    "item_id": "string",  # stable: derived from source_digest and the position inside the source
    "patient_key": "string",  # keyed hash (HMAC) of the patient ID, never the raw ID
    "study_key": "string",  # keyed hash of StudyInstanceUID (or the study folder)
    "series_key": "string",  # keyed hash of SeriesInstanceUID (or the file)
    "site": "string",
    "modality": "string",  # DICOM (0008,0060) Modality, or SM for slides, XC for photographs
    "kind": "string",  # one of ITEM_KINDS
    "label": "string",  # class name; missing for unlabelled items (kept for self-supervised pretraining)
    "path": "string",  # cached array, relative to the cohort folder (.npy)
    "source": "object",  # list[str]: the original file(s), relative to the ingested source root
    "shape": "object",  # list[int]: shape of the cached array, channels first
    "spacing": "object",  # list[float]: mm per voxel along the spatial axes (µm for slide tiles)
    "source_digest": "string",  # sha256 of the source bytes (of all files, for a series)
}

REJECTION_COLUMNS: dict[str, str] = {
    "file": "string",  # the rejected input, relative to the ingested source root
    "stage": "string",  # where it failed: detect, read, decode, group, resample, ...
    "reason": "string",  # a sentence a person can act on; never PHI
    "code": "string",  # one of a small fixed vocabulary (clinical.ingest.reasons.Reason), to filter and count
}


def validate_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """Check the schema and the invariants every later stage relies on.

    Returns the manifest with the required columns cast to their dtypes.

    Raises
    ------
    ManifestError
        When a required column is missing, ``item_id`` is not unique, a
        ``kind`` is unknown, or ``patient_key`` is missing for some row.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"The manifest lacks the required column(s) {missing}. "
            f"Required: {list(MANIFEST_COLUMNS)}; got: {list(manifest.columns)}."
        )
    out = manifest.astype({c: t for c, t in MANIFEST_COLUMNS.items() if t != "object"})
    duplicated = out["item_id"].duplicated()
    if duplicated.any():
        raise ManifestError(
            f"'item_id' must be unique; {int(duplicated.sum())} row(s) repeat an earlier item_id "
            f"(first: {out.loc[duplicated, 'item_id'].iloc[0]!r})."
        )
    unknown = sorted(set(out["kind"].dropna()) - set(ITEM_KINDS))
    if unknown or out["kind"].isna().any():
        raise ManifestError(f"'kind' must be one of {ITEM_KINDS}; got {unknown or ['<missing>']}.")
    if out["patient_key"].isna().any():
        raise ManifestError(
            f"'patient_key' is missing for {int(out['patient_key'].isna().sum())} row(s); "
            "every item must belong to a patient so that splits can keep patients together."
        )
    return out


def cohort_digest(manifest: pd.DataFrame) -> str:
    """Digest of what a model would learn from: items, their sources, labels, patients and sites.

    Row order does not matter; the cache path does not count (moving a cohort keeps its digest).
    """
    columns = ["item_id", "patient_key", "study_key", "series_key", "site", "label", "source_digest", "kind"]
    return table_digest(manifest, columns=columns, sort_by="item_id")


def write_manifest(manifest: pd.DataFrame, cohort: str | Path, *, meta: dict | None = None) -> str:
    """Validate and write ``manifest.parquet`` and ``cohort.json``; return the cohort digest.

    The parquet file is written to a temporary name and renamed, so an
    interrupted write never leaves a half manifest behind.
    """
    cohort = Path(cohort)
    cohort.mkdir(parents=True, exist_ok=True)
    manifest = validate_manifest(manifest).sort_values("item_id", ignore_index=True)
    _atomic_parquet(manifest, cohort / MANIFEST_FILE)
    digest = cohort_digest(manifest)
    info = {**(meta or {}), "digest": digest, "items": len(manifest)}
    tmp = cohort / (COHORT_META + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    tmp.replace(cohort / COHORT_META)
    return digest


def read_manifest(cohort: str | Path) -> pd.DataFrame:
    """Read and validate ``COHORT/manifest.parquet``.

    Raises
    ------
    ManifestError
        When the folder holds no manifest (with the path and what to run) or the schema is broken.
    """
    path = Path(cohort) / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"No manifest at {path}. Run `clinical ingest SOURCE --out {Path(cohort)}` first.")
    manifest = pd.read_parquet(path)
    for column in ("source", "shape", "spacing"):
        manifest[column] = manifest[column].map(_as_list)
    return validate_manifest(manifest)


def read_cohort_meta(cohort: str | Path) -> dict:
    """Read ``COHORT/cohort.json`` (digest, item count and how the cohort was made)."""
    path = Path(cohort) / COHORT_META
    if not path.is_file():
        raise ManifestError(f"No {COHORT_META} at {path}; the cohort was not written by `clinical ingest`.")
    return json.loads(path.read_text())


def write_rejections(rejections: pd.DataFrame | Iterable[dict], cohort: str | Path) -> None:
    """Write ``rejections.parquet`` (columns ``file, stage, reason, code``), atomically."""
    table = pd.DataFrame(list(rejections) if not isinstance(rejections, pd.DataFrame) else rejections)
    if table.empty:
        table = pd.DataFrame({c: pd.Series(dtype=t) for c, t in REJECTION_COLUMNS.items()})
    missing = [c for c in REJECTION_COLUMNS if c not in table.columns]
    if missing:
        raise ManifestError(f"The rejections table lacks the column(s) {missing}; required: {list(REJECTION_COLUMNS)}.")
    table = table.astype(REJECTION_COLUMNS).sort_values("file", ignore_index=True)
    Path(cohort).mkdir(parents=True, exist_ok=True)
    _atomic_parquet(table, Path(cohort) / REJECTIONS_FILE)


def read_rejections(cohort: str | Path) -> pd.DataFrame:
    """Read ``COHORT/rejections.parquet``; an absent file means nothing was rejected.

    Cohorts written before rejections had a ``code`` read with the code missing (``<NA>``).
    """
    path = Path(cohort) / REJECTIONS_FILE
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in REJECTION_COLUMNS.items()})
    table = pd.read_parquet(path)
    if "code" not in table.columns:
        table["code"] = pd.NA
    return table.astype(REJECTION_COLUMNS)


def _atomic_parquet(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(path)


def _as_list(value: object) -> list:
    """Parquet gives numpy arrays back for list columns; the contract promises plain lists."""
    if value is None:
        return []
    return list(value.tolist() if hasattr(value, "tolist") else value)

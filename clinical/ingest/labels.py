"""Labels and sites from CSV files, matched to items by file, series, study, patient or folder.

A labels CSV has a ``label`` column and, per row, one key among ``file`` (relative
to the ingested source root, as in the manifest's ``source``), ``series_uid``,
``study_uid`` and ``patient_id``. A row may give both ``file`` and ``patient_id``:
the file then belongs to that patient (for photographs whose folder is not the
patient). A sites CSV has a ``site`` column and the same keys plus ``folder``
(a path prefix relative to the source root) and ``institution`` (InstitutionName
(0008,0080)).

Raw patient IDs and UIDs are hashed with the pseudonym key as soon as the CSV is
read and matched against the items' keyed hashes, so they are never kept.
The most specific key wins: file, folder, series, study, patient, institution.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from clinical.errors import ConfigurationError
from clinical.ingest.identity import keyed_hash

__all__ = ["KeyTable", "read_key_table", "read_slice_labels"]

_KEY_COLUMNS = ("file", "folder", "series_uid", "study_uid", "patient_id", "institution")
_HASHED = ("series_uid", "study_uid", "patient_id")


@dataclass
class KeyTable:
    """A value (label or site) per key; identifiers are keyed hashes."""

    by: dict[str, dict[str, str]] = field(default_factory=lambda: {c: {} for c in _KEY_COLUMNS})
    patient_of_file: dict[str, str] = field(default_factory=dict)

    def lookup(
        self,
        files: Iterable[str],
        *,
        patient_key: str | None = None,
        study_key: str | None = None,
        series_key: str | None = None,
        institution: str | None = None,
    ) -> str | None:
        """The value of the most specific matching key, or None."""
        files = list(files)
        for name in files:
            if name in self.by["file"]:
                return self.by["file"][name]
        for name in files:
            for parent in PurePosixPath(name).parents:
                if str(parent) in self.by["folder"]:
                    return self.by["folder"][str(parent)]
        for column, value in (
            ("series_uid", series_key),
            ("study_uid", study_key),
            ("patient_id", patient_key),
            ("institution", institution),
        ):
            if value is not None and value in self.by[column]:
                return self.by[column][value]
        return None


def read_key_table(path: str | Path, value_column: str, key: bytes) -> KeyTable:
    """Read a labels (``value_column="label"``) or sites (``"site"``) CSV.

    Raises
    ------
    ConfigurationError
        When the file is missing, lacks ``value_column`` or every key column, or gives
        one key two different values.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"The {value_column}s file {path} does not exist.")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    keys = [c for c in _KEY_COLUMNS if c in table.columns]
    if value_column not in table.columns or not keys:
        raise ConfigurationError(
            f"{path.name} must have a '{value_column}' column and at least one of {list(_KEY_COLUMNS)}; "
            f"got columns {list(table.columns)}."
        )
    result = KeyTable()
    conflicts = 0
    for row in table.itertuples(index=False):
        record = row._asdict()
        value = record[value_column].strip()
        if "file" in record and record["file"].strip() and "patient_id" in record and record["patient_id"].strip():
            result.patient_of_file[_posix(record["file"])] = keyed_hash(key, record["patient_id"])
        if not value:
            continue
        column = next((c for c in keys if record[c].strip()), None)
        if column is None:
            continue
        raw = record[column]
        if column in _HASHED:
            name = keyed_hash(key, raw)
        else:
            name = _posix(raw) if column in ("file", "folder") else raw.strip()
        previous = result.by[column].setdefault(name, value)
        conflicts += previous != value
    if conflicts:
        raise ConfigurationError(
            f"{path.name} gives {conflicts} key(s) two different {value_column}s; each key must have one value."
        )
    return result


def _posix(name: str) -> str:
    return str(PurePosixPath(name.strip().replace("\\", "/"))).removeprefix("./")


def read_slice_labels(path: str | Path, key: bytes) -> pd.DataFrame:
    """Read a slice-label CSV (``series_uid, slice, label``) as ``series_key, slice, label`` (UIDs hashed).

    ``slice`` counts along the ingested volume, from the first slice along the normal of Image
    Orientation (Patient) (ascending), as the cached array holds them; see :func:`clinical.data.slice_items`.

    Raises
    ------
    ConfigurationError
        When the file is missing, lacks a column, or has a slice that is not a whole number >= 0.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"The slice-labels file {path} does not exist.")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    needed = ["series_uid", "slice", "label"]
    if any(c not in table.columns for c in needed):
        raise ConfigurationError(f"{path.name} must have the columns {needed}; got {list(table.columns)}.")
    slices = pd.to_numeric(table["slice"], errors="coerce")
    if slices.isna().any() or (slices < 0).any() or (slices % 1 != 0).any():
        raise ConfigurationError(f"{path.name}: every 'slice' must be a whole number >= 0 (the slice index).")
    return pd.DataFrame({"series_key": [keyed_hash(key, uid.strip()) for uid in table["series_uid"]],
                         "slice": slices.astype("int64"), "label": table["label"].str.strip()})

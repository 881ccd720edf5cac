"""What makes ingest restartable: the scan state and the parts journal, both in the cohort folder.

``COHORT/ingest_state.parquet``
    One scan record per file (its keyed pseudonym, never its name; size, mtime, digest,
    format, rejection, DICOM header with hashed identifiers), so an unchanged file (same
    size and mtime) is not read again. It is tied to the pseudonym key: another key starts
    from nothing.
``COHORT/parts/*.parquet``
    The rows of decoded units (items and rejections, as JSON), written every
    :data:`FLUSH_EVERY` units. A unit with rows here is not decoded again, so an
    interrupted run resumes where it stopped; the merge compacts the parts into one.

Every file is written under a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from clinical.ingest.identity import key_fingerprint

__all__ = ["FLUSH_EVERY", "PARTS", "STATE_FILE", "PartsWriter", "done_units", "read_parts", "read_state", "write_state"]

STATE_FILE = "ingest_state.parquet"
PARTS = "parts"
#: Units decoded between two writes of a part.
FLUSH_EVERY = 256
#: 2: files by pseudonym, rejection codes, DICOM stack elements; 3: frame of reference; 4: pixel layouts;
#: 5: layouts of converted values
_STATE_VERSION = 5
_STATE_COLUMNS = [
    "file", "size", "mtime_ns", "digest", "format", "stage", "code", "reason", "header", "stack", "pixels",
]


def read_state(cohort: Path, key: bytes) -> dict[str, dict]:
    """The scan records of the previous run by file name; empty when there is none, or it is of another key."""
    path = cohort / STATE_FILE
    if not path.is_file():
        return {}
    state = pd.read_parquet(path)
    fingerprint = key_fingerprint(key)
    if state.empty or "version" not in state or int(state["version"].iloc[0]) != _STATE_VERSION or (
        state["state_key"].iloc[0] != fingerprint
    ):
        return {}
    state = state.drop(columns=["state_key", "version"]).astype(object).where(state.notna(), None)
    return {row["file"]: row for row in state.to_dict("records")}


def write_state(cohort: Path, key: bytes, records: list[dict]) -> None:
    """Replace the scan state with ``records``: only the state's columns are kept, never a ``name`` or ``path``."""
    table = pd.DataFrame(records, columns=_STATE_COLUMNS)
    table["state_key"] = key_fingerprint(key)
    table["version"] = _STATE_VERSION
    tmp = cohort / (STATE_FILE + ".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(cohort / STATE_FILE)


def done_units(cohort: Path) -> set[str]:
    """Ids of the units that already have rows in ``parts/``."""
    done: set[str] = set()
    for part in sorted((cohort / PARTS).glob("*.parquet")):
        done.update(pd.read_parquet(part, columns=["unit_id"])["unit_id"])
    return done


class PartsWriter:
    """Collects the rows of finished units and writes them to a new part every :data:`FLUSH_EVERY` units."""

    def __init__(self, cohort: Path) -> None:
        self.cohort = cohort
        self.flush_every = FLUSH_EVERY
        self._stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._items: list[dict] = []
        self._rejections: list[dict] = []
        self._units = 0
        self._flushed = 0

    def add(self, items: list[dict], rejections: list[dict]) -> None:
        """The rows of one unit (each with its ``unit_id``)."""
        self._items.extend(items)
        self._rejections.extend(rejections)
        self._units += 1
        if self._units % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        """Write what was added since the last part, if anything."""
        if self._items or self._rejections:
            _write_part(self.cohort, f"{self._stamp}-{self._flushed:05d}", self._items, self._rejections)
            self._flushed += 1
            self._items, self._rejections = [], []


def read_parts(cohort: Path, unit_ids: Collection[str]) -> tuple[list[dict], list[dict]]:
    """Item and rejection rows of the units ``unit_ids`` from every part; the parts are compacted into one.

    A unit re-run after an interruption may have both an older rejection and newer items; the items win.
    Rows of units no longer planned (their files changed or left) are dropped.
    """
    item_rows: dict[str, dict] = {}
    rejections: dict[str, dict] = {}
    parts = sorted((cohort / PARTS).glob("*.parquet"))
    for part in parts:
        table = pd.read_parquet(part)
        for unit_id, outcome, text in table.itertuples(index=False):
            if unit_id not in unit_ids:
                continue
            row = json.loads(text)
            if outcome == "item":
                item_rows[row["item_id"]] = row
            else:
                rejections[row["file"]] = row
    ingested = {f for row in item_rows.values() for f in row["source"]}
    rejections = {f: r for f, r in rejections.items() if f not in ingested}
    if parts:
        _write_part(cohort, "compacted-tmp", list(item_rows.values()), list(rejections.values()))
        for part in parts:
            part.unlink()
        (cohort / PARTS / "compacted-tmp.parquet").replace(cohort / PARTS / "compacted.parquet")
    return list(item_rows.values()), list(rejections.values())


def _write_part(cohort: Path, name: str, items: list[dict], rejections: list[dict]) -> None:
    folder = cohort / PARTS
    folder.mkdir(exist_ok=True)
    rows = [{"unit_id": i["unit_id"], "outcome": "item", "row": json.dumps(i)} for i in items]
    rows += [{"unit_id": r["unit_id"], "outcome": "rejection", "row": json.dumps(r)} for r in rejections]
    tmp = folder / f"{name}.parquet.tmp"
    pd.DataFrame(rows, columns=["unit_id", "outcome", "row"]).to_parquet(tmp, index=False)
    tmp.replace(folder / f"{name}.parquet")

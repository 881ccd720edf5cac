"""The staging folder a pull writes to, and the two failures a backend may report.

Layout (every name a keyed hash, so no identifier reaches the file system)::

    STAGING/studies/<study>/<series>/<instance>.dcm   complete studies: the ingest source
    STAGING/partial/<study>/...                       a study being fetched (resumed by the next pull)
    STAGING/pull_state.json                           done and failed studies, PHI-free

A study moves from ``partial/`` to ``studies/`` with one rename once every instance is on disk,
so ingest never sees half a study. Instances are written one at a time (temporary name, then
rename), so memory holds at most one instance and an interrupted write leaves no broken file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from clinical.ingest.identity import keyed_hash

__all__ = ["RetrievalError", "Staging", "TransientError"]

_STATE_VERSION = 1


class TransientError(Exception):
    """The PACS did not answer or was busy (connection refused, timeout, 5xx, association rejected): retry."""


class RetrievalError(Exception):
    """The PACS answered but could not deliver this study; the message is PHI-free. The study is rejected."""


class Staging:
    """The staging folder of one cohort's pulls (see the module docstring)."""

    def __init__(self, root: str | Path, key: bytes) -> None:
        self.root = Path(root)
        self.studies = self.root / "studies"
        self.partial = self.root / "partial"
        self._key = key
        self._state_path = self.root / "pull_state.json"
        self.studies.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.state = self._read_state()

    def study_key(self, study_uid: str) -> str:
        """The keyed hash of a StudyInstanceUID (0020,000D): the study's folder and state entry."""
        return keyed_hash(self._key, study_uid)

    def is_done(self, study_key: str) -> bool:
        """Whether the study was fetched completely by an earlier pull."""
        return (self.studies / study_key).is_dir()

    def instance_path(self, study_key: str, series_uid: str, sop_uid: str) -> Path:
        """Where an instance of a study being fetched goes: keyed hashes of (0020,000E) and (0008,0018)."""
        return self.partial / study_key / keyed_hash(self._key, series_uid) / f"{keyed_hash(self._key, sop_uid)}.dcm"

    def has_instance(self, study_key: str, series_uid: str, sop_uid: str) -> bool:
        """Whether an interrupted earlier pull already wrote this instance."""
        return self.instance_path(study_key, series_uid, sop_uid).is_file()

    def write_instance(self, study_key: str, dataset: Dataset, transfer_syntax: str | None = None) -> Path:
        """Write one received instance as a DICOM file (Part 10), atomically.

        DICOMweb parts carry their File Meta Information; a DIMSE C-STORE does not, so it is
        rebuilt from the SOP Class/Instance UIDs and the negotiated ``transfer_syntax``.
        """
        if transfer_syntax is not None or "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = dataset.SOPClassUID
            meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            meta.TransferSyntaxUID = UID(transfer_syntax or dataset.file_meta.TransferSyntaxUID)
            dataset.file_meta = meta
        path = self.instance_path(study_key, str(dataset.SeriesInstanceUID), str(dataset.SOPInstanceUID))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
        dataset.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        return path

    def complete(self, study_key: str, instances: int) -> None:
        """Mark a study done: move it into ``studies/`` and record it."""
        source = self.partial / study_key
        if not source.is_dir():  # a study with no instances still counts as fetched
            source.mkdir(parents=True)
        os.replace(source, self.studies / study_key)
        self.state["done"][study_key] = {"instances": instances}
        self.state["failed"].pop(study_key, None)
        self._write_state()

    def fail(self, study_key: str, reason: str) -> None:
        """Record a study the PACS could not deliver (retried by the next pull)."""
        self.state["failed"][study_key] = reason
        self._write_state()

    def _read_state(self) -> dict:
        state = {"version": _STATE_VERSION, "done": {}, "failed": {}}
        if self._state_path.is_file():
            loaded = json.loads(self._state_path.read_text())
            if loaded.get("version") == _STATE_VERSION:
                state.update(loaded)
        for folder in self.studies.iterdir():  # a rename that happened just before an interruption
            if folder.is_dir() and folder.name not in state["done"]:
                state["done"][folder.name] = {"instances": sum(1 for _ in folder.rglob("*.dcm"))}
        return state

    def _write_state(self) -> None:
        tmp = self._state_path.with_name(f".{self._state_path.name}.tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self._state_path)

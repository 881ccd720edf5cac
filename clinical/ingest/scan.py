"""Finding the input files and scanning each once: content digest, format by content, DICOM header.

:func:`walk` lists the files of the sources by their source-relative names
(sidecar files such as ``*.csv`` are excluded by name). :func:`scan` gives one
PHI-free record per file; unchanged files (same size and mtime) reuse the record
kept in the scan state (see :mod:`clinical.ingest.journal`).
:func:`sources_fingerprint` tells cheaply whether anything changed since.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Collection, Sequence
from concurrent.futures import Executor
from dataclasses import asdict
from itertools import repeat
from pathlib import Path

from tqdm.auto import tqdm

from clinical.cohort.digest import bytes_digest, file_digest
from clinical.errors import ConfigurationError, IngestError
from clinical.ingest import dicom, slides
from clinical.ingest.detect import detect_format
from clinical.ingest.journal import read_state, write_state
from clinical.ingest.options import DEFAULT_EXCLUDE

__all__ = ["as_list", "scan", "scan_file", "sources_fingerprint", "walk"]

_IN_MEMORY_BYTES = 64 << 20


def as_list(sources: str | Path | Sequence[str | Path]) -> list[Path]:
    """One source or several, as a list of paths."""
    return [Path(sources)] if isinstance(sources, str | Path) else [Path(s) for s in sources]


def walk(
    sources: str | Path | Sequence[str | Path],
    *,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    skip: Collection[Path] = (),
    cohort: Path | None = None,
) -> list[tuple[str, str]]:
    """(absolute path, source-relative posix name) of every input file, sorted by name.

    Files in ``skip`` (resolved paths) or inside the folder ``cohort`` are left out.
    With several sources, names start with their folder's name.

    Raises
    ------
    ConfigurationError
        When no source is given, a source does not exist, or two sources give the same name.
    """
    roots = as_list(sources)
    if not roots:
        raise ConfigurationError("No sources given; pass at least one folder or file to ingest.")
    prefix = len(roots) > 1
    found: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            raise ConfigurationError(f"The source {root} does not exist.")
        base = root.parent if root.is_file() else root
        candidates = [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file())
        for path in candidates:
            resolved = path.resolve()
            if (resolved in skip or (cohort is not None and cohort in resolved.parents)
                    or any(fnmatch.fnmatch(path.name, e) for e in exclude)):
                continue
            rel = path.relative_to(base).as_posix()
            name = f"{base.name}/{rel}" if prefix else rel
            if found.setdefault(name, str(path)) != str(path):
                raise ConfigurationError(
                    f"Two sources give the same name {name!r}: sources are named by their folder. "
                    "Ingest them one at a time, or give folders with different names."
                )
    return sorted(((path, name) for name, path in found.items()), key=lambda item: item[1])


def scan(
    found: list[tuple[str, str]], cohort: Path, key: bytes, executor: Executor | None, disable: bool | None
) -> list[dict]:
    """One PHI-free record per file of :func:`walk` (digest, format, DICOM header with hashed identifiers).

    Records of unchanged files come from the cohort's scan state, which is then replaced.
    ``executor`` scans in worker processes (None: in this one); ``disable`` hides the progress bar.
    """
    previous = read_state(cohort, key)
    records: list[dict | None] = []
    todo: list[tuple[int, str, str]] = []
    for index, (path, name) in enumerate(found):
        old = previous.get(name)
        try:
            stat = os.stat(path)
        except OSError:  # vanished since the walk: scan_file records why
            old = None
        if old is not None and old["size"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns:
            records.append(old)
        else:
            records.append(None)
            todo.append((index, path, name))
    tasks = ([path for _, path, _ in todo], [name for _, _, name in todo], repeat(key))
    results = executor.map(scan_file, *tasks, chunksize=32) if executor else map(scan_file, *tasks)
    bar = tqdm(zip(todo, results, strict=True), total=len(todo), desc="scan", unit="file", disable=disable)
    for (index, _, _), record in bar:
        records[index] = record
    write_state(cohort, key, records)
    return [{**record, "path": path} for record, (path, _) in zip(records, found, strict=True)]


def scan_file(path: str, name: str, key: bytes) -> dict:
    """The scan record of one file; never raises, so one odd file cannot stop the scan.

    A record whose ``stage`` is not None is a rejection with its ``reason``; otherwise
    ``format`` is one of ``dicom``, ``nifti``, ``slide``, ``photo``.
    """
    record = {"file": name, "size": -1, "mtime_ns": -1, "digest": None, "format": None, "stage": None,
              "reason": None, "header": None}
    try:
        return _record(path, key, record)
    except Exception as error:  # a bug or an exotic failure becomes a rejection naming the file, not a crash
        return {**record, "stage": "detect", "reason": f"unexpected {type(error).__name__} while scanning"}


def _record(path: str, key: bytes, record: dict) -> dict:
    try:
        stat = os.stat(path)
    except OSError as error:
        return {**record, "stage": "detect", "reason": f"the file cannot be read ({type(error).__name__})"}
    record.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    if stat.st_size == 0:
        return {**record, "stage": "detect", "reason": "empty file (0 bytes)"}
    try:
        data = Path(path).read_bytes() if stat.st_size <= _IN_MEMORY_BYTES else None  # one read for digest and header
        record["digest"] = bytes_digest(data) if data is not None else file_digest(path)
        fmt = detect_format(path)
    except OSError as error:
        return {**record, "stage": "detect", "reason": f"the file cannot be read ({type(error).__name__})"}
    if fmt is None:
        return {**record, "stage": "detect",
                "reason": "unrecognised content: not DICOM, NIfTI, TIFF, PNG or JPEG (extensions are not used)"}
    if fmt == "tiff":
        try:
            fmt = "slide" if slides.is_pyramidal(path) else "photo"
        except Exception as error:  # tifffile raises many types on broken files
            return {**record, "stage": "read", "reason": f"the TIFF structure cannot be read ({type(error).__name__})"}
    elif fmt in ("png", "jpeg"):
        fmt = "photo"
    record["format"] = fmt
    if fmt == "dicom":
        try:
            header = dicom.read_header(data if data is not None else path, key)
        except IngestError as error:
            return {**record, "stage": "read", "reason": str(error)}
        record["header"] = json.dumps(asdict(header))
    return record


def sources_fingerprint(
    sources: str | Path | Sequence[str | Path],
    *,
    labels: str | Path | None = None,
    sites: str | Path | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> str:
    """A digest that changes when any input file is added, removed or rewritten, or the label/site tables change.

    Built from each file's name, size and modification time (the same test
    ingest uses to skip unchanged files), not from its bytes, so a nightly
    pipeline can tell in seconds whether there is anything new to ingest.
    """
    entries = [
        f"{name}\t{os.stat(path).st_size}\t{os.stat(path).st_mtime_ns}" for path, name in walk(sources, exclude=exclude)
    ]
    tables = [file_digest(p) if p is not None else "-" for p in (labels, sites)]
    return bytes_digest("\n".join([*tables, *entries]).encode())

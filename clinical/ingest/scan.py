"""Finding the input files and scanning each once: content digest, format by content, DICOM header.

:func:`walk_all` accounts for every entry under the sources: the input files by their
source-relative names, and every other entry skipped with a code and a reason (sidecar
files such as ``*.csv`` by name, FIFOs, unreadable folders, link loops, dangling links).
:func:`scan` gives one PHI-free record per file, named by its keyed pseudonym; unchanged
files (same size and mtime) reuse the record kept in the scan state (see
:mod:`clinical.ingest.journal`).
:func:`sources_fingerprint` tells cheaply whether anything changed since.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import stat
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

from tqdm.auto import tqdm

from clinical.cohort.digest import bytes_digest, file_digest
from clinical.errors import ConfigurationError, IngestError
from clinical.ingest import dicom, slides
from clinical.ingest.detect import detect_format
from clinical.ingest.identity import source_pseudonym
from clinical.ingest.layout import PIXEL_TAGS, layout_of
from clinical.ingest.options import DEFAULT_EXCLUDE
from clinical.ingest.reasons import Reason
from clinical.ingest.series import STACK_TAGS, stack_of
from clinical.ingest.values import values_of

__all__ = ["Walk", "as_list", "scan", "scan_file", "scan_files", "sources_fingerprint", "walk", "walk_all"]

_IN_MEMORY_BYTES = 64 << 20
#: Files per worker task.
_CHUNK = 32


def as_list(sources: str | Path | Sequence[str | Path]) -> list[Path]:
    """One source or several, as a list of paths."""
    return [Path(sources)] if isinstance(sources, str | Path) else [Path(s) for s in sources]


@dataclass
class Walk:
    """What :func:`walk_all` met: the input files, and every other entry with why it is skipped.

    ``files`` are (path, source-relative name) pairs sorted by name; ``skipped`` are rejection rows
    ``{"file", "stage": "walk", "code", "reason"}`` (see :mod:`clinical.ingest.reasons`).
    """

    files: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def walk(
    sources: str | Path | Sequence[str | Path],
    *,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    skip: Collection[Path] = (),
    cohort: Path | None = None,
) -> list[tuple[str, str]]:
    """(path, source-relative posix name) of every input file, sorted by name (see :func:`walk_all`)."""
    return walk_all(sources, exclude=exclude, skip=skip, cohort=cohort).files


def walk_all(
    sources: str | Path | Sequence[str | Path],
    *,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    skip: Collection[Path] = (),
    cohort: Path | None = None,
) -> Walk:
    """Every entry under the sources: input files, and skipped entries each with a code and a reason.

    Skipped, never silently: files matching ``exclude`` (the patterns of
    :data:`~clinical.ingest.options.DEFAULT_EXCLUDE` as ``unsupported``, other patterns as
    ``excluded``), FIFOs, sockets and devices (``not-regular-file``), folders that cannot be
    listed (``unreadable-folder``), links that lead back into themselves (``link-loop``) or
    nowhere (``dangling-link``), the labels/sites tables ``skip`` and the cohort folder
    ``cohort`` (``excluded``). Links to files and folders are followed. Names in any encoding
    and paths of any length are met; what the operating system cannot open is rejected later
    with the reason. With several sources, names start with their folder's name.

    Raises
    ------
    ConfigurationError
        When no source is given, a source does not exist, or two sources give the same name.
    """
    roots = as_list(sources)
    if not roots:
        raise ConfigurationError("No sources given; pass at least one folder or file to ingest.")
    prefix = len(roots) > 1
    result = Walk()
    found: dict[str, str] = {}
    for root in roots:
        if not os.path.lexists(root):
            raise ConfigurationError(f"The source {root} does not exist.")
        if root.is_file():
            entries: Iterable[tuple[str, str]] = [(str(root), root.name)]
        else:
            entries = _entries(str(root), "", frozenset(), result, exclude=exclude, skip=skip, cohort=cohort)
        for path, rel in entries:
            name = f"{root.name if root.is_dir() else root.parent.name}/{rel}" if prefix else rel
            if found.setdefault(name, path) != path:
                raise ConfigurationError(
                    f"Two sources give the same name (file {len(found)}): sources are named by their folder. "
                    "Ingest them one at a time, or give folders with different names."
                )
        if prefix:
            for row in result.skipped:
                if not row.get("_prefixed"):
                    row["file"], row["_prefixed"] = f"{root.name}/{row['file']}", True
    for row in result.skipped:
        row.pop("_prefixed", None)
    result.files = sorted(((path, name) for name, path in found.items()), key=lambda item: item[1])
    result.skipped.sort(key=lambda row: row["file"])
    return result


def _entries(
    folder: str,
    rel: str,
    ancestors: frozenset[tuple[int, int]],
    result: Walk,
    *,
    exclude: Sequence[str],
    skip: Collection[Path],
    cohort: Path | None,
) -> Iterator[tuple[str, str]]:
    """(path, relative name) of the regular files under ``folder``, recording every other entry in ``result``."""
    try:
        here = os.stat(folder)
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as error:
        if rel:  # the root itself was checked by the caller; a root that cannot be listed is a configuration error
            _skip(result, rel + "/", Reason.UNREADABLE_FOLDER,
                  f"the folder cannot be listed ({_os_error(error)}), so its files cannot be counted")
            return
        raise ConfigurationError(f"The source folder {folder} cannot be listed ({_os_error(error)}).") from error
    ancestors = ancestors | {(here.st_dev, here.st_ino)}
    for entry in entries:
        path = os.path.join(folder, entry.name)
        name = f"{rel}/{entry.name}" if rel else entry.name
        try:
            is_link = entry.is_symlink()
            info = os.stat(path)  # follows links
        except OSError as error:
            if is_link and error.errno == errno.ELOOP:
                _skip(result, name, Reason.LINK_LOOP, "a symbolic link that leads back into itself")
            elif is_link and error.errno == errno.ENOENT:
                _skip(result, name, Reason.DANGLING_LINK, "a symbolic link whose target does not exist")
            else:
                yield path, name  # the scan records why it cannot be read (e.g. a path longer than PATH_MAX)
            continue
        if stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in ancestors:
                _skip(result, name + "/", Reason.LINK_LOOP, "a symbolic link to a folder above it (a loop)")
            elif cohort is not None and _same(path, cohort):
                _skip(result, name + "/", Reason.EXCLUDED, "the cohort folder this ingest writes")
            else:
                yield from _entries(path, name, ancestors, result, exclude=exclude, skip=skip, cohort=cohort)
        elif not stat.S_ISREG(info.st_mode):
            kind = "FIFO" if stat.S_ISFIFO(info.st_mode) else "socket" if stat.S_ISSOCK(info.st_mode) else "device"
            _skip(result, name, Reason.NOT_REGULAR_FILE, f"a {kind}, not a regular file")
        elif any(_same(path, p) for p in skip):
            _skip(result, name, Reason.EXCLUDED, "a labels or sites table of this ingest")
        else:
            pattern = next((e for e in exclude if fnmatch.fnmatch(entry.name, e)), None)
            if pattern is None:
                yield path, name
            elif pattern in DEFAULT_EXCLUDE:
                _skip(result, name, Reason.UNSUPPORTED,
                      f"not an image: hidden files and notes/tables ({pattern}) are not ingested")
            else:
                _skip(result, name, Reason.EXCLUDED, f"excluded by the pattern {pattern!r}")


def _skip(result: Walk, name: str, code: Reason, reason: str) -> None:
    result.skipped.append({"file": name, "stage": "walk", "code": str(code), "reason": reason})


def _same(path: str, other: Path) -> bool:
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def _os_error(error: OSError) -> str:
    """The error's kind without its path (``PermissionError``, ``ENAMETOOLONG``)."""
    code = errno.errorcode.get(error.errno or 0)
    return f"{type(error).__name__}{f', {code}' if code else ''}"


def scan(
    found: list[tuple[str, str]], previous: dict[str, dict], key: bytes, executor: Executor | None,
    disable: bool | None,
) -> list[dict]:
    """One PHI-free record per file of :func:`walk` (digest, format, DICOM header with hashed identifiers).

    A record's ``file`` is the file's keyed pseudonym (:func:`~clinical.ingest.identity.source_pseudonym`),
    never its name: the name may carry PHI. The records returned also hold, for this process only,
    ``name`` (the source-relative name) and ``path``. Records of unchanged files (same size and
    mtime) come from ``previous``, the cohort's scan state (:func:`~clinical.ingest.journal.read_state`).
    ``executor`` scans in worker processes (None: in this one); ``disable`` hides the progress bar.
    """
    pseudonyms = [source_pseudonym(key, name) for _, name in found]
    records: list[dict | None] = []
    todo: list[tuple[int, str, str]] = []
    for index, ((path, _), pseudonym) in enumerate(zip(found, pseudonyms, strict=True)):
        old = previous.get(pseudonym)
        try:
            info = os.stat(path)
        except OSError:  # vanished since the walk, or a path the system cannot open: scan_file records why
            old = None
        if old is not None and old["size"] == info.st_size and old["mtime_ns"] == info.st_mtime_ns:
            records.append(old)
        else:
            records.append(None)
            todo.append((index, path, pseudonym))
    chunks = [todo[start:start + _CHUNK] for start in range(0, len(todo), _CHUNK)]
    tasks = ([[path for _, path, _ in c] for c in chunks], [[name for _, _, name in c] for c in chunks], repeat(key))
    results = executor.map(scan_files, *tasks) if executor else map(scan_files, *tasks)
    with tqdm(total=len(todo), desc="scan", unit="file", disable=disable) as bar:
        for chunk, scanned in zip(chunks, results, strict=True):
            for (index, _, _), record in zip(chunk, scanned, strict=True):
                records[index] = record
            bar.update(len(chunk))
    return [{**record, "name": name, "path": path} for record, (path, name) in zip(records, found, strict=True)]


def scan_files(paths: list[str], names: list[str], key: bytes) -> list[dict]:
    """:func:`scan_file` over a chunk of files, inside one :func:`~clinical.ingest.dicom.quiet_pydicom`.

    A chunk, not a file, is a worker's task: silencing and restoring pydicom's loggers once per file
    cost a twentieth of a small file's scan (``Logger.setLevel`` clears every logger's cache).
    """
    with dicom.quiet_pydicom():
        return [scan_file(path, name, key) for path, name in zip(paths, names, strict=True)]


def scan_file(path: str, name: str, key: bytes) -> dict:
    """The scan record of one file named ``name`` in the record; never raises, so one odd file cannot stop the scan.

    A record whose ``stage`` is not None is a rejection with its ``code`` and ``reason``;
    otherwise ``format`` is one of ``dicom``, ``nifti``, ``slide``, ``photo``, and a DICOM file
    has its ``header``, its ``stack`` (what splits a series into stacks, see
    :func:`clinical.ingest.series.stack_of`) and, where it can be kept, the ``pixels`` layout that spares
    decoding a second parse (:mod:`clinical.ingest.layout`), as JSON.
    """
    record = {"file": name, "size": -1, "mtime_ns": -1, "digest": None, "format": None, "stage": None,
              "code": None, "reason": None, "header": None, "stack": None, "pixels": None}
    try:
        with dicom.quiet_pydicom():  # once for the file's many reads
            return _record(path, key, record)
    except Exception as error:  # a bug or an exotic failure becomes a rejection naming the file, not a crash
        return {**record, "stage": "detect", "code": str(Reason.INTERNAL_ERROR),
                "reason": f"unexpected {type(error).__name__} while scanning"}


def _rejected(record: dict, stage: str, code: Reason, reason: str) -> dict:
    return {**record, "stage": stage, "code": str(code), "reason": reason}


def _record(path: str, key: bytes, record: dict) -> dict:
    try:
        info = os.stat(path)
    except OSError as error:
        return _rejected(record, "detect", Reason.UNREADABLE, f"the file cannot be read ({_os_error(error)})")
    record.update(size=info.st_size, mtime_ns=info.st_mtime_ns)
    if info.st_size == 0:
        return _rejected(record, "detect", Reason.EMPTY_FILE, "empty file (0 bytes)")
    try:
        data = Path(path).read_bytes() if info.st_size <= _IN_MEMORY_BYTES else None  # one read for digest and header
        record["digest"] = bytes_digest(data) if data is not None else file_digest(path)
        fmt = detect_format(path)
    except OSError as error:
        return _rejected(record, "detect", Reason.UNREADABLE, f"the file cannot be read ({_os_error(error)})")
    if fmt is None:
        return _rejected(record, "detect", Reason.UNSUPPORTED,
                         "unrecognised content: not DICOM, NIfTI, TIFF, PNG or JPEG (extensions are not used)")
    if fmt == "tiff":
        try:
            fmt = "slide" if slides.is_pyramidal(path) else "photo"
        except Exception as error:  # tifffile raises many types on broken files
            return _rejected(record, "read", Reason.BAD_HEADER,
                             f"the TIFF structure cannot be read ({type(error).__name__})")
    elif fmt in ("png", "jpeg"):
        fmt = "photo"
    record["format"] = fmt
    if fmt == "dicom":
        try:
            parsed = dicom.parse_header(data if data is not None else path, extra_tags=(*STACK_TAGS, *PIXEL_TAGS))
            values = values_of(parsed)
            header, stack = dicom.header_of(values, key), stack_of(values, key)
            if data is not None:
                record["pixels"] = layout_of(parsed, values, record["digest"])
        except IngestError as error:
            return _rejected(record, "read", Reason.BAD_HEADER, str(error))
        record["header"] = json.dumps(vars(header))  # its fields are plain values: no deep copy
        record["stack"] = json.dumps(stack)
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
    walked = walk_all(sources, exclude=exclude)
    entries = [f"{name}\t{_size_and_mtime(path)}" for path, name in walked.files]
    entries += [f"{row['file']}\t{row['code']}" for row in walked.skipped]
    tables = [file_digest(p) if p is not None else "-" for p in (labels, sites)]
    return bytes_digest(os.fsencode("\n".join([*tables, *entries])))


def _size_and_mtime(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError as error:
        return _os_error(error)
    return f"{info.st_size}\t{info.st_mtime_ns}"

"""The ingest engine: walk, scan headers, group, decode in a process pool, write the cohort.

Stages, each restartable:

1. **walk** the sources (sidecar files such as ``*.csv`` are excluded by name).
2. **scan** every file once: content digest, format by content, and for DICOM a
   header-only read. Unchanged files (same size and mtime) reuse the digest and
   header kept in ``COHORT/ingest_state.parquet``. Files with the same content
   as an earlier one are rejected as duplicates (they would leak across splits).
3. **plan** units of work: a DICOM series volume, a DICOM image, a multi-frame
   file, a NIfTI file, a slide, a photograph. Inconsistent series are rejected here.
4. **run** each unit in a process pool (``workers=0`` runs in this process),
   saving arrays to ``COHORT/arrays/`` and streaming rows to ``COHORT/parts/``
   every few hundred units. A unit whose id (its files, their digests and the
   options) already has rows in ``parts/`` is skipped: reruns only do new or
   changed work, and an interrupted run resumes where it stopped.
5. **merge** the parts into ``manifest.parquet`` and ``rejections.parquet``,
   assigning sites and labels (cheap, so labels and sites can change without
   decoding anything again), and delete arrays no row points to.

Cached array dtypes (values in [0, 1] are stored scaled to the dtype's maximum):

============  =========  ====================================================
kind          dtype      why
============  =========  ====================================================
image/volume  uint16     windowed DICOM/NIfTI intensities in [0, 1] × 65535:
                         keeps 12–16-bit detector precision at half of float32
tile          uint8      RGB slide tiles are 8-bit at the source
photo         uint8 or   as stored: 8-bit photographs stay uint8, 16-bit
              uint16     scans stay uint16 (divide by 255 or 65535)
============  =========  ====================================================

Invariant: every file found ends as exactly one of ingested (it contributed to
at least one item) or rejected (one row in ``rejections.parquet``), so
``ingested + rejected = found``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import multiprocessing
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clinical.cohort.digest import bytes_digest, file_digest, files_digest
from clinical.cohort.manifest import MANIFEST_COLUMNS, write_manifest, write_rejections
from clinical.errors import ConfigurationError, IngestError, InvalidSeriesError
from clinical.ingest import dicom, nifti, photos, slides
from clinical.ingest.detect import detect_format
from clinical.ingest.identity import key_fingerprint, keyed_hash, load_key
from clinical.ingest.labels import KeyTable, read_key_table
from clinical.ingest.resample import resample, validate_target
from clinical.ingest.series import order_slices

__all__ = ["DEFAULT_EXCLUDE", "STATE_FILE", "IngestOptions", "IngestReport", "ingest"]

logger = logging.getLogger(__name__)

#: File-name patterns that are never counted as inputs: hidden files and sidecar tables/notes.
DEFAULT_EXCLUDE = (".*", "*.csv", "*.tsv", "*.json", "*.md", "*.txt")
STATE_FILE = "ingest_state.parquet"
_PARTS = "parts"
_ARRAYS = "arrays"
_FLUSH_EVERY = 256
_STATE_VERSION = 1
_IN_MEMORY_BYTES = 64 << 20


@dataclass(frozen=True)
class IngestOptions:
    """Everything a worker needs besides the unit; picklable, so it travels to the process pool."""

    key: bytes = field(repr=False)
    target_spacing: tuple[float, ...] | None = None
    target_size: tuple[float, ...] | None = None
    ct_window: str = "soft_tissue"
    tile_size: int = 224
    tile_level: int = 0
    max_tiles_per_slide: int | None = 200
    min_tissue: float = 0.5
    photo_tile: int | None = None
    max_pixels: int | None = None

    def fingerprint(self) -> str:
        """Changes when any option or the key changes (the key itself is not revealed)."""
        public = {k: v for k, v in asdict(self).items() if k != "key"}
        public["key"] = key_fingerprint(self.key)
        return hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def public(self) -> dict:
        """The options without the key, for ``cohort.json``."""
        return {k: v for k, v in asdict(self).items() if k != "key"}


@dataclass
class IngestReport:
    """What one ingest did. ``ingested + rejected == found`` counts files; ``items`` counts manifest rows."""

    cohort: Path
    found: int
    ingested: int
    rejected: int
    items: int
    units_run: int
    units_reused: int
    digest: str
    kinds: dict[str, int]
    rejections_by_stage: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage: scan, run, merge

    def summary(self) -> str:
        """One line for people: the invariant and the item count."""
        return (
            f"ingested {self.ingested} + rejected {self.rejected} = found {self.found} files; "
            f"{self.items} items ({', '.join(f'{n} {k}' for k, n in sorted(self.kinds.items())) or 'none'})"
        )


@dataclass(frozen=True)
class _Unit:
    """One piece of decoding work and the PHI-free facts needed to describe its items."""

    unit_id: str
    handler: str
    files: tuple[str, ...]
    paths: tuple[str, ...]
    source_digest: str
    patient_key: str
    study_key: str
    series_key: str
    modality: str
    institution: str | None = None
    spacing: tuple[float, ...] | None = None


def ingest(
    sources: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    labels: str | Path | None = None,
    sites: str | Path | None = None,
    key: str | bytes | None = None,
    target_spacing: Sequence[float] | None = None,
    target_size: Sequence[float] | None = None,
    workers: int | None = None,
    tile_size: int = 224,
    tile_level: int = 0,
    max_tiles_per_slide: int | None = 200,
    min_tissue: float = 0.5,
    photo_tile: int | None = None,
    max_pixels: int | None = None,
    ct_window: str = "soft_tissue",
    site_depth: int = 0,
    site_from: str = "institution",
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    progress: bool = True,
) -> IngestReport:
    """Ingest folders or files of DICOM, NIfTI, whole slides and photographs into the cohort folder ``out``.

    Parameters
    ----------
    sources
        Folders (walked recursively) or files. ``source`` paths in the outputs are
        relative to their folder; with several sources they start with the folder's name.
    out
        The cohort folder (created; rerunning on it is incremental).
    labels, sites
        CSV files (see :mod:`clinical.ingest.labels`). The site is the sites CSV's, else
        (``site_from="institution"``) InstitutionName (0008,0080) for DICOM, else the folder
        at ``site_depth``.
    key
        Pseudonym key (see :func:`clinical.ingest.identity.load_key`).
    target_spacing, target_size
        Optional resampling of every array (mm, µm for tiles; pixels) — see :mod:`clinical.ingest.resample`.
    workers
        Processes for scanning and decoding; ``0`` runs everything in this process.
        Default: the number of CPUs, at most 8. Workers are spawned (never forked, which
        is unsafe once pyarrow or torch threads run), so a script that calls ``ingest``
        with workers must do so under ``if __name__ == "__main__":``.
    tile_size, tile_level, max_tiles_per_slide, min_tissue
        Slide tiling (see :mod:`clinical.ingest.slides`).
    photo_tile
        Cut photographs larger than this many pixels into tiles of that size (None: whole photos).
    max_pixels
        Decompression-bomb guard for photographs (default ``PIL.Image.MAX_IMAGE_PIXELS``;
        PIL itself refuses anything over twice its own limit whatever this says).
    ct_window
        CT window preset (see :data:`clinical.ingest.dicom.CT_WINDOWS`) or ``"header"``.
    site_depth
        Which folder below the source root names the site (0: the first).
    site_from
        ``"institution"`` (default) or ``"folder"``: whether DICOM files take their site from
        InstitutionName or, like every other file, from the folder. Use ``"folder"`` when one
        tree mixes DICOM and other formats of the same sites, so each site has one name.
    exclude
        File-name patterns not counted as inputs.
    progress
        Show progress bars (hidden anyway when not on a terminal).

    Returns
    -------
    IngestReport

    Raises
    ------
    ConfigurationError
        On an invalid option, a missing source, or a broken labels/sites file.
    """
    options = _options(
        key, target_spacing, target_size, ct_window, tile_size, tile_level, max_tiles_per_slide, min_tissue,
        photo_tile, max_pixels,
    )
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if workers < 0:
        raise ConfigurationError(f"workers must be 0 (in this process) or a positive number; got {workers}.")
    if site_depth < 0:
        raise ConfigurationError(f"site_depth must be >= 0; got {site_depth}.")
    if site_from not in ("institution", "folder"):
        raise ConfigurationError(f"site_from must be 'institution' or 'folder'; got {site_from!r}.")
    cohort = Path(out)
    cohort.mkdir(parents=True, exist_ok=True)
    label_table = read_key_table(labels, "label", options.key) if labels is not None else KeyTable()
    site_table = read_key_table(sites, "site", options.key) if sites is not None else KeyTable()
    skip = {Path(p).resolve() for p in (labels, sites) if p is not None}
    found = _walk(sources, exclude=exclude, skip=skip, cohort=cohort.resolve())
    disable = None if progress else True

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers else None
    try:
        records = _scan(found, cohort, options, executor, disable)
        units, rejections = _plan(records, options)
        seconds["scan"], clock = time.perf_counter() - clock, time.perf_counter()
        done = _done_units(cohort)
        todo = [u for u in units if u.unit_id not in done]
        _run(todo, cohort, options, executor, disable)
        seconds["run"], clock = time.perf_counter() - clock, time.perf_counter()
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)

    manifest, worker_rejections = _merge(
        cohort, units, label_table, site_table, site_depth=site_depth, institution_sites=site_from == "institution"
    )
    rejections = rejections + worker_rejections
    found_files = {rel for _, rel in found}
    ingested_files = {f for files in manifest["source"] for f in files}
    rejected_files = {r["file"] for r in rejections}
    for name in sorted(found_files - ingested_files - rejected_files):  # never expected; nothing is lost silently
        rejections.append({"file": name, "stage": "engine", "reason": "no outcome was recorded for this file"})
        rejected_files.add(name)
    meta = {
        "sources": [Path(s).name for s in _as_list(sources)],
        "options": options.public(),
        "site_depth": site_depth,
        "site_from": site_from,
        "found": len(found_files),
        "ingested": len(ingested_files),
        "rejected": len(rejected_files),
    }
    digest = write_manifest(manifest, cohort, meta=meta)
    write_rejections(pd.DataFrame(rejections, columns=["file", "stage", "reason"]), cohort)
    _delete_orphan_arrays(cohort, set(manifest["path"]))
    seconds["merge"] = time.perf_counter() - clock
    report = IngestReport(
        cohort=cohort,
        found=len(found_files),
        ingested=len(ingested_files),
        rejected=len(rejected_files),
        items=len(manifest),
        units_run=len(todo),
        units_reused=len(units) - len(todo),
        digest=digest,
        kinds=dict(Counter(manifest["kind"])),
        rejections_by_stage=dict(Counter(r["stage"] for r in rejections)),
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )
    logger.info("%s", report.summary())
    return report


def _options(key, target_spacing, target_size, ct_window, tile_size, tile_level, max_tiles, min_tissue,
             photo_tile, max_pixels) -> IngestOptions:
    if ct_window != "header" and ct_window not in dicom.CT_WINDOWS:
        raise ConfigurationError(f"ct_window must be one of {[*dicom.CT_WINDOWS, 'header']}; got {ct_window!r}.")
    for name, value, minimum in (("tile_size", tile_size, 1), ("tile_level", tile_level, 0)):
        if int(value) != value or value < minimum:
            raise ConfigurationError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    for name, value in (("max_tiles_per_slide", max_tiles), ("photo_tile", photo_tile), ("max_pixels", max_pixels)):
        if value is not None and (int(value) != value or value < 1):
            raise ConfigurationError(f"{name} must be a positive integer or None; got {value!r}.")
    if not 0.0 <= min_tissue <= 1.0:
        raise ConfigurationError(f"min_tissue must be a fraction in [0, 1]; got {min_tissue!r}.")
    return IngestOptions(
        key=load_key(key),
        target_spacing=validate_target("target_spacing", target_spacing),
        target_size=validate_target("target_size", target_size),
        ct_window=ct_window,
        tile_size=int(tile_size),
        tile_level=int(tile_level),
        max_tiles_per_slide=max_tiles,
        min_tissue=float(min_tissue),
        photo_tile=photo_tile,
        max_pixels=max_pixels,
    )


# -- walk --------------------------------------------------------------------------------------------------------


def _as_list(sources: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(sources)] if isinstance(sources, str | Path) else [Path(s) for s in sources]


def _walk(sources, *, exclude: Sequence[str], skip: set[Path], cohort: Path) -> list[tuple[str, str]]:
    """(absolute path, source-relative posix name) of every input file, sorted by name."""
    roots = _as_list(sources)
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
            if resolved in skip or cohort in resolved.parents or any(fnmatch.fnmatch(path.name, e) for e in exclude):
                continue
            rel = path.relative_to(base).as_posix()
            name = f"{base.name}/{rel}" if prefix else rel
            if found.setdefault(name, str(path)) != str(path):
                raise ConfigurationError(
                    f"Two sources give the same name {name!r}: sources are named by their folder. "
                    "Ingest them one at a time, or give folders with different names."
                )
    return sorted(((path, name) for name, path in found.items()), key=lambda item: item[1])


# -- scan --------------------------------------------------------------------------------------------------------


def _scan(found, cohort: Path, options: IngestOptions, executor, disable) -> list[dict]:
    """One PHI-free record per file (digest, format, DICOM header with hashed identifiers)."""
    previous = _read_state(cohort, options)
    records: list[dict | None] = []
    todo: list[tuple[int, str, str]] = []
    for index, (path, name) in enumerate(found):
        old = previous.get(name)
        try:
            stat = os.stat(path)
        except OSError:  # vanished since the walk: _scan_one records why
            old = None
        if old is not None and old["size"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns:
            records.append(old)
        else:
            records.append(None)
            todo.append((index, path, name))
    tasks = [(path, name, options.key) for _, path, name in todo]
    results = executor.map(_scan_one, tasks, chunksize=32) if executor else map(_scan_one, tasks)
    bar = tqdm(zip(todo, results, strict=True), total=len(todo), desc="scan", unit="file", disable=disable)
    for (index, _, _), record in bar:
        records[index] = record
    _write_state(cohort, options, records)
    return [{**record, "path": path} for record, (path, _) in zip(records, found, strict=True)]


def _scan_one(task: tuple[str, str, bytes]) -> dict:
    """The scan record of one file; never raises, so one odd file cannot stop the scan."""
    path, name, key = task
    record = {"file": name, "size": -1, "mtime_ns": -1, "digest": None, "format": None, "stage": None,
              "reason": None, "header": None}
    try:
        return _scan_file(path, key, record)
    except Exception as error:  # a bug or an exotic failure becomes a rejection naming the file, not a crash
        return {**record, "stage": "detect", "reason": f"unexpected {type(error).__name__} while scanning"}


def _scan_file(path: str, key: bytes, record: dict) -> dict:
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


def _read_state(cohort: Path, options: IngestOptions) -> dict[str, dict]:
    path = cohort / STATE_FILE
    if not path.is_file():
        return {}
    state = pd.read_parquet(path)
    fingerprint = key_fingerprint(options.key)
    if state.empty or (state["state_key"].iloc[0] != fingerprint) or int(state["version"].iloc[0]) != _STATE_VERSION:
        return {}
    state = state.drop(columns=["state_key", "version"]).astype(object).where(state.notna(), None)
    return {row["file"]: row for row in state.to_dict("records")}


def _write_state(cohort: Path, options: IngestOptions, records: list[dict]) -> None:
    table = pd.DataFrame(records, columns=["file", "size", "mtime_ns", "digest", "format", "stage", "reason", "header"])
    table["state_key"] = key_fingerprint(options.key)
    table["version"] = _STATE_VERSION
    tmp = cohort / (STATE_FILE + ".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(cohort / STATE_FILE)


# -- plan --------------------------------------------------------------------------------------------------------


def _plan(records: list[dict], options: IngestOptions) -> tuple[list[_Unit], list[dict]]:
    """Units of work and the rejections known before decoding (scan errors, duplicates, bad series)."""
    rejections: list[dict] = []
    first_of_digest: dict[str, str] = {}
    usable = []
    for record in records:
        if record["stage"] is not None:
            rejections.append({"file": record["file"], "stage": record["stage"], "reason": record["reason"]})
        elif record["digest"] in first_of_digest:
            rejections.append({"file": record["file"], "stage": "detect",
                               "reason": f"duplicate: same content as {first_of_digest[record['digest']]}"})
        else:
            first_of_digest[record["digest"]] = record["file"]
            usable.append(record)
    fingerprint = options.fingerprint()
    units: list[_Unit] = []
    series: dict[str, list[tuple[dict, dicom.DicomHeader]]] = {}
    for record in usable:
        name = record["file"]
        if record["format"] != "dicom":
            units.append(_file_unit(record, fingerprint, options.key))
            continue
        header = dicom.DicomHeader(**_header_fields(record["header"]))
        if not header.has_pixels or header.rows == 0 or header.columns == 0:
            reason = f"not an image: {header.sop_class} without Pixel Data (7FE0,0010) or Rows/Columns"
            rejections.append({"file": name, "stage": "detect", "reason": reason})
        elif header.frames == 1 and header.modality in dicom.VOLUME_MODALITIES and header.series_key:
            series.setdefault(header.series_key, []).append((record, header))
        else:
            handler = "dicom_multiframe" if header.frames > 1 else "dicom_image"
            units.append(_dicom_unit(handler, [record], header, fingerprint, options.key))
    for members in series.values():
        if len(members) == 1 or all(h.position is None and h.orientation is None for _, h in members):
            # a lone slice, or slices with no geometry at all (scouts, secondary captures): 2D images
            units.extend(_dicom_unit("dicom_image", [r], h, fingerprint, options.key) for r, h in members)
            continue
        headers = [h for _, h in members]
        try:
            order, spacing = order_slices(
                [(h.rows, h.columns) for h in headers], [h.position for h in headers], [h.orientation for h in headers]
            )
        except InvalidSeriesError as error:
            reason = f"{error} ({len(members)} files of one series)"
            rejections.extend({"file": r["file"], "stage": "group", "reason": reason} for r, _ in members)
            continue
        ordered = [members[i][0] for i in order]
        units.append(_dicom_unit("dicom_volume", ordered, headers[0], fingerprint, options.key, spacing=spacing))
    return units, rejections


def _header_fields(text: str) -> dict:
    fields = json.loads(text)
    for name in ("position", "orientation", "pixel_spacing"):
        if fields[name] is not None:
            fields[name] = tuple(fields[name])
    return fields


def _unit_id(handler: str, records: list[dict], fingerprint: str) -> str:
    text = "\n".join([handler, fingerprint, *(f"{r['file']}\t{r['digest']}" for r in records)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _dicom_unit(handler, records, header: dicom.DicomHeader, fingerprint, key, spacing: float | None = None) -> _Unit:
    names = [r["file"] for r in records]
    folder_keys = _folder_keys(names[0], key)
    digest = records[0]["digest"] if len(records) == 1 else files_digest(r["digest"] for r in records)
    plane = header.pixel_spacing or (float("nan"), float("nan"))
    return _Unit(
        unit_id=_unit_id(handler, records, fingerprint),
        handler=handler,
        files=tuple(names),
        paths=tuple(r["path"] for r in records),
        source_digest=digest,
        patient_key=header.patient_key or folder_keys[0],
        study_key=header.study_key or folder_keys[1],
        series_key=header.series_key or folder_keys[2],
        modality=header.modality,
        institution=header.institution,
        spacing=(spacing, *plane) if spacing is not None else tuple(plane),
    )


def _file_unit(record: dict, fingerprint: str, key: bytes) -> _Unit:
    patient, study, series = _folder_keys(record["file"], key)
    handler = record["format"]
    modality = {"slide": "SM", "photo": "XC", "nifti": "OT"}[handler]
    return _Unit(
        unit_id=_unit_id(handler, [record], fingerprint),
        handler=handler,
        files=(record["file"],),
        paths=(record["path"],),
        source_digest=record["digest"],
        patient_key=patient,
        study_key=study,
        series_key=series,
        modality=modality,
    )


def _folder_keys(name: str, key: bytes) -> tuple[str, str, str]:
    """Patient = the parent folder (the file's stem at the root), study = the parent path, series = the file."""
    path = PurePosixPath(name)
    parent = path.parent
    patient = parent.name if parent.name else path.stem
    return keyed_hash(key, patient), keyed_hash(key, f"study:{parent.as_posix()}"), keyed_hash(key, f"series:{name}")


# -- run ---------------------------------------------------------------------------------------------------------


def _done_units(cohort: Path) -> set[str]:
    done: set[str] = set()
    for part in sorted((cohort / _PARTS).glob("*.parquet")):
        done.update(pd.read_parquet(part, columns=["unit_id"])["unit_id"])
    return done


def _run(units: list[_Unit], cohort: Path, options: IngestOptions, executor, disable) -> None:
    """Decode every unit, flushing rows to ``parts/`` every few hundred units."""
    if not units:
        return
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    items: list[dict] = []
    rejections: list[dict] = []
    flushed = 0

    def flush() -> None:
        nonlocal flushed, items, rejections
        if items or rejections:
            _write_part(cohort, f"{stamp}-{flushed:05d}", items, rejections)
            flushed += 1
            items, rejections = [], []

    if executor is None:
        results: Iterable = map(lambda u: _run_unit(u, options, str(cohort)), units)
    else:
        futures = [executor.submit(_run_unit, u, options, str(cohort)) for u in units]
        results = (f.result() for f in as_completed(futures))
    for count, (unit_items, unit_rejections) in enumerate(
        tqdm(results, total=len(units), desc="ingest", unit="unit", disable=disable), start=1
    ):
        items.extend(unit_items)
        rejections.extend(unit_rejections)
        if count % _FLUSH_EVERY == 0:
            flush()
    flush()


def _write_part(cohort: Path, name: str, items: list[dict], rejections: list[dict]) -> None:
    folder = cohort / _PARTS
    folder.mkdir(exist_ok=True)
    rows = [{"unit_id": i["unit_id"], "outcome": "item", "row": json.dumps(i)} for i in items]
    rows += [{"unit_id": r["unit_id"], "outcome": "rejection", "row": json.dumps(r)} for r in rejections]
    tmp = folder / f"{name}.parquet.tmp"
    pd.DataFrame(rows, columns=["unit_id", "outcome", "row"]).to_parquet(tmp, index=False)
    tmp.replace(folder / f"{name}.parquet")


def _run_unit(unit: _Unit, options: IngestOptions, cohort: str) -> tuple[list[dict], list[dict]]:
    """Decode one unit into items (arrays saved) or rejections (one per file); never raises."""
    items: list[dict] = []
    stage = "decode"
    try:
        for array, position, kind, spacing, extras in _HANDLERS[unit.handler](unit, options):
            if options.target_spacing is not None or options.target_size is not None:
                stage = "resample"
                array, spacing = resample(
                    array, spacing, target_spacing=options.target_spacing, target_size=options.target_size
                )
                stage = "decode"
            item_id = hashlib.sha256(f"{unit.source_digest}:{position}".encode()).hexdigest()[:24]
            path = _save_array(Path(cohort), item_id, array)
            items.append({
                "item_id": item_id,
                "unit_id": unit.unit_id,
                "kind": kind,
                "path": path,
                "source": list(unit.files),
                "shape": [int(s) for s in array.shape],
                "spacing": [float(s) for s in spacing],
                "source_digest": unit.source_digest,
                **extras,
            })
        if not items:
            raise IngestError("the file holds no image")
    except (IngestError, ConfigurationError) as error:
        return [], _unit_rejections(unit, stage, str(error))
    except MemoryError:
        return [], _unit_rejections(unit, stage, "out of memory while decoding")
    except Exception as error:  # one bad unit must never stop the ingest; message scrubbed of quoted values
        return [], _unit_rejections(unit, stage, f"unexpected {type(error).__name__}: {dicom.scrub_message(error)}")
    return items, []


def _unit_rejections(unit: _Unit, stage: str, reason: str) -> list[dict]:
    return [{"unit_id": unit.unit_id, "file": name, "stage": stage, "reason": reason} for name in unit.files]


def _save_array(cohort: Path, item_id: str, array: np.ndarray) -> str:
    relative = f"{_ARRAYS}/{item_id[:2]}/{item_id}.npy"
    target = cohort / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{item_id}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.ascontiguousarray(array))
    tmp.replace(target)
    return relative


def _unit_float(volume: np.ndarray) -> np.ndarray:
    """[0, 1] float → uint16 (× 65535), the cache dtype of images and volumes."""
    return np.round(np.clip(volume, 0.0, 1.0) * 65535.0).astype(np.uint16)


def _dicom_image(unit: _Unit, options: IngestOptions) -> Iterator[tuple]:
    ds, pixels = dicom.load_pixels(unit.paths[0])
    windowed = dicom.window(pixels, ds, modality=unit.modality, ct_window=options.ct_window)
    yield _unit_float(windowed[0].transpose(2, 0, 1)), "0", "image", list(unit.spacing[-2:]), {}


def _dicom_multiframe(unit: _Unit, options: IngestOptions) -> Iterator[tuple]:
    ds, pixels = dicom.load_pixels(unit.paths[0])
    windowed = dicom.window(pixels, ds, modality=unit.modality, ct_window=options.ct_window)
    yield _unit_float(windowed.transpose(3, 0, 1, 2)), "0", "volume", dicom.volume_spacing(ds), {}


def _dicom_volume(unit: _Unit, options: IngestOptions) -> Iterator[tuple]:
    slices = []
    first = None
    for path in unit.paths:
        ds, pixels = dicom.load_pixels(path)
        if pixels.shape[0] != 1 or pixels.shape[-1] != 1:
            raise InvalidSeriesError("inconsistent series: a slice is multi-frame or colour, so it cannot be stacked")
        slices.append(pixels[0, :, :, 0])
        first = first if first is not None else ds
    volume = np.stack(slices)[..., None]
    windowed = dicom.window(volume, first, modality=unit.modality, ct_window=options.ct_window)
    yield _unit_float(windowed.transpose(3, 0, 1, 2)), "0", "volume", list(unit.spacing), {}


def _nifti(unit: _Unit, options: IngestOptions) -> Iterator[tuple]:
    for frame, volume, spacing in nifti.read_nifti_volumes(unit.paths[0], name=unit.files[0]):
        yield _unit_float(volume[None]), f"t{frame}", "volume", spacing, {"frame": frame}


def _slide(unit: _Unit, options: IngestOptions) -> Iterator[tuple]:
    tiles = slides.read_slide_tiles(
        unit.paths[0],
        seed=int(unit.source_digest[:16], 16),
        tile_size=options.tile_size,
        tile_level=options.tile_level,
        max_tiles=options.max_tiles_per_slide,
        min_tissue=options.min_tissue,
    )
    for tile, coordinates, spacing in tiles:
        level, x, y = coordinates["tile_level"], coordinates["tile_x"], coordinates["tile_y"]
        position = f"tile:{level}:{x}:{y}:{options.tile_size}"
        yield tile, position, "tile", spacing, coordinates


def _photo(unit: _Unit, options: IngestOptions) -> Iterator[tuple]:
    image = photos.read_photo(unit.paths[0], max_pixels=options.max_pixels)
    spacing = [float("nan"), float("nan")]
    if options.photo_tile is None:
        yield image, "0", "photo", spacing, {}
        return
    for piece, x, y in photos.tiles_of(image, options.photo_tile):
        yield piece, f"tile:{x}:{y}:{options.photo_tile}", "photo", spacing, {"tile_x": x, "tile_y": y, "tile_level": 0}


_HANDLERS = {
    "dicom_image": _dicom_image,
    "dicom_multiframe": _dicom_multiframe,
    "dicom_volume": _dicom_volume,
    "nifti": _nifti,
    "slide": _slide,
    "photo": _photo,
}


# -- merge -------------------------------------------------------------------------------------------------------


def _merge(
    cohort: Path, units: list[_Unit], labels: KeyTable, sites: KeyTable, *, site_depth: int, institution_sites: bool
) -> tuple[pd.DataFrame, list[dict]]:
    """Rows of the current units from every part, with sites and labels; parts compacted into one."""
    by_id = {u.unit_id: u for u in units}
    item_rows: dict[str, dict] = {}
    rejections: dict[str, dict] = {}
    parts = sorted((cohort / _PARTS).glob("*.parquet"))
    for part in parts:
        table = pd.read_parquet(part)
        for unit_id, outcome, text in table.itertuples(index=False):
            if unit_id not in by_id:
                continue
            row = json.loads(text)
            if outcome == "item":
                item_rows[row["item_id"]] = row
            else:
                rejections[row["file"]] = row
    # a unit re-run after an interruption may have both an older rejection and newer items; items win
    ingested = {f for row in item_rows.values() for f in row["source"]}
    rejections = {f: r for f, r in rejections.items() if f not in ingested}
    if parts:
        _write_part(cohort, "compacted-tmp", list(item_rows.values()), list(rejections.values()))
        for part in parts:
            part.unlink()
        (cohort / _PARTS / "compacted-tmp.parquet").replace(cohort / _PARTS / "compacted.parquet")

    rows = []
    for row in item_rows.values():
        unit = by_id[row["unit_id"]]
        patient_key = next((labels.patient_of_file[f] for f in unit.files if f in labels.patient_of_file),
                           unit.patient_key)
        keys = {"patient_key": patient_key, "study_key": unit.study_key, "series_key": unit.series_key}
        site = sites.lookup(unit.files, institution=unit.institution, **keys)
        if site is None and institution_sites:
            site = unit.institution
        if site is None:
            parts_of_path = PurePosixPath(unit.files[0]).parts[:-1]
            site = parts_of_path[site_depth] if len(parts_of_path) > site_depth else "unknown"
        rows.append({
            **{k: v for k, v in row.items() if k != "unit_id"},
            **keys,
            "site": site,
            "modality": unit.modality,
            "label": labels.lookup(unit.files, **keys),
        })
    manifest = pd.DataFrame(rows, columns=None if rows else list(MANIFEST_COLUMNS))
    for column in ("frame", "tile_x", "tile_y", "tile_level"):
        if column in manifest:
            manifest[column] = manifest[column].astype("Int64")
    return manifest, [{k: r[k] for k in ("file", "stage", "reason")} for r in rejections.values()]


def _delete_orphan_arrays(cohort: Path, kept: set[str]) -> None:
    folder = cohort / _ARRAYS
    if not folder.is_dir():
        return
    for path in folder.rglob("*.npy"):
        if path.relative_to(cohort).as_posix() not in kept:
            path.unlink()

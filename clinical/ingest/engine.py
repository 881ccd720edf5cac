"""The ingest engine: walk, scan, plan, decode in a process pool, merge into the cohort.

Stages, each restartable:

1. **walk** the sources and **scan** every file once (:mod:`clinical.ingest.scan`):
   content digest, format by content, and for DICOM a header-only read. Unchanged
   files reuse the record kept in ``COHORT/ingest_state.parquet``
   (:mod:`clinical.ingest.journal`).
2. **plan** units of work (:mod:`clinical.ingest.plan`); duplicates and inconsistent
   series are rejected here.
3. **run** each unit through :func:`clinical.ingest.decode.decode` in a process pool
   (``workers=0`` runs in this process), saving arrays to ``COHORT/arrays/`` and
   streaming rows to ``COHORT/parts/``. A unit whose id (its files, their digests and
   the options) already has rows in ``parts/`` is skipped: reruns only do new or
   changed work, and an interrupted run resumes where it stopped.
4. **merge** the parts into ``manifest.parquet`` and ``rejections.parquet``,
   assigning sites and labels (cheap, so labels and sites can change without
   decoding anything again), and delete arrays no row points to.

Cached array dtypes are listed in :mod:`clinical.ingest.units`.

Invariant: every file found ends as exactly one of ingested (it contributed to
at least one item) or rejected (one row in ``rejections.parquet``), so
``ingested + rejected = found``.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clinical.cohort.manifest import MANIFEST_COLUMNS, write_manifest, write_rejections
from clinical.errors import ConfigurationError, IngestError
from clinical.ingest.decode import decode
from clinical.ingest.dicom import scrub_message
from clinical.ingest.identity import load_key
from clinical.ingest.journal import PartsWriter, done_units, read_parts
from clinical.ingest.labels import KeyTable, read_key_table
from clinical.ingest.options import DEFAULT_EXCLUDE, DEFAULTS, IngestOptions, default_workers
from clinical.ingest.plan import plan_units
from clinical.ingest.scan import as_list, scan, walk
from clinical.ingest.units import Unit

__all__ = ["IngestReport", "ingest"]

logger = logging.getLogger(__name__)

_ARRAYS = "arrays"


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


def ingest(
    sources: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    labels: str | Path | None = None,
    sites: str | Path | None = None,
    key: str | bytes | None = None,
    target_spacing: Sequence[float] | None = DEFAULTS.target_spacing,
    target_size: Sequence[float] | None = DEFAULTS.target_size,
    workers: int | None = None,
    tile_size: int = DEFAULTS.tile_size,
    tile_level: int = DEFAULTS.tile_level,
    max_tiles_per_slide: int | None = DEFAULTS.max_tiles_per_slide,
    min_tissue: float = DEFAULTS.min_tissue,
    photo_tile: int | None = DEFAULTS.photo_tile,
    max_pixels: int | None = DEFAULTS.max_pixels,
    ct_window: str = DEFAULTS.ct_window,
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
    target_spacing, target_size, ct_window, max_pixels
        Decoding options: see :class:`clinical.ingest.options.IngestOptions`, whose defaults these are.
    tile_size, tile_level, max_tiles_per_slide, min_tissue, photo_tile
        Tiling options of slides and photographs, likewise.
    workers
        Processes for scanning and decoding; ``0`` runs everything in this process.
        Default: the number of CPUs, at most 8 (:func:`~clinical.ingest.options.default_workers`).
        Workers are spawned (never forked, which is unsafe once pyarrow or torch threads run),
        so a script that calls ``ingest`` with workers must do so under ``if __name__ == "__main__":``.
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
    options = IngestOptions(
        target_spacing=target_spacing, target_size=target_size, ct_window=ct_window, tile_size=tile_size,
        tile_level=tile_level, max_tiles_per_slide=max_tiles_per_slide, min_tissue=min_tissue, photo_tile=photo_tile,
        max_pixels=max_pixels,
    )
    secret = load_key(key)
    if workers is None:
        workers = default_workers()
    if workers < 0:
        raise ConfigurationError(f"workers must be 0 (in this process) or a positive number; got {workers}.")
    if site_depth < 0:
        raise ConfigurationError(f"site_depth must be >= 0; got {site_depth}.")
    if site_from not in ("institution", "folder"):
        raise ConfigurationError(f"site_from must be 'institution' or 'folder'; got {site_from!r}.")
    cohort = Path(out)
    cohort.mkdir(parents=True, exist_ok=True)
    label_table = read_key_table(labels, "label", secret) if labels is not None else KeyTable()
    site_table = read_key_table(sites, "site", secret) if sites is not None else KeyTable()
    skip = {Path(p).resolve() for p in (labels, sites) if p is not None}
    found = walk(sources, exclude=exclude, skip=skip, cohort=cohort.resolve())
    disable = None if progress else True

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers else None
    try:
        records = scan(found, cohort, secret, executor, disable)
        units, rejections = plan_units(records, options, key=secret)
        seconds["scan"], clock = time.perf_counter() - clock, time.perf_counter()
        done = done_units(cohort)
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
        "sources": [Path(s).name for s in as_list(sources)],
        "options": options.as_dict(),
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


# -- run ---------------------------------------------------------------------------------------------------------


def _run(units: list[Unit], cohort: Path, options: IngestOptions, executor, disable) -> None:
    """Decode every unit, flushing rows to ``parts/`` every few hundred units."""
    if not units:
        return
    writer = PartsWriter(cohort)
    if executor is None:
        results: Iterable = map(lambda u: _run_unit(u, options, str(cohort)), units)
    else:
        futures = [executor.submit(_run_unit, u, options, str(cohort)) for u in units]
        results = (f.result() for f in as_completed(futures))
    for unit_items, unit_rejections in tqdm(results, total=len(units), desc="ingest", unit="unit", disable=disable):
        writer.add(unit_items, unit_rejections)
    writer.flush()


def _run_unit(unit: Unit, options: IngestOptions, cohort: str) -> tuple[list[dict], list[dict]]:
    """Decode one unit into items (arrays saved) or rejections (one per file); never raises."""
    items: list[dict] = []
    decoding = decode(unit, options)
    try:
        for item in decoding:
            item_id = hashlib.sha256(f"{unit.source_digest}:{item.position}".encode()).hexdigest()[:24]
            path = _save_array(Path(cohort), item_id, item.array)
            items.append({
                "item_id": item_id,
                "unit_id": unit.unit_id,
                "kind": item.kind,
                "path": path,
                "source": list(unit.files),
                "shape": [int(s) for s in item.array.shape],
                "spacing": [float(s) for s in item.spacing],
                "source_digest": unit.source_digest,
                **item.extra,
            })
        if not items:
            raise IngestError("the file holds no image")
    except (IngestError, ConfigurationError) as error:
        return [], _unit_rejections(unit, decoding.stage, str(error))
    except MemoryError:
        return [], _unit_rejections(unit, decoding.stage, "out of memory while decoding")
    except Exception as error:  # one bad unit must never stop the ingest; message scrubbed of quoted values
        reason = f"unexpected {type(error).__name__}: {scrub_message(error)}"
        return [], _unit_rejections(unit, decoding.stage, reason)
    return items, []


def _unit_rejections(unit: Unit, stage: str, reason: str) -> list[dict]:
    return [{"unit_id": unit.unit_id, "file": name, "stage": stage, "reason": reason} for name in unit.files]


def _save_array(cohort: Path, item_id: str, array: np.ndarray) -> str:
    relative = f"{_ARRAYS}/{item_id[:2]}/{item_id}.npy"
    target = cohort / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{item_id}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.ascontiguousarray(array))
    tmp.replace(target)
    return relative


# -- merge -------------------------------------------------------------------------------------------------------


def _merge(
    cohort: Path, units: list[Unit], labels: KeyTable, sites: KeyTable, *, site_depth: int, institution_sites: bool
) -> tuple[pd.DataFrame, list[dict]]:
    """Rows of the current units from every part, with sites and labels; parts compacted into one."""
    by_id = {u.unit_id: u for u in units}
    item_rows, rejections = read_parts(cohort, by_id)

    rows = []
    for row in item_rows:
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
    return manifest, [{k: r[k] for k in ("file", "stage", "reason")} for r in rejections]


def _delete_orphan_arrays(cohort: Path, kept: set[str]) -> None:
    folder = cohort / _ARRAYS
    if not folder.is_dir():
        return
    for path in folder.rglob("*.npy"):
        if path.relative_to(cohort).as_posix() not in kept:
            path.unlink()

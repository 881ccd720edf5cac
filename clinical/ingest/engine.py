"""The ingest engine: walk, scan, plan, decode in a process pool, merge into the cohort.

Stages, each restartable:

1. **walk** the sources and **scan** every file once (:mod:`clinical.ingest.scan`):
   content digest, format by content, and for DICOM a header-only read. Unchanged
   files reuse the record kept in ``COHORT/ingest_state.parquet``
   (:mod:`clinical.ingest.journal`).
2. **plan** units of work (:mod:`clinical.ingest.plan`); duplicates and inconsistent
   series are rejected here.
3. **run** each unit through :func:`clinical.ingest.worker.run_unit` in a process pool
   (``workers=0`` runs in this process), saving arrays to ``COHORT/arrays/`` and
   streaming rows to ``COHORT/parts/``. A unit whose id (its files, their digests and
   the options) already has rows in ``parts/`` is skipped: reruns only do new or
   changed work, and an interrupted run resumes where it stopped.

   Worker isolation: at most two units per worker are in flight (the second waits in the
   pool's queue, so a worker never idles while this process takes a result). When a worker
   dies (killed by the kernel for memory, a crash in a codec), the pool breaks; the units that were in
   flight are run again, each in a process of its own, so the death is attributed to its
   unit, which is rejected (code ``worker-died``, with the signal), and a fresh pool takes
   the rest. The rejection is kept in ``parts/`` like any other, so a rerun does not decode
   a known poison unit again unless ``retry_failed=True``. With ``workers=0`` nothing is
   isolated: a crash ends the run.
4. **merge** the parts into ``manifest.parquet`` and ``rejections.parquet``,
   assigning sites and labels (cheap, so labels and sites can change without
   decoding anything again), and delete arrays no row points to.

Cached array dtypes are listed in :mod:`clinical.ingest.units`.

Invariant: every file found ends as exactly one of ingested (it contributed to
at least one item) or rejected (one row in ``rejections.parquet``, with a ``code`` from
:class:`clinical.ingest.reasons.Reason`), so ``ingested + rejected = found``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_connections
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pandas as pd
from tqdm.auto import tqdm

from clinical.cohort.manifest import MANIFEST_COLUMNS, REJECTION_COLUMNS, write_manifest, write_rejections
from clinical.errors import ConfigurationError
from clinical.ingest.identity import (
    check_cohort_key,
    cohort_identity,
    key_fingerprint,
    load_key,
    source_pseudonym,
    write_source_map,
)
from clinical.ingest.journal import PartsWriter, done_units, read_parts, read_state, write_state
from clinical.ingest.labels import KeyTable, read_key_table
from clinical.ingest.options import DEFAULT_EXCLUDE, DEFAULTS, IngestOptions, default_workers
from clinical.ingest.plan import plan_units
from clinical.ingest.reasons import Reason
from clinical.ingest.scan import as_list, scan, walk_all
from clinical.ingest.units import Unit
from clinical.ingest.worker import ARRAYS, Outcome, ready, run_unit, run_unit_alone, unit_rejections

if TYPE_CHECKING:
    from clinical.ingest.shards import RayPool

__all__ = ["IngestReport", "ingest"]

logger = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingest did. ``ingested + rejected + skipped == found`` counts entries; ``items`` counts manifest rows.

    ``skipped`` entries are what the walk met that is no input file (see :func:`clinical.ingest.scan.walk_all`);
    they are rows of ``rejections.parquet`` at stage ``walk``.
    """

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
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage: walk, scan, run, merge
    rejections_by_code: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # entries of the walk that are not input files (FIFOs, links, unreadable folders, notes)
    #: Items of SOP classes that often carry burned-in text (secondary capture, ultrasound), or kept with
    #: Burned In Annotation YES: the manifest column ``burned_in_risk`` marks them for a look before use.
    burned_in_risk: int = 0

    def summary(self) -> str:
        """One line for people: the invariant, the item count, the rejection codes and burned-in risk."""
        text = (
            f"ingested {self.ingested} + rejected {self.rejected} + skipped {self.skipped} = found {self.found}; "
            f"{self.items} items ({', '.join(f'{n} {k}' for k, n in sorted(self.kinds.items())) or 'none'})"
        )
        if self.rejections_by_code:
            text += "; by code: " + ", ".join(f"{n} {c}" for c, n in sorted(self.rejections_by_code.items()))
        if self.burned_in_risk:
            text += (f"; {self.burned_in_risk} items of classes that often carry burned-in text "
                     "(secondary capture, ultrasound): see burned_in_risk")
        return text


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
    max_decoded_mb: float = DEFAULTS.max_decoded_mb,
    keep_burned_in: bool = DEFAULTS.keep_burned_in,
    channels: Sequence[str] | None = DEFAULTS.channels,
    retry_failed: bool = False,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    progress: bool = True,
    ray_address: str | None = None,
) -> IngestReport:
    """Ingest folders or files of DICOM, NIfTI, whole slides and photographs into the cohort folder ``out``.

    Parameters
    ----------
    sources
        Folders (walked recursively) or files. Outputs name each input by the keyed pseudonym
        of its path relative to its folder (with several sources, starting with the folder's
        name): ``source`` in the manifest, ``file`` in the rejections. The map back to the
        paths is the cohort's private file beside the key
        (:func:`clinical.ingest.identity.private_paths_file`; read it with
        :func:`clinical.ingest.source_paths` or ``clinical rejections COHORT``).
    out
        The cohort folder (created; rerunning on it is incremental).
    labels, sites
        CSV files (see :mod:`clinical.ingest.labels`). The site is the sites CSV's, else
        (``site_from="institution"``) InstitutionName (0008,0080) for DICOM, else the folder
        at ``site_depth``.
    key
        Pseudonym key (see :func:`clinical.ingest.identity.load_key`). A cohort records its key's
        fingerprint; ingest into it with another key raises ConfigurationError.
    target_spacing, target_size, ct_window, max_pixels, max_decoded_mb, keep_burned_in, channels
        Decoding options: see :class:`clinical.ingest.options.IngestOptions`, whose defaults these are.
        ``max_decoded_mb`` is the decoded-size budget of one unit, checked from headers before allocation.
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
    retry_failed
        Decode again the units whose worker died (code ``worker-died``) or ran out of memory in an
        earlier run; by default such known poison units keep their rejection.
    exclude
        File-name patterns not ingested: each match is skipped and listed (code ``unsupported``
        for the default patterns, ``excluded`` for others), counted in ``skipped``.
    progress
        Show progress bars (hidden anyway when not on a terminal).
    ray_address
        Scan and decode on this Ray cluster instead of local processes (``auto``, ``HOST:PORT``;
        ``workers`` is then unused): see :mod:`clinical.ingest.shards`. Every node must see the
        sources and ``out`` at the same paths. The cohort is the one a local ingest makes.

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
        max_pixels=max_pixels, max_decoded_mb=max_decoded_mb, keep_burned_in=keep_burned_in,
        channels=None if channels is None else tuple(channels),
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
    cohort_id = _check_cohort(cohort, secret)
    disable = None if progress else True

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    pool = _pool(workers, ray_address)  # local workers start (and import) while the sources are walked
    try:
        walked = walk_all(sources, exclude=exclude, skip=skip, cohort=cohort.resolve())
        found = walked.files
        seconds["walk"], clock = time.perf_counter() - clock, time.perf_counter()
        records = scan(found, read_state(cohort, secret), secret, pool.executor if pool else None, disable)
        write_state(cohort, secret, records)
        names = _pseudonymise(cohort_id, secret, records, walked.skipped)
        units, rejections = plan_units(records, options, key=secret)
        seconds["scan"], clock = time.perf_counter() - clock, time.perf_counter()
        done = done_units(cohort)
        if retry_failed and done:
            _, earlier = read_parts(cohort, {u.unit_id for u in units})
            done -= {r["unit_id"] for r in earlier if r.get("code") in _RETRYABLE}
        todo = [u for u in units if u.unit_id not in done]
        _run(todo, cohort, options, pool, disable)
        seconds["run"], clock = time.perf_counter() - clock, time.perf_counter()
    finally:
        if pool is not None:
            pool.executor.shutdown(cancel_futures=True)

    manifest, worker_rejections = _merge(
        cohort, units, label_table, site_table, site_depth=site_depth, institution_sites=site_from == "institution",
        names=names,
    )
    rejections = rejections + worker_rejections
    found_files = {r["file"] for r in records}
    ingested_files = {f for files in manifest["source"] for f in files}
    rejected_files = {r["file"] for r in rejections}
    for name in sorted(found_files - ingested_files - rejected_files):  # never expected; nothing is lost silently
        rejections.append({"file": name, "stage": "engine", "reason": "no outcome was recorded for this file",
                           "code": Reason.INTERNAL_ERROR})
        rejected_files.add(name)
    for row in rejections:
        if not row.get("code"):  # a row recorded before codes existed (an older scan state or part)
            row["code"] = Reason.INTERNAL_ERROR if row.get("stage") == "engine" else None
    skipped_files = {r["file"] for r in walked.skipped}
    rejections += walked.skipped
    meta = {
        "cohort_id": cohort_id,
        "key_fingerprint": key_fingerprint(secret),
        "sources": [source_pseudonym(secret, Path(s).name) for s in as_list(sources)],  # folder names may be PHI
        "options": options.as_dict(),
        "site_depth": site_depth,
        "site_from": site_from,
        "found": len(found_files) + len(skipped_files),
        "ingested": len(ingested_files),
        "rejected": len(rejected_files),
        "skipped": len(skipped_files),
    }
    digest = write_manifest(manifest, cohort, meta=meta)
    write_rejections(pd.DataFrame(rejections, columns=list(REJECTION_COLUMNS)), cohort)
    _delete_orphan_arrays(cohort, set(manifest["path"]))
    seconds["merge"] = time.perf_counter() - clock
    report = IngestReport(
        cohort=cohort,
        found=len(found_files) + len(skipped_files),
        ingested=len(ingested_files),
        rejected=len(rejected_files),
        skipped=len(skipped_files),
        items=len(manifest),
        units_run=len(todo),
        units_reused=len(units) - len(todo),
        digest=digest,
        kinds=dict(Counter(manifest["kind"])),
        rejections_by_stage=dict(Counter(r["stage"] for r in rejections)),
        seconds={k: round(v, 3) for k, v in seconds.items()},
        rejections_by_code=dict(Counter(str(r["code"]) for r in rejections if r["code"])),
        burned_in_risk=int(manifest["burned_in_risk"].sum()) if "burned_in_risk" in manifest else 0,
    )
    logger.info("%s", report.summary())
    return report


# -- run ---------------------------------------------------------------------------------------------------------


#: Units in flight per worker: one decoding, one queued behind it.
_IN_FLIGHT = 2
#: Codes of units that ``retry_failed`` decodes again.
_RETRYABLE = frozenset({Reason.WORKER_DIED, Reason.OUT_OF_MEMORY})


def _new_pool(workers: int) -> ProcessPoolExecutor:
    """Spawned workers, started now: each imports the decoders (:func:`~clinical.ingest.worker.ready`) at once."""
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=ready)
    for _ in range(workers):  # a pool spawns a worker per task submitted while none is idle
        executor.submit(int)
    return executor


def _pool(workers: int, ray_address: str | None) -> _IsolatingPool | RayPool | None:
    """The pool that scans and decodes: Ray's when an address is given, else local processes, else none."""
    if ray_address is not None:
        from clinical.ingest.shards import RayPool  # Ray is imported only when a cluster is asked for

        return RayPool(ray_address)
    return _IsolatingPool(_new_pool(workers), workers) if workers else None


def _run(
    units: list[Unit], cohort: Path, options: IngestOptions, pool: _IsolatingPool | RayPool | None, disable
) -> None:
    """Decode every unit (in ``pool``, else in this process), flushing rows to ``parts/`` every few hundred units."""
    if not units:
        return
    writer = PartsWriter(cohort)
    outcomes = pool.run(units, options, str(cohort)) if pool else (run_unit(u, options, str(cohort)) for u in units)
    for outcome in tqdm(outcomes, total=len(units), desc="ingest", unit="unit", disable=disable):
        writer.add(*outcome)
    writer.flush()


class _IsolatingPool:
    """A process pool with at most :data:`_IN_FLIGHT` units in flight per worker, replaced when a worker dies.

    :attr:`executor` is the pool in use (a new one after a death), which scanning also uses;
    the caller shuts it down.
    """

    def __init__(self, executor: ProcessPoolExecutor, workers: int) -> None:
        self.executor = executor
        self.workers = workers

    def run(self, units: list[Unit], options: IngestOptions, cohort: str) -> Iterator[Outcome]:
        """The outcome of every unit, in the order they finish; a dead worker costs only its unit."""
        queue = deque(units)
        running: dict[Future, Unit] = {}
        while queue or running:
            while queue and len(running) < _IN_FLIGHT * self.workers:
                unit = queue.popleft()
                running[self.executor.submit(run_unit, unit, options, cohort)] = unit
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            suspects: list[Unit] = []
            for future in finished:
                unit = running.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    suspects.append(unit)
            if not suspects:
                continue
            # the pool is broken: every unit still in flight fails with it; find out which one killed its worker
            for future, unit in running.items():
                try:
                    yield future.result()
                except BrokenProcessPool:
                    suspects.append(unit)
            running.clear()
            self.executor.shutdown(wait=True, cancel_futures=True)
            logger.warning("a decoding process died; %d unit(s) in flight run again, one per process", len(suspects))
            yield from _run_alone(suspects, options, cohort, self.workers)
            self.executor = _new_pool(self.workers)


def _run_alone(units: list[Unit], options: IngestOptions, cohort: str, workers: int) -> Iterator[Outcome]:
    """Each unit in a spawned process of its own (``workers`` at a time): a death is that unit's rejection."""
    context = multiprocessing.get_context("spawn")
    pending = deque(units)
    active: dict[Connection, tuple[Unit, multiprocessing.process.BaseProcess]] = {}
    while pending or active:
        while pending and len(active) < workers:
            unit = pending.popleft()
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=run_unit_alone, args=(unit, options, cohort, send), daemon=True)
            process.start()
            send.close()  # the child holds the only sending end: its death makes ``receive`` ready (EOF)
            active[receive] = (unit, process)
        for receive in wait_for_connections(list(active)):
            unit, process = active.pop(receive)
            try:
                outcome: Outcome | None = receive.recv()
            except EOFError:
                outcome = None
            receive.close()
            process.join()
            yield outcome if outcome is not None else ([], _died(unit, process.exitcode))


def _died(unit: Unit, exitcode: int | None) -> list[dict]:
    """The rejections of a unit whose decoding process died with ``exitcode`` (negative: the signal)."""
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown"
        cause = " — out of memory?" if number == signal.SIGKILL else ""
        how = f"signal {number} ({name}){cause}"
    else:
        how = f"exit code {exitcode}"
    reason = f"decoder process died: {how}; rerun with retry_failed=True to try again"
    return unit_rejections(unit, "decode", reason, Reason.WORKER_DIED)


# -- merge -------------------------------------------------------------------------------------------------------


def _merge(
    cohort: Path, units: list[Unit], labels: KeyTable, sites: KeyTable, *, site_depth: int, institution_sites: bool,
    names: dict[str, str],
) -> tuple[pd.DataFrame, list[dict]]:
    """Rows of the current units from every part, with sites and labels; parts compacted into one.

    Units name their files by pseudonym; labels and sites are matched on the real names ``names``
    (pseudonym → source-relative name), which never reach a row.
    """
    by_id = {u.unit_id: u for u in units}
    item_rows, rejections = read_parts(cohort, by_id)

    rows = []
    for row in item_rows:
        unit = by_id[row["unit_id"]]
        files = [names.get(f, f) for f in unit.files]
        patient_key = next((labels.patient_of_file[f] for f in files if f in labels.patient_of_file),
                           unit.patient_key)
        keys = {"patient_key": patient_key, "study_key": unit.study_key, "series_key": unit.series_key}
        site = sites.lookup(files, institution=unit.institution, **keys)
        if site is None and institution_sites:
            site = unit.institution
        if site is None:
            parts_of_path = PurePosixPath(files[0]).parts[:-1]
            site = _printable(parts_of_path[site_depth]) if len(parts_of_path) > site_depth else "unknown"
        rows.append({
            **{k: v for k, v in row.items() if k != "unit_id"},
            **keys,
            "site": site,
            "modality": unit.modality,
            "label": labels.lookup(files, **keys),
        })
    manifest = pd.DataFrame(rows, columns=None if rows else list(MANIFEST_COLUMNS))
    for column in ("frame", "tile_x", "tile_y", "tile_level"):
        if column in manifest:
            manifest[column] = manifest[column].astype("Int64")
    if "burned_in_risk" in manifest:
        manifest["burned_in_risk"] = manifest["burned_in_risk"].fillna(0).astype(bool)
    return manifest, [{"file": r["file"], "stage": r["stage"], "reason": r["reason"], "code": r.get("code")}
                      for r in rejections]


def _check_cohort(cohort: Path, key: bytes) -> str:
    """The cohort's id (a new random one for a new cohort), after refusing a key other than the cohort's."""
    cohort_id, fingerprint = cohort_identity(cohort)
    check_cohort_key(fingerprint, key)
    return cohort_id or uuid.uuid4().hex[:16]


def _pseudonymise(cohort_id: str, key: bytes, records: list[dict], skipped: list[dict]) -> dict[str, str]:
    """Name the skipped entries by pseudonym like the records, and keep the map back in the private file.

    Returns pseudonym → source-relative name, for matching labels and sites in this process.
    """
    names = {r["file"]: r["name"] for r in records}
    for row in skipped:
        pseudonym = source_pseudonym(key, row["file"])
        names[pseudonym], row["file"] = row["file"], pseudonym
    write_source_map(cohort_id, names)
    return names


def _printable(name: str) -> str:
    """A folder name that can be written whatever its encoding (bytes that are not UTF-8 as escapes)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _delete_orphan_arrays(cohort: Path, kept: set[str]) -> None:
    folder = cohort / ARRAYS
    if not folder.is_dir():
        return
    for path in folder.rglob("*.npy"):
        if path.relative_to(cohort).as_posix() not in kept:
            path.unlink()

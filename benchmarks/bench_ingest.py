"""Ingest throughput on a generated tree of small DICOM files, against a plain ``pydicom.dcmread`` loop.

The tree: ``BENCH_INGEST_FILES`` (default 10,000) copies of one 64×64 CT slice with
new UIDs, grouped into series of 20 slices (so grouping into volumes is exercised),
under three site folders. Each run is in a fresh process, so its peak RSS is its own:

- ``ingest_header_scan``: our scan stage (content digest, format detection,
  header-only read; ``IngestReport.seconds["scan"]`` of the full run below) vs
  ``dcmread(stop_before_pixels=True)`` in a loop;
- ``ingest_full``: the whole ingest (scan, grouping, decoding, windowing, ``.npy``
  cache, manifest) with the default workers vs ``dcmread`` + ``pixel_array`` in a loop
  (which caches nothing and writes nothing);
- ``ingest_full_one_process``: the same with ``workers=0``, so the ratio is per core;
- ``ingest_full_cli``: the same through ``clinical ingest`` in a process of its own, its start and imports
  included (the spawned workers import the ``clinical`` script too), as a user runs it;
- ``ingest_header_scan_marginal``: the scan's cost per file beyond its fixed cost (the workers'
  start and imports, planning, the scan state), from the full run and a run on one of the three
  site folders: (files − folder's files) / (scan seconds − folder's scan seconds), against the
  same header loop. What an archive much larger than the tree would see.

Files/s for both, their ratio, and peak RSS (MiB) of the measuring process and of
its largest worker. Every measurement runs ``BENCH_INGEST_ROUNDS`` times (default 2), in reverse
order every other round so that a shared machine's drift favours neither side, and the best of
each is reported (as :func:`benchmarks.report.best_of` does). Run with ``python -m benchmarks bench_ingest``.

``BENCH_INGEST_SCALE=100000`` adds ``ingest_scale``: the one-process ingest of a tree of that many
files against the same of ``BENCH_INGEST_FILES``, as seconds per file (a ratio near 1 means the cost per
file does not grow with the archive), with the peak RSS of the large run. Not run by default: the large
tree takes minutes to write and ingest.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from benchmarks.report import emit

FILES = int(os.environ.get("BENCH_INGEST_FILES", "10000"))
SCALE = int(os.environ.get("BENCH_INGEST_SCALE", "0"))
ROUNDS = int(os.environ.get("BENCH_INGEST_ROUNDS", "2"))
WORKERS = min(os.cpu_count() or 1, 8)
KINDS = ("header_loop", "pixel_loop", "ours", "ours_site", "ours_one_process", "ours_cli")
SLICES_PER_SERIES = 20


def make_tree(root: Path, files: int) -> list[Path]:
    """Write ``files`` 64×64 CT slices with fresh UIDs; return their paths."""
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    template.set_pixel_data(np.random.default_rng(0).integers(0, 2000, (64, 64), dtype=np.uint16), "MONOCHROME2", 12)
    template.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    paths = []
    series_uid = study_uid = None
    for index in range(files):
        slice_index = index % SLICES_PER_SERIES
        if slice_index == 0:
            series_uid, study_uid = generate_uid(), generate_uid()
            patient = f"BENCH{index // SLICES_PER_SERIES:06d}"
        template.PatientID = patient
        template.StudyInstanceUID, template.SeriesInstanceUID = study_uid, series_uid
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.ImagePositionPatient = [0.0, 0.0, 2.5 * slice_index]
        path = root / f"site{index % 3}" / series_uid[-12:] / f"{template.SOPInstanceUID[-16:]}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        template.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _peak_rss_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def _measure(kind: str, tree: str, out: str, queue) -> None:
    from clinical.ingest import ingest  # imported before the clock starts, as pydicom is for the loops

    if kind == "ours_site":
        tree = str(Path(tree) / "site0")
    paths = sorted(Path(tree).rglob("*.dcm"))
    start = time.perf_counter()
    scan_seconds = float("nan")
    if kind in ("ours", "ours_one_process", "ours_site"):
        report = ingest(tree, out, key="bench-key", workers=0 if kind == "ours_one_process" else None, progress=False)
        if report.ingested != len(paths):
            raise RuntimeError(f"expected {len(paths)} files ingested, got {report.summary()}")
        scan_seconds = report.seconds["scan"]
    elif kind == "ours_cli":
        command = [str(Path(sys.executable).with_name("clinical")), "ingest", tree, "--out", out,
                   "--workers", str(WORKERS)]
        env = {**os.environ, "CLINICAL_PSEUDONYM_KEY": "bench-key"}
        done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        if f"ingested {len(paths)} " not in done.stdout:
            raise RuntimeError(f"expected {len(paths)} files ingested, got {done.stdout}")
    elif kind == "header_loop":
        for path in paths:
            pydicom.dcmread(path, stop_before_pixels=True)
    elif kind == "pixel_loop":
        for path in paths:
            _ = pydicom.dcmread(path).pixel_array
    seconds = time.perf_counter() - start
    queue.put({"files_per_s": len(paths) / seconds, "scan_files_per_s": len(paths) / scan_seconds,
               "files": len(paths), "scan_seconds": scan_seconds, "rss": _peak_rss_mib()})


def measure(kind: str, tree: Path, out: Path) -> dict:
    """files/s and peak RSS (own, largest child) of one measurement in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(kind, str(tree), str(out), queue))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode:
        raise RuntimeError(f"measurement {kind} failed with exit code {process.exitcode}")
    shutil.rmtree(out, ignore_errors=True)
    return result


def measure_rounds(tree: Path, out: Path) -> dict[str, list[dict]]:
    """Every kind's measurements over :data:`ROUNDS` rounds, every other round in reverse order."""
    results: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for index in range(ROUNDS):
        for kind in KINDS if index % 2 == 0 else KINDS[::-1]:
            results[kind].append(measure(kind, tree, out))
    return results


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        start = time.perf_counter()
        make_tree(tree, FILES)
        print(f"# generated {FILES} DICOM files in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        runs = measure_rounds(tree, Path(scratch) / "cohort")

        def best(kind: str, figure: str = "files_per_s") -> dict:
            return max(runs[kind], key=lambda run: run[figure])

        ours, headers, pixels = best("ours", "scan_files_per_s"), best("header_loop"), best("pixel_loop")
        common = {"files": FILES, "cpus": os.cpu_count(), "rounds": ROUNDS}
        emit("ingest_header_scan", ours=round(ours["scan_files_per_s"], 1), baseline=round(headers["files_per_s"], 1),
             unit="files/s", higher_is_better=True, workers=WORKERS, peak_rss_mib_baseline=round(headers["rss"][0], 1),
             **common)
        marginal = max((full["files"] - site["files"]) / (full["scan_seconds"] - site["scan_seconds"])
                       for full, site in zip(runs["ours"], runs["ours_site"], strict=True))
        emit("ingest_header_scan_marginal", ours=round(marginal, 1), baseline=round(headers["files_per_s"], 1),
             unit="files/s", higher_is_better=True, workers=WORKERS, folder_files=runs["ours_site"][0]["files"],
             **common)
        for name, kind, count in (("ingest_full", "ours", WORKERS), ("ingest_full_one_process", "ours_one_process", 0),
                                  ("ingest_full_cli", "ours_cli", WORKERS)):
            run = best(kind)
            emit(name, ours=round(run["files_per_s"], 1), baseline=round(pixels["files_per_s"], 1), unit="files/s",
                 higher_is_better=True, workers=count, peak_rss_mib_ours=round(run["rss"][0], 1),
                 peak_rss_mib_ours_worker=round(run["rss"][1], 1), peak_rss_mib_baseline=round(pixels["rss"][0], 1),
                 **common)
        if SCALE:
            _scale(Path(scratch))
    return 0


def _scale(scratch: Path) -> None:
    """``ingest_scale``: seconds per file of a one-process ingest of ``SCALE`` files against ``FILES`` files.

    The small tree is ingested just before and just after the large one, and their mean is the baseline,
    so the drift of a shared machine over the large run cancels.
    """
    tree = scratch / "tree-large"
    make_tree(tree, SCALE)
    before = measure("ours_one_process", scratch / "tree", scratch / "cohort")
    large = measure("ours_one_process", tree, scratch / "cohort-large")
    after = measure("ours_one_process", scratch / "tree", scratch / "cohort")
    small = (1e6 / before["files_per_s"] + 1e6 / after["files_per_s"]) / 2
    emit("ingest_scale", ours=round(1e6 / large["files_per_s"], 1), baseline=round(small, 1),
         unit="us/file", higher_is_better=False, files=SCALE, baseline_files=FILES,
         peak_rss_mib_ours=round(large["rss"][0], 1), cpus=os.cpu_count())


if __name__ == "__main__":
    sys.exit(main())

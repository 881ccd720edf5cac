"""``clinical ingest SOURCE... --out COHORT``: files to a PHI-free cohort manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from clinical.ingest.options import DEFAULTS, MAX_DEFAULT_WORKERS

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``ingest`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser(
        "ingest",
        help="ingest DICOM, NIfTI, whole slides and photographs into a cohort",
        description="Ingest folders or files into a cohort folder (manifest.parquet, rejections.parquet, arrays/). "
        "Reruns are incremental. Prints 'ingested + rejected = found' at the end.",
    )
    parser.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="folders (walked) or files")
    parser.add_argument("--out", required=True, type=Path, metavar="COHORT", help="cohort folder to write")
    parser.add_argument("--labels", type=Path, metavar="LABELS.csv", help="labels CSV (label + file/series_uid/...)")
    parser.add_argument("--sites", type=Path, metavar="SITES.csv", help="sites CSV (site + file/folder/...)")
    workers_help = f"processes (0: in this process; default: CPUs, at most {MAX_DEFAULT_WORKERS})"
    parser.add_argument("--workers", type=int, default=None, help=workers_help)
    parser.add_argument("--target-spacing", type=float, nargs="+", metavar="MM", help="resample to this spacing")
    parser.add_argument("--target-size", type=int, nargs="+", metavar="PX", help="resample to this size")
    parser.add_argument("--ct-window", default=DEFAULTS.ct_window, help="soft_tissue, brain, lung, bone or header")
    parser.add_argument("--tile-size", type=int, default=DEFAULTS.tile_size, help="slide tile side in pixels")
    parser.add_argument("--tile-level", type=int, default=DEFAULTS.tile_level, help="slide pyramid level to tile")
    parser.add_argument(
        "--max-tiles-per-slide", type=int, default=DEFAULTS.max_tiles_per_slide, help="cap on tiles per slide"
    )
    parser.add_argument(
        "--photo-tile", type=int, default=DEFAULTS.photo_tile, help="cut larger photographs into tiles of this size"
    )
    parser.add_argument(
        "--max-decoded-mb", type=float, default=DEFAULTS.max_decoded_mb, metavar="MIB",
        help="decoded-size budget of one unit, checked from headers before allocation (default: %(default)g)",
    )
    parser.add_argument(
        "--keep-burned-in", action="store_true",
        help="keep DICOM images with Burned In Annotation (0028,0301) YES (rejected by default: text in the pixels)",
    )
    parser.add_argument(
        "--channels", type=lambda text: tuple(text.split(",")), metavar="PT,CT",
        help="stack the series of these modalities of each study as the channels of one item, on the grid of the "
        "finest (PET as SUVbw); a study without one of them is rejected",
    )
    parser.add_argument(
        "--retry-failed", action="store_true",
        help="decode again the units whose worker died in an earlier run (skipped by default)",
    )
    parser.add_argument(
        "--ray", metavar="ADDRESS", dest="ray_address",
        help="scan and decode on this Ray cluster (auto, HOST:PORT); every node must see SOURCE and COHORT "
        "at the same paths (--workers is then unused)",
    )
    parser.add_argument("--site-depth", type=int, default=0, help="folder depth below SOURCE that names the site")
    parser.add_argument(
        "--site-from", choices=("institution", "folder"), default="institution",
        help="DICOM site from InstitutionName (default) or from the folder like other files",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Ingest and print the invariant; exit code 0 even when files were rejected (they are listed)."""
    from clinical.workflows import ingest_cohort

    report = ingest_cohort(
        args.sources,
        args.out,
        labels=args.labels,
        sites=args.sites,
        workers=args.workers,
        target_spacing=args.target_spacing,
        target_size=args.target_size,
        ct_window=args.ct_window,
        tile_size=args.tile_size,
        tile_level=args.tile_level,
        max_tiles_per_slide=args.max_tiles_per_slide,
        photo_tile=args.photo_tile,
        max_decoded_mb=args.max_decoded_mb,
        keep_burned_in=args.keep_burned_in,
        channels=args.channels,
        retry_failed=args.retry_failed,
        site_depth=args.site_depth,
        site_from=args.site_from,
        ray_address=args.ray_address,
    )
    print(f"cohort {report.cohort} (digest {report.digest[:12]})")
    if report.rejected:
        stages = ", ".join(f"{n} at {stage}" for stage, n in sorted(report.rejections_by_stage.items()))
        print(f"rejections ({stages}): see {report.cohort / 'rejections.parquet'}")
    print(report.summary())
    return 0

"""``clinical rejections COHORT``: a cohort's rejected and skipped inputs with their real paths, for the local operator.

``rejections.parquet`` names inputs by keyed pseudonyms (file and folder names of real
exports carry PHI). This command joins it with the cohort's private map, kept beside the
pseudonym key on this machine (:func:`clinical.ingest.source_paths`), and prints the real
relative paths to the terminal only: nothing is logged or written. On a machine without the
map (a copied cohort) the pseudonyms are shown.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``rejections`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser(
        "rejections",
        help="show a cohort's rejected and skipped inputs with their real paths (local only)",
        description="List rejections.parquet with the real source-relative paths from the private map beside "
        "the pseudonym key. Printed to this terminal only; never logged.",
    )
    parser.add_argument("cohort", type=Path, metavar="COHORT", help="cohort folder (holds rejections.parquet)")
    parser.add_argument("--code", action="append", metavar="CODE", help="only these codes (repeatable)")
    parser.add_argument("--stage", action="append", metavar="STAGE", help="only these stages (repeatable)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print one line per rejection: code, stage, real path (or pseudonym), reason; then the counts by code."""
    from clinical.cohort import read_cohort_meta, read_rejections
    from clinical.ingest import source_paths

    read_cohort_meta(args.cohort)  # a clear error when the folder is no cohort
    rejections = read_rejections(args.cohort)
    if args.code:
        rejections = rejections[rejections["code"].isin(args.code)] if "code" in rejections else rejections.iloc[:0]
    if args.stage:
        rejections = rejections[rejections["stage"].isin(args.stage)]
    paths = source_paths(args.cohort)
    if not paths and len(rejections):
        print("(no private map of this cohort on this machine: showing pseudonyms)")
    for row in rejections.itertuples(index=False):
        code = getattr(row, "code", None) or "-"
        print(f"{code}\t{row.stage}\t{_printable(paths.get(row.file, row.file))}\t{row.reason}")
    counts = rejections["code"].fillna("-").value_counts() if "code" in rejections else None
    summary = ", ".join(f"{n} {c}" for c, n in sorted(counts.items())) if counts is not None else ""
    print(f"{len(rejections)} rejected or skipped{f' ({summary})' if summary else ''}")
    return 0


def _printable(name: str) -> str:
    """A path whose bytes are not UTF-8 shown with escapes instead of failing to print."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")

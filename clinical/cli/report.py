"""``clinical report models:/NAME@alias --out DIR``: the clinical report of a registered model version."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser(
        "report",
        help="write the report of a registered model (HTML and PDF), with TRIPOD+AI and CLAIM items mapped",
        description="Write DIR/model_report.html (one self-contained file) and DIR/model_report.pdf for MODEL from "
        "its runs, cohort and split: patient flow, cohort, de-identification, split and leakage audit, recipe, "
        "compute, cross-validated and pooled performance with patient CIs, calibration, per-site results, "
        "limitations and digests; and log them to the version's run (report/).",
    )
    parser.add_argument("model", metavar="MODEL", help="models:/NAME@alias or models:/NAME/VERSION")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the report into")
    parser.add_argument("--intended-use", default="", help="the intended use, in the words of whoever deploys it")
    parser.add_argument("--limitation", action="append", default=[], dest="limitations",
                        help="a known limitation to state (repeatable); the report adds what the data show")
    parser.add_argument("--cohort", type=Path, help="the cohort folder (default: where the run says it was)")
    parser.add_argument("--split", type=Path, help="the split file (default: where the run says it was)")
    parser.add_argument("--no-pdf", dest="pdf", action="store_false", help="write the HTML only")
    parser.add_argument("--no-log", dest="log", action="store_false", help="do not log the report to MLflow")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the report and print where it is."""
    from clinical.workflows import report_model

    report = report_model(args.model, args.out, intended_use=args.intended_use, limitations=tuple(args.limitations),
                          cohort_dir=args.cohort, split_path=args.split, pdf=args.pdf, log=args.log)
    print(report.html)
    if report.pdf is not None:
        print(report.pdf)
    return 0

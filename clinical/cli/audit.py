"""``clinical audit``: check a split for leakage and report what an item-level split would have cost."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "audit",
        help="check a split for leakage",
        description=(
            "Check that no patient, study or series takes two roles in a fold, list near-duplicate images "
            "across roles, and with --inflation measure how much an item-level split would overstate AUROC. "
            "Exit status 1 when the split leaks."
        ),
    )
    parser.add_argument("cohort", type=Path, help="cohort folder (holds manifest.parquet)")
    parser.add_argument("--split", type=Path, required=True, help="split file written by `clinical split`")
    parser.add_argument(
        "--inflation", action="store_true", help="train a quick model under item- and patient-level splits"
    )
    parser.add_argument("--report", type=Path, default=None, help="JSON report to write (default: SPLIT.audit.json)")
    parser.add_argument(
        "--max-distance", type=int, default=4, help="near duplicate: hashes differ in <= this many bits"
    )
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of patients for the CI")
    parser.add_argument("--n-seeds", type=int, default=5,
                        help="split seeds the inflation repeats both splits over (its CI includes their spread)")
    parser.add_argument(
        "--recipe", type=Path, default=None, metavar="CONFIG_JSON",
        help="with --inflation: train this recipe (a config.json of `clinical train`), the network the study "
             "deploys, under both splits instead of the quick model (2 x folds x n-seeds fits)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clinical.errors import ConfigurationError
    from clinical.splits import format_report
    from clinical.workflows import audit_cohort, load_config

    if args.recipe is not None and not args.inflation:
        raise ConfigurationError("--recipe says which model measures the inflation; give --inflation with it.")
    path = args.report or args.split.with_suffix(".audit.json")
    recipe = load_config(args.recipe) if args.recipe is not None else None
    report = audit_cohort(args.cohort, args.split, path, inflation=args.inflation, max_distance=args.max_distance,
                          n_boot=args.n_boot, n_seeds=args.n_seeds, recipe=recipe)
    print(format_report(report))
    print(f"wrote {path}")
    return 0 if report["passed"] else 1

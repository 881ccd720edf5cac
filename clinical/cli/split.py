"""``clinical split``: patient-level folds of a cohort, written with their seed and digest."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "split",
        help="split a cohort into patient-level folds",
        description=(
            "Split a cohort into folds that keep every patient in one role (train, val or test) per fold, "
            "and print patients, items and labels per fold, role and site."
        ),
    )
    parser.add_argument("cohort", type=Path, help="cohort folder (holds manifest.parquet)")
    parser.add_argument(
        "--out", type=Path, required=True, help="split file to write (.parquet; a .json twin is written)"
    )
    parser.add_argument("--folds", type=int, default=None, help="outer folds for K-fold (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed; the same cohort and seed give the same split")
    parser.add_argument("--by", choices=("patient", "study"), default="patient", help="unit kept together")
    parser.add_argument("--val-size", type=float, default=0.2, help="share of training patients for validation")
    holdout = parser.add_mutually_exclusive_group()
    holdout.add_argument("--site-holdout", metavar="SITE", help="test on this site only (one fold)")
    holdout.add_argument("--leave-site-out", action="store_true", help="one fold per site, testing on it")
    parser.add_argument("--gate-size", type=float, default=0.0,
                        help="share of patients locked away as the promotion gate set (e.g. 0.15; default none)")
    parser.add_argument("--inner-folds", type=int, default=None, help="nested cross-validation: inner folds")
    parser.add_argument("--multilabel-sep", metavar="SEP", default=None, help="labels joined by SEP (multi-label)")
    parser.add_argument(
        "--grow", type=Path, metavar="PREVIOUS", default=None, help="keep patients where this earlier split put them"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from clinical.cohort import read_manifest
    from clinical.splits import fold_table, read_split
    from clinical.workflows import split_cohort

    meta = split_cohort(
        args.cohort,
        args.out,
        previous=args.grow,
        folds=args.folds,
        seed=args.seed,
        by=args.by,
        val_size=args.val_size,
        site_holdout=args.site_holdout,
        leave_site_out=args.leave_site_out,
        inner_folds=args.inner_folds,
        label_sep=args.multilabel_sep,
        gate_size=args.gate_size,
    )
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(fold_table(read_split(args.out)[0], read_manifest(args.cohort)).to_string(index=False))
    print(f"wrote {args.out}: {meta['folds']} fold(s), seed {meta['seed']}, digest {meta['digest']}")
    return 0

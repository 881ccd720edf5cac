"""``clinical screen RUN --cohort COHORT --split SPLIT``: screening with uncertainty from a cross-validation's folds."""

from __future__ import annotations

import argparse
from pathlib import Path

from clinical.errors import ConfigurationError

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``screen`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser(
        "screen",
        help="screen photographs per eye and per patient with uncertainty, referral and conformal sets",
        description="Predict every fold's test photographs of a cross-validation (`clinical train --out RUN`) with "
        "test-time augmentation; write RUN/screening/: metrics per eye and per patient (referable when either eye "
        "is) with patient-bootstrap CIs, uncertainty and error by quality band (and DR grade), the "
        "coverage-performance curve of referring the most uncertain photographs, conformal prediction sets, "
        "and their plots.",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="the folder `clinical train` wrote (holds cv/)")
    parser.add_argument("--cohort", type=Path, required=True, help="cohort folder (holds manifest.parquet)")
    parser.add_argument("--split", type=Path, required=True, help="the split the folds were trained on")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/screening)")
    parser.add_argument("--grades", type=Path, default=None,
                        help="CSV with columns file, grade (files relative to --source) for the report by grade")
    parser.add_argument("--source", type=Path, default=None, help="the folder the --grades files are under")
    parser.add_argument("--passes", type=int, default=8, help="test-time-augmented passes per photograph")
    parser.add_argument("--coverage", type=float, default=0.8,
                        help="share of photographs the model decides at the operating point (the rest are referred)")
    parser.add_argument("--alpha", type=float, default=0.1, help="conformal miscoverage (0.1: 90%% sets)")
    parser.add_argument("--measure", choices=("uncertainty", "entropy"), default="entropy",
                        help="what decides referral: the entropy of the passes' mean (default: it rises where blur "
                             "or exposure hides the finding), or their spread (sensitivity to the augmentation)")
    parser.add_argument("--n-boot", type=int, default=1000, help="patient-bootstrap resamples")
    parser.add_argument("--experiment", help="log the files and plots to the cross-validation's MLflow parent run "
                                             "(or a new run in this experiment when it was not tracked)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Screen, then print the metrics and where the files are."""
    from clinical.workflows import MlflowTracker, read_grades, screen_with_uncertainty

    if (args.grades is None) != (args.source is None):
        raise ConfigurationError("--grades and --source go together: the grades' files are read under --source.")
    grades = read_grades(args.grades, args.source) if args.grades is not None else None
    result = screen_with_uncertainty(
        args.run, cohort_dir=args.cohort, split_path=args.split, out=args.out, grades=grades, passes=args.passes,
        coverage=args.coverage, alpha=args.alpha, measure=args.measure, n_boot=args.n_boot,
        tracker=MlflowTracker(args.experiment) if args.experiment else None,
    )
    print("Screening metrics (95% patient-bootstrap CIs):")
    print(result.metrics[["level", "metric", "value", "low", "high"]].round(3).to_string(index=False))
    point, conformal = result.summary["operating_point"], result.summary["conformal"]
    print(f"refer when uncertain: {point['kept_share']:.0%} kept, AUROC on the kept {point['kept']['auroc']:.3f}; "
          f"conformal sets at {1 - conformal['alpha']:.0%}: coverage {conformal['coverage']:.3f}, "
          f"{conformal['share_both_classes']:.0%} hold both classes")
    print(f"written to {result.out}" + (f" and MLflow run {result.run_id}" if result.run_id else ""))
    return 0

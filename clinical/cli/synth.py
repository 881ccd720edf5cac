"""``clinical synth OUT``: write the synthetic multi-site demo cohort and print what it holds."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "format_summary", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser(
        "synth",
        help="write the synthetic multi-site cohort (DICOM, NIfTI, slides, papyri)",
        description="Write the synthetic multi-site cohort (radiographs, volumes, slides, papyri) and print "
        "what it holds. The same seed gives byte-identical files.",
    )
    parser.add_argument("out", help="output folder (absent or empty)")
    parser.add_argument("--size", choices=("tiny", "small", "demo"), default="tiny", help="how much to generate")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes")
    parser.add_argument(
        "--no-patient-effect", action="store_true", help="drop the per-patient appearance that leaks across images"
    )
    parser.add_argument(
        "--finding-strength", type=float, default=1.0,
        help="scale of what carries the label (0 none, 1 default, 3 strong)",
    )
    parser.add_argument(
        "--tasks", nargs="+", choices=("radiographs", "volumes", "slides", "papyri", "petct"), help="only these tasks"
    )
    parser.add_argument(
        "--no-ct-signal", action="store_true", help="PET/CT task: lesions show on PET only, not on CT"
    )
    parser.add_argument(
        "--finding-focus", type=float, default=1.0,
        help="slides task: share of a tumour island its texture covers, in (0, 1] (0.1: one small focus)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the cohort and print the summary table."""
    from clinical.cohort.synthetic import generate_cohort

    summary = generate_cohort(
        args.out, size=args.size, seed=args.seed, patient_effect=not args.no_patient_effect,
        finding_strength=args.finding_strength, tasks=args.tasks, ct_signal=not args.no_ct_signal,
        finding_focus=args.finding_focus,
    )
    print(format_summary(summary))
    print(f"\nWrote {args.out} (labels.csv and ground_truth.csv in each task folder, summary.json at the top).")
    return 0


def format_summary(summary: dict) -> str:
    """A plain-text table: one row per task with patients, items, files, items per site and per label."""
    header = ("task", "patients", "items", "files", "per site", "per label")
    rows = [header]
    for task, info in summary["tasks"].items():
        rows.append((
            task, str(info["patients"]), str(info["items"]), str(info["files"]),
            " ".join(f"{k}={v}" for k, v in info["sites"].items()),
            " ".join(f"{k}={v}" for k, v in info["labels"].items()),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        f"size={summary['size']} seed={summary['seed']} patient_effect={summary['patient_effect']} "
        f"finding_strength={summary['finding_strength']:g}"
    ]
    for index, row in enumerate(rows):
        lines.append("  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in [*widths, len(header[-1])]))
    return "\n".join(lines)

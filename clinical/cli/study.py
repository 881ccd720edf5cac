"""``clinical study NAME --out DIR``: redo one of the six studies, arms × metrics in a table shaped like the paper's.

Runs on the study's synthetic analogue unless ``--cohort`` names an ingested cohort (``docs/studies.md``
says what each study needs in it). Writes ``DIR/table.md``, ``table.csv``, ``summary.png`` and
``study.json`` beside every arm's folds; with ``--experiment`` one MLflow run holds the table and figure,
with each arm's cross-validation nested under it.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "run"]

#: Kept here, not imported, so that ``clinical --help`` does not import the training stack.
NAMES = ("bpd", "petct", "brain-mr", "retinopathy", "papyri", "kimianet")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``study`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser("study", help="redo one of the six studies (its arms, its table, one figure)",
                            description=__doc__)
    parser.add_argument("name", choices=NAMES, help="the study")
    parser.add_argument("--out", required=True, help="folder for the cohort, every arm's folds and the table")
    parser.add_argument("--size", default="tiny", choices=["tiny", "full"],
                        help="synthetic cohort and training budget: tiny (a minute) or full (docs/studies.md)")
    parser.add_argument("--cohort", help="an ingested cohort to run on instead of the synthetic analogue")
    parser.add_argument("--seed", type=int, default=0, help="seeds the synthetic cohort, the split and training")
    parser.add_argument("--experiment", help="MLflow experiment: one study run, every arm nested under it")
    parser.add_argument("--ray", metavar="ADDRESS", dest="ray_address",
                        help="train every arm's folds on this Ray cluster (auto, HOST:PORT, local); every node must "
                             "see --out at the same path")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", type=_option,
                        help="a study's own setting, repeatable (values read as JSON: true, 0.1, \"PT\"), e.g. "
                             "petct --option ct_signal=false, kimianet --option finding_focus=0.1")
    parser.set_defaults(func=run)


def _option(text: str) -> tuple[str, object]:
    """``key=value`` → (``key``, the value as JSON, else the text as it is)."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def run(args: argparse.Namespace) -> int:
    """Run the study and print its table."""
    from clinical.workflows import MlflowTracker, run_study

    result = run_study(args.name, args.out, size=args.size, cohort=args.cohort, seed=args.seed,
                       tracker=MlflowTracker(args.experiment) if args.experiment else None,
                       ray_address=args.ray_address, **dict(args.option))
    print(result.markdown)
    print(f"Table, figure and record in {result.out}" + (f"; MLflow run {result.run_id}" if result.run_id else ""))
    return 0

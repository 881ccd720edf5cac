"""``clinical mil COHORT --split SPLIT --out DIR``: whole slides from weak labels, attention MIL vs tile aggregation.

Tile embeddings are computed once per backbone, weights and cohort (kept under ``COHORT/embeddings``
unless ``--cache-dir``), so a second run with other MIL settings starts in seconds.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``mil`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser(
        "mil",
        help="slide-level attention MIL and tile aggregation on cached tile embeddings, with patient CIs",
        description=__doc__,
    )
    parser.add_argument("cohort", help="cohort folder of slide tiles written by `clinical ingest`")
    parser.add_argument("--split", required=True, help="split file written by `clinical split`")
    parser.add_argument("--out", required=True, help="folder for metrics, predictions and attention figures")
    parser.add_argument("--backbone", default="densenet121", help="registered model that embeds the tiles")
    parser.add_argument("--pretrained", help="weights of the backbone (a local file); random when not given")
    parser.add_argument("--size", type=int, default=224, help="side tiles are resized to before the backbone")
    parser.add_argument("--cache-dir", help="embedding cache (default: COHORT/embeddings)")
    parser.add_argument("--fold", type=int, default=0, help="fold of the split: train+val fit, test scores")
    parser.add_argument("--steps", type=int, default=300, help="full-batch training steps of the MIL model")
    parser.add_argument("--lr", type=float, default=0.03, help="SGD (momentum 0.9) learning rate of MIL")
    parser.add_argument("--n-boot", type=int, default=1000, help="patient-bootstrap resamples of the CIs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the backbone's random weights and the MIL fit")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--experiment", help="log files, figures and metrics to a new MLflow run in this experiment")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit and score both ways from tiles to a slide; print the slide-level table and the retrieval accuracy."""
    from clinical.workflows import MlflowTracker, train_slide_mil

    result = train_slide_mil(
        args.cohort, args.split, out=args.out, backbone=args.backbone, pretrained=args.pretrained,
        image_size=args.size, cache_dir=args.cache_dir, fold=args.fold, steps=args.steps, lr=args.lr,
        n_boot=args.n_boot, seed=args.seed, device=args.device,
        tracker=MlflowTracker(args.experiment) if args.experiment else None,
    )
    table = result.table[result.table["metric"].isin(["auroc", "auprc", "balanced_accuracy"])]
    print(f"Slide-level test metrics (95% patient-bootstrap CIs), written to {result.out}:")
    print(table[["method", "aggregate", "metric", "value", "low", "high"]].round(3).to_string(index=False))
    print("Retrieval, majority-vote accuracy at k (own patient left out): "
          + ", ".join(f"k={k}: {v:.3f}" for k, v in result.retrieval.items()))
    if result.run_id:
        print(f"MLflow run {result.run_id}")
    return 0

"""``clinical federate``: federated training of the sites of a cohort on Flower's simulation engine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "federate",
        help="federated training over the sites of a cohort (Flower simulation engine)",
        description=(
            "Train one model over the sites of a cohort with Flower (FedAvg or FedProx), each site a client "
            "training on its own patients; only the layer groups that train in a round are sent. Prints the "
            "bytes each site sent per round and the aggregated validation metrics. For the deployment engine "
            "see infra/flower.sh."
        ),
    )
    parser.add_argument("cohort", type=Path, help="cohort folder (holds manifest.parquet)")
    parser.add_argument("split", type=Path, help="split file; with --per-site-split it is written there first")
    parser.add_argument("--out", type=Path, required=True, help="folder for global.pt and federated.json")
    parser.add_argument("--sites", nargs="+", default=None, help="sites to federate (default: every site)")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds")
    parser.add_argument("--strategy", choices=("fedavg", "fedprox"), default="fedavg")
    parser.add_argument("--proximal-mu", type=float, default=0.0, help="FedProx proximal weight")
    parser.add_argument("--min-nodes", type=int, default=2, help="minimum available and training sites per round")
    parser.add_argument("--config", type=Path, default=None, help="TrainConfig JSON (epochs are local epochs)")
    parser.add_argument("--per-site-split", action="store_true", help="split each site's patients on its own first")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clinical.cohort.manifest import read_manifest
    from clinical.data import class_names
    from clinical.workflows import RunSettings, TrainConfig, federate, load_config, split_cohort

    manifest = read_manifest(args.cohort)
    if args.per_site_split:
        split_cohort(args.cohort, args.split, per_site=True)
    config = load_config(args.config) if args.config else TrainConfig.build()
    settings = RunSettings(train_config=config, classes=tuple(class_names(manifest)), num_rounds=args.rounds,
                           strategy=args.strategy, proximal_mu=args.proximal_mu, min_nodes=args.min_nodes)
    sites = args.sites or sorted(manifest["site"].unique())
    summary = federate(settings, cohort_dir=args.cohort, split_path=args.split, sites=sites, out=args.out)
    full = summary["full_model_bytes"]
    print(f"{'round':>5}  {'trainable groups':<40} {'bytes/site':>12} {'of full':>8}  val AUROC  rejected")
    for record in summary["rounds"]:
        sent = max(record["bytes_sent"].values(), default=0)
        auroc = record.get("evaluate_metrics", {}).get("val-auroc", float("nan"))
        print(f"{record['round']:>5}  {','.join(record['trainable_groups']):<40} {sent:>12} {sent / full:>8.2%}  "
              f"{auroc:>9.3f}  {json.dumps(record['rejected'])}")
    print(f"global model: {args.out / 'global.pt'}")
    return 0

"""``clinical pretrain COHORT --out BACKBONE.pt``: learn a backbone from unlabelled items (SimCLR or BYOL).

The backbone loads with ``create_model(NAME, pretrained="BACKBONE.pt")`` or
``clinical train ... --pretrained BACKBONE.pt``; the head is then re-initialised.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser(
        "pretrain",
        help="self-supervised pretraining of a backbone on a cohort's items (SimCLR or BYOL)",
        description=__doc__,
    )
    parser.add_argument("cohort", help="cohort folder written by `clinical ingest`")
    parser.add_argument("--out", required=True, help="file to write the backbone to (.pt)")
    parser.add_argument("--method", choices=("simclr", "byol"), default="simclr", help="self-supervised method")
    parser.add_argument("--model", default="resnet18", help="registered model name (see `clinical.models.list_models`)")
    parser.add_argument("--kind", choices=("image", "volume", "tile", "photo"), help="items to use in a mixed cohort")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the items")
    parser.add_argument("--batch-size", type=int, default=64, help="items per batch (at least 2)")
    parser.add_argument("--size", type=int, nargs="+", help="spatial size items are resized to (one or one per axis)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (cosine schedule)")
    parser.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature (SimCLR only)")
    parser.add_argument("--min-crop", type=float, default=0.4, help="smallest crop of a view, as a share of each side")
    parser.add_argument("--no-flip", dest="flip", action="store_false",
                        help="do not mirror the views (for what is chiral, such as script)")
    parser.add_argument("--seed", type=int, default=0, help="seeds initialisation, order and augmentation")
    parser.add_argument("--pretrained", help="weights to start from (a local file)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Pretrain and write the backbone; print the loss of the first and last epoch."""
    from clinical.workflows import pretrain

    result = pretrain(
        args.cohort,
        method=args.method,
        model=args.model,
        kind=args.kind,
        epochs=args.epochs,
        batch_size=args.batch_size,
        size=args.size,
        lr=args.lr,
        temperature=args.temperature,
        min_crop=args.min_crop,
        flip=args.flip,
        seed=args.seed,
        pretrained=args.pretrained,
        device=args.device,
        out=args.out,
    )
    print(
        f"{args.method} {args.model}: loss {result.losses[0]:.3f} → {result.losses[-1]:.3f} over {len(result.losses)} "
        f"epoch(s); backbone written to {result.path}"
    )
    return 0

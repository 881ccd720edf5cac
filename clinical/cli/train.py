"""``clinical train COHORT --split SPLIT``: fine-tune a model on one fold, or on every fold of a split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser", "config_from_args", "run"]

#: Command-line flag → TrainConfig field, for the flags that map one to one.
_FIELDS = {
    "model": "model", "kind": "kind", "in_channels": "in_channels", "pretrained": "pretrained",
    "image_size": "image_size", "schedule": "schedule", "epochs": "epochs", "unfreeze_every": "unfreeze_every",
    "unfreeze_patience": "unfreeze_patience", "lr": "lr", "layer_decay": "layer_decay",
    "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs", "batch_size": "batch_size",
    "cutmix": "cutmix_alpha", "mixup": "mixup_alpha", "label_smoothing": "label_smoothing",
    "class_balance": "class_balance", "patience": "early_stopping_patience", "workers": "num_workers",
    "device": "device", "amp": "amp", "channels_last": "channels_last", "compile": "compile", "seed": "seed",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command to the ``clinical`` parser."""
    parser = sub.add_parser(
        "train",
        help="fine-tune a model on a fold (or all folds) of a split",
        description=(
            "Fine-tune a pretrained network with progressive layer freezing (or full fine-tuning, or a linear "
            "probe), choosing the epoch by validation AUROC at patient level. Writes config.json, checkpoints, "
            "predictions and result.json under --out (one folder per fold when every fold is trained)."
        ),
    )
    parser.add_argument("cohort", type=Path, help="cohort folder (holds manifest.parquet)")
    parser.add_argument("--split", type=Path, required=True, help="split file written by `clinical split`")
    parser.add_argument("--fold", type=int, default=None, help="fold to train (default: every fold, cross-validated)")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--config", type=Path, default=None, help="a config.json to start from; flags override it")
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from (needs --fold)")
    recipe = parser.add_argument_group("recipe (defaults: see clinical.training.TrainConfig)")
    recipe.add_argument("--model", help="registry name, e.g. resnet50")
    recipe.add_argument("--kind", choices=("image", "volume", "tile", "photo"), help="manifest kind to train on")
    recipe.add_argument("--in-channels", type=int)
    recipe.add_argument("--pretrained", help="local weights file or URI")
    recipe.add_argument("--image-size", type=int, nargs="+", metavar="N", help="target size (H W, or D H W)")
    recipe.add_argument("--schedule", choices=("progressive", "full", "linear-probe"))
    recipe.add_argument("--epochs", type=int)
    recipe.add_argument("--unfreeze-every", type=int, metavar="EPOCHS")
    recipe.add_argument("--unfreeze-patience", type=int, metavar="EPOCHS")
    recipe.add_argument("--lr", type=float, help="head learning rate")
    recipe.add_argument("--layer-decay", type=float, help="lr factor per group below the head")
    recipe.add_argument("--weight-decay", type=float)
    recipe.add_argument("--warmup-epochs", type=float)
    recipe.add_argument("--batch-size", type=int)
    recipe.add_argument("--cutmix", type=float, metavar="ALPHA")
    recipe.add_argument("--mixup", type=float, metavar="ALPHA")
    recipe.add_argument("--label-smoothing", type=float)
    recipe.add_argument("--class-balance", choices=("none", "weighted-loss", "sampler"))
    recipe.add_argument("--patience", type=int, help="early stopping patience in epochs")
    recipe.add_argument("--seed", type=int)
    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--device", help="cpu, cuda, cuda:1 or auto")
    hardware.add_argument("--amp", choices=("off", "bf16", "fp16"))
    hardware.add_argument("--channels-last", action="store_true", default=None)
    hardware.add_argument("--compile", action="store_true", default=None)
    hardware.add_argument("--workers", type=int, help="DataLoader worker processes")
    tracking = parser.add_argument_group("tracking (MLflow at MLFLOW_TRACKING_URI, else ./mlflow.db)")
    tracking.add_argument("--experiment", help="log every fold as a nested run of one parent run in this experiment")
    tracking.add_argument("--register", metavar="NAME",
                          help="register the best fold's model under NAME (first version: @champion; later: "
                               "@challenger unless the promotion gate lets it through); implies tracking")
    tracking.add_argument("--gate-margin", type=float, default=None,
                          help="promote a challenger only when better by this AUROC margin (default: paired test)")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The TrainConfig of ``--config`` (if any) with every given flag applied on top."""
    from clinical.training import TrainConfig, load_config

    values = load_config(args.config).model_dump() if args.config else {}
    if args.config and (args.unfreeze_every is not None or args.unfreeze_patience is not None):
        values.pop("unfreeze_every", None)
        values.pop("unfreeze_patience", None)
    for flag, field in _FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            values[field] = tuple(value) if isinstance(value, list) else value
    return TrainConfig.build(**values)


def run(args: argparse.Namespace) -> int:
    from clinical.cohort import read_manifest
    from clinical.errors import ConfigurationError
    from clinical.splits import read_split
    from clinical.training import cross_validate, fit, summarize

    config = config_from_args(args)
    if args.fold is None and args.resume is not None:
        raise ConfigurationError("--resume continues one fold's run; give --fold with it.")
    if args.experiment or args.register:
        if args.resume is not None:
            raise ConfigurationError("--resume is for untracked runs; a tracked run starts a new MLflow run.")
        results = _run_tracked(args, config)
    elif args.fold is None:
        results = cross_validate(config, manifest=read_manifest(args.cohort), cohort_dir=args.cohort,
                                 split=read_split(args.split)[0], out=args.out)
    else:
        results = [fit(config, manifest=read_manifest(args.cohort), cohort_dir=args.cohort,
                       split=read_split(args.split)[0], fold=args.fold, out=args.out, resume=args.resume)]
    for r in results:
        test = r.test_metrics.get("auroc", float("nan"))
        print(f"fold {r.fold}: best epoch {r.best_epoch}, val AUROC {r.best_score:.3f}, test AUROC {test:.3f} "
              f"({config.monitor_level} level) -> {r.out}")
    if len(results) > 1:
        summary = summarize(results)
        (args.out / "crossval.json").write_text(json.dumps(summary, indent=2))
        print("test, mean ± SD over folds: " + ", ".join(
            f"{k} {summary[k]['mean']:.3f} ± {summary[k]['sd']:.3f}"
            for k in ("auroc", "auprc", "balanced_accuracy", "f1") if k in summary))
    return 0


def _run_tracked(args: argparse.Namespace, config) -> list:
    """Every fold (or one) logged to MLflow under one parent run; the best fold registered when asked."""
    from clinical.tracking import (
        finish_cross_validation,
        outer_folds,
        register_best_fold,
        start_cross_validation,
        train_fold,
    )
    from clinical.training import load_result

    experiment = args.experiment or "clinical"
    folds = [args.fold] if args.fold is not None else outer_folds(args.split)
    parent = start_cross_validation(config, cohort_dir=args.cohort, split_path=args.split, experiment=experiment)
    runs = [train_fold(config, cohort_dir=args.cohort, split_path=args.split, fold=fold,
                       out=args.out / f"fold-{fold}", experiment=experiment, parent_run_id=parent)
            for fold in folds]
    cv = finish_cross_validation(parent, runs, cohort_dir=args.cohort, split_path=args.split)
    print(f"MLflow parent run {parent} (experiment {experiment!r})")
    print(cv.table.round(3).to_string(index=False))
    if args.register:
        model = register_best_fold(runs, args.register, cohort_dir=args.cohort, split_path=args.split,
                                   margin=args.gate_margin)
        print(f"registered {model.name} version {model.version} as @{model.alias}"
              + (f" ({model.decision['reason']})" if model.decision else ""))
    return [load_result(run.out) for run in runs]

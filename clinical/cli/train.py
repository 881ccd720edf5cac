"""``clinical train COHORT --split SPLIT``: fine-tune a model on one fold, or on every fold of a split."""

from __future__ import annotations

import argparse
from pathlib import Path

from clinical.cli.recipe import add_config_arguments, config_values
from clinical.errors import ConfigurationError
from clinical.workflows import TrainConfig, load_config

__all__ = ["add_parser", "config_from_args", "run"]

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
    parser.add_argument("--slices", action="store_true",
                        help="train on the axial slices of the cohort's volumes (2D items, --kind image); each slice "
                             "keeps its volume's patient and split role. The slice cohort is written to OUT/slices")
    parser.add_argument("--slice-labels", type=Path, default=None, metavar="CSV",
                        help="with --slices: a CSV series_uid,slice,label giving each slice its own label "
                             "(default: the volume's label)")
    cluster = parser.add_argument_group("cluster: the folds as tasks of a Ray cluster, all at once")
    cluster.add_argument("--ray", metavar="ADDRESS", dest="ray_address",
                         help="train the folds on this Ray cluster (auto, HOST:PORT, local); every node must see "
                              "COHORT, --split and --out at the same paths")
    cluster.add_argument("--fold-cpus", type=float, default=1, help="CPUs each fold asks of the cluster (default 1)")
    cluster.add_argument("--fold-gpus", type=float, default=0, help="GPUs each fold asks of the cluster (default 0)")
    recipe = parser.add_argument_group("recipe: one flag per clinical.training.TrainConfig field")
    add_config_arguments(recipe, TrainConfig)
    tracking = parser.add_argument_group("tracking (MLflow at MLFLOW_TRACKING_URI, else ./mlflow.db)")
    tracking.add_argument("--experiment", help="log every fold as a nested run of one parent run in this experiment")
    parser.add_argument("--final-model", choices=("refit", "best-fold"), default=None,
                        help="the model to deploy: refit on every development patient for the epochs the folds "
                             "chose (default with --register), or the best fold's model")
    tracking.add_argument("--register", metavar="NAME",
                          help="register the final model under NAME (first version: @champion; later: "
                               "@challenger unless the promotion gate lets it through); implies tracking")
    tracking.add_argument("--gate-margin", type=float, default=None,
                          help="promote a challenger only when the lower bound of the 95%% CI of its AUROC gain on "
                               "the gate patients exceeds this (default 0; negative: non-inferiority)")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of ``--config`` (if any) with every given flag applied on top."""
    values = load_config(args.config).model_dump() if args.config else {}
    given = config_values(args, TrainConfig)
    if {"unfreeze_every", "unfreeze_patience"} & set(given):  # the flag replaces the config's stage rule
        values.pop("unfreeze_every", None)
        values.pop("unfreeze_patience", None)
    return TrainConfig.build(**(values | given))


def run(args: argparse.Namespace) -> int:
    from clinical.workflows import (
        MlflowTracker,
        cross_validate,
        fit_final_model,
        pool_folds,
        register_model,
        slice_cohort,
        train_fold,
    )

    config = config_from_args(args)
    if args.slice_labels is not None and not args.slices:
        raise ConfigurationError("--slice-labels labels the slices of --slices; give --slices with it.")
    if args.slices:
        if config.kind != "image":
            raise ConfigurationError(f"--slices trains on 2D slices; use --kind image (got --kind {config.kind}).")
        args.cohort, args.split = slice_cohort(args.cohort, args.split, args.out / "slices",
                                               slice_labels=args.slice_labels)
    tracker = MlflowTracker(args.experiment or "clinical") if args.experiment or args.register else None
    if args.resume is not None:
        if args.fold is None:
            raise ConfigurationError("--resume continues one fold's run; give --fold with it.")
        if tracker is not None:
            raise ConfigurationError("--resume is for untracked runs; a tracked run starts a new MLflow run.")
        run = train_fold(config, cohort_dir=args.cohort, split_path=args.split, fold=args.fold,
                         out=args.out / f"fold-{args.fold}", resume=args.resume)
        cv = pool_folds([run], cohort_dir=args.cohort, split_path=args.split, out=args.out)
    else:
        cv = cross_validate(config, cohort_dir=args.cohort, split_path=args.split, out=args.out,
                            folds=[args.fold] if args.fold is not None else None, tracker=tracker,
                            ray_address=args.ray_address,
                            fold_resources={"num_cpus": args.fold_cpus, "num_gpus": args.fold_gpus})
    final = args.final_model or ("refit" if args.register else None)
    if final is not None:
        nested = MlflowTracker(tracker.experiment, parent_run_id=cv.parent_run_id) if tracker else None
        cv = fit_final_model(cv, cohort_dir=args.cohort, split_path=args.split, how=final, tracker=nested)
    for r in cv.results:
        test = r.test_metrics.get("auroc", float("nan"))
        print(f"fold {r.fold}: best epoch {r.best_epoch}, val AUROC {r.best_score:.3f}, test AUROC {test:.3f} "
              f"({config.monitor_level} level) -> {r.out}")
    unit = f"{config.monitor_level} level"
    unit += "" if config.monitor_level == "item" else f", {config.aggregate} of items"
    print(f"Pooled out-of-fold test metrics ({unit}, 95% patient-bootstrap CIs), "
          f"written to {args.out / 'cv'}:")
    print(cv.table.round(3).to_string(index=False))
    if len(cv.results) > 1:
        print("test, mean ± SD over folds: " + ", ".join(
            f"{k} {cv.summary[k]['mean']:.3f} ± {cv.summary[k]['sd']:.3f}"
            for k in ("auroc", "auprc", "balanced_accuracy", "f1") if k in cv.summary))
    if tracker is not None:
        print(f"MLflow parent run {cv.parent_run_id} (experiment {tracker.experiment!r})")
    if cv.final is not None:
        print(f"final model ({cv.final_how}): {cv.final.out}")
    if args.register:
        model = register_model(cv, args.register, cohort_dir=args.cohort, split_path=args.split,
                               margin=args.gate_margin)
        print(f"registered {model.name} version {model.version} ({model.final_model}) as @{model.alias}"
              + (f" ({model.decision['reason']})" if model.decision else ""))
    return 0

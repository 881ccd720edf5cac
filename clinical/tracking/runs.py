"""Tracked work: cross-validation as a parent run with a nested run per fold, evaluation, registration.

These are the steps the CLI and the Prefect flows call, so that both log and
register the same way. Each reads the previous stage's files (cohort folder,
split file, run folder), never its Python objects.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from clinical.cohort import read_cohort_meta, read_manifest
from clinical.data import ManifestDataset
from clinical.data.presets import preset
from clinical.evaluation.bootstrap import evaluate
from clinical.evaluation.report import format_mean_sd
from clinical.splits import fold_items, read_split
from clinical.tracking.callback import MlflowCallback, fit_plots, start_parent_run
from clinical.tracking.pyfunc import build_classifier, save_classifier
from clinical.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    GateDecision,
    alias_version,
    apply_gate,
    decide_promotion,
    register_run_model,
)
from clinical.training import TrainConfig, fit, load_result, predict, summarize
from clinical.training.result import FitResult

__all__ = [
    "CrossValidation",
    "FoldRun",
    "RegisteredModel",
    "cross_validate_tracked",
    "finish_cross_validation",
    "format_summary",
    "load_registered",
    "outer_folds",
    "predict_registered",
    "register_best_fold",
    "start_cross_validation",
    "train_fold",
]

logger = logging.getLogger(__name__)

#: Metrics shown in the summary table, in this order.
TABLE_METRICS = ("auroc", "auprc", "balanced_accuracy", "f1", "sensitivity", "specificity", "brier", "ece")


@dataclass
class CrossValidation:
    """A tracked cross-validation: the parent run, one run per fold, and the pooled metric table."""

    parent_run_id: str
    fold_runs: dict[int, str]
    results: list[FitResult]
    summary: dict[str, dict[str, float]]
    table: pd.DataFrame
    split_digest: str
    cohort_digest: str
    out: Path


@dataclass
class RegisteredModel:
    """A registered version and what the gate decided about it."""

    name: str
    version: str
    alias: str
    run_id: str
    decision: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class FoldRun:
    """One fold's tracked fit: where its files are and which MLflow run holds it."""

    fold: int
    run_id: str
    out: str


def start_cross_validation(
    config: TrainConfig,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    experiment: str = "clinical",
    run_name: str | None = None,
) -> str:
    """Open the parent run of a cross-validation; return its id for the fold runs."""
    cohort_meta = read_cohort_meta(cohort_dir)
    _, split_meta = read_split(split_path)
    tags = {"clinical.cohort_digest": cohort_meta["digest"], "clinical.split_digest": split_meta["digest"],
            "clinical.model": config.model, "clinical.schedule": config.schedule}
    return start_parent_run(experiment, run_name=run_name or f"{config.model}-{config.schedule}-cv", tags=tags)


def train_fold(
    config: TrainConfig,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    fold: int,
    out: str | Path,
    experiment: str = "clinical",
    parent_run_id: str | None = None,
    run_name: str | None = None,
) -> FoldRun:
    """Fit one fold with the MLflow callback; the run holds metrics, plots and the servable model."""
    manifest = read_manifest(cohort_dir)
    ingest_options = read_cohort_meta(cohort_dir).get("options", {})
    split, split_meta = read_split(split_path)
    callback = MlflowCallback(
        experiment,
        run_name=run_name or config.model,
        parent_run_id=parent_run_id,
        split_digest=split_meta["digest"],
        split_path=split_path,
        log_model=lambda result: save_classifier(result, result.out / "model", ingest_options=ingest_options),
    )
    fit(config, manifest=manifest, cohort_dir=cohort_dir, split=split, fold=fold, out=out, callbacks=(callback,))
    return FoldRun(fold=fold, run_id=str(callback.run_id), out=str(out))


def finish_cross_validation(
    parent_run_id: str,
    fold_runs: Sequence[FoldRun],
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    n_boot: int = 1000,
) -> CrossValidation:
    """Summarise the folds (mean ± SD) and the pooled out-of-fold predictions (bootstrap CIs) into the parent run.

    The pooled table has each patient predicted once, by the model that never
    saw them; its 95% CIs resample patients.
    """
    results = [load_result(run.out) for run in sorted(fold_runs, key=lambda r: r.fold)]
    config = results[0].config
    summary = summarize(results)
    pooled = pd.concat([r.test_predictions for r in results if r.test_predictions is not None], ignore_index=True)
    classes = results[0].classes
    table = evaluate(pooled, classes, level=config.monitor_level, n_boot=n_boot, seed=config.seed).table
    _, split_meta = read_split(split_path)
    cv = CrossValidation(
        parent_run_id=parent_run_id,
        fold_runs={run.fold: run.run_id for run in fold_runs},
        results=results,
        summary=summary,
        table=table,
        split_digest=split_meta["digest"],
        cohort_digest=read_cohort_meta(cohort_dir)["digest"],
        out=Path(fold_runs[0].out).parent,
    )
    _log_parent(MlflowClient(), cv, pooled, classes, config.monitor_level)
    return cv


def cross_validate_tracked(
    config: TrainConfig,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    out: str | Path,
    experiment: str = "clinical",
    run_name: str | None = None,
    folds: Sequence[int] | None = None,
    n_boot: int = 1000,
) -> CrossValidation:
    """Every fold in this process: a parent run, one nested run per fold, the pooled table with CIs."""
    if folds is None:
        folds = outer_folds(split_path)
    parent = start_cross_validation(config, cohort_dir=cohort_dir, split_path=split_path, experiment=experiment,
                                    run_name=run_name)
    runs = [
        train_fold(config, cohort_dir=cohort_dir, split_path=split_path, fold=fold, out=Path(out) / f"fold-{fold}",
                   experiment=experiment, parent_run_id=parent, run_name=run_name)
        for fold in folds
    ]
    return finish_cross_validation(parent, runs, cohort_dir=cohort_dir, split_path=split_path, n_boot=n_boot)


def outer_folds(split_path: str | Path) -> list[int]:
    """The outer folds of a split file (nested splits also hold inner folds)."""
    split, _ = read_split(split_path)
    outer = split[split["inner"] < 0] if "inner" in split.columns else split
    return sorted(int(f) for f in outer["fold"].unique())


def _log_parent(
    client: MlflowClient, cv: CrossValidation, pooled: pd.DataFrame, classes: list[str], level: str
) -> None:
    run = cv.parent_run_id
    for name, values in cv.summary.items():
        client.log_metric(run, f"cv_{name}_mean", values["mean"])
        client.log_metric(run, f"cv_{name}_sd", values["sd"])
    for row in cv.table.itertuples():
        for suffix, value in (("", row.value), ("_low", row.low), ("_high", row.high)):
            if pd.notna(value):
                client.log_metric(run, f"pooled_{row.metric}{suffix}", float(value))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cv.table.to_csv(folder / "metrics_with_ci.csv", index=False)
        pooled.to_parquet(folder / "predictions_pooled_test.parquet", index=False)
        (folder / "cv_summary.json").write_text(json.dumps(cv.summary, indent=2))
        (folder / "cv_summary.txt").write_text(format_summary(cv.summary))
        for path in folder.iterdir():
            client.log_artifact(run, str(path), artifact_path="cv")
        for path in fit_plots(pooled, classes, folder / "plots", level=level):
            client.log_artifact(run, str(path), artifact_path="plots")
    client.set_terminated(run, status="FINISHED")


def format_summary(summary: dict[str, dict[str, float]]) -> str:
    """'auroc 0.78 ± 0.10' lines, in the order of TABLE_METRICS."""
    names = [m for m in TABLE_METRICS if m in summary]
    return "\n".join(f"{m} {format_mean_sd(summary[m]['mean'], summary[m]['sd'])}" for m in names) + "\n"


def register_best_fold(
    fold_runs: Sequence[FoldRun],
    name: str,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    margin: float | None = None,
    alpha: float = 0.05,
) -> RegisteredModel:
    """Register the model of the fold that scored best on its own validation patients.

    The first version of ``name`` becomes champion; a later one is a
    challenger that faces the gate: it is compared with the current champion
    on the challenger's held-out test patients (paired, same patients). That
    is a fair test when the champion was trained on the same split (its
    ``clinical.split_digest`` tag) and so never saw those patients either; a
    warning says so when the splits differ. Registering a run that is already
    registered under ``name`` returns that version (reruns register nothing new).
    """
    results = {run.fold: load_result(run.out) for run in fold_runs}
    best = max(results.values(), key=lambda r: r.best_score)
    run_id = next(run.run_id for run in fold_runs if run.fold == best.fold)
    _, split_meta = read_split(split_path)
    summary = summarize(list(results.values()))
    tags = {
        "clinical.cohort_digest": read_cohort_meta(cohort_dir)["digest"],
        "clinical.split_digest": split_meta["digest"],
        "clinical.fold": str(best.fold),
    }
    tags |= {f"val_{k}": f"{v:.4f}" for k, v in best.val_metrics.items() if k in TABLE_METRICS}
    tags |= {f"cv_{k}": format_mean_sd(v["mean"], v["sd"]) for k, v in summary.items() if k in TABLE_METRICS}
    champion_version = alias_version(name, CHAMPION)
    version, alias = register_run_model(run_id, name, tags=tags)
    registered = RegisteredModel(name, version, alias, run_id)
    if alias != CHALLENGER or champion_version in (None, version) or best.test_predictions is None:
        return registered
    champion_split = MlflowClient().get_model_version(name, champion_version).tags.get("clinical.split_digest")
    if champion_split != split_meta["digest"]:
        logger.warning("The champion was trained on another split; the gate's held-out patients may not be new to it.")
    champion = predict_registered(f"models:/{name}/{champion_version}", cohort_dir=cohort_dir, split_path=split_path,
                                  fold=best.fold, role="test")
    decision: GateDecision = decide_promotion(champion, best.test_predictions, best.classes,
                                              level=best.config.monitor_level, margin=margin, alpha=alpha)
    registered.alias = apply_gate(name, version, decision)
    registered.decision = {"promote": decision.promote, "reason": decision.reason, **decision.comparison.to_dict()}
    return registered


def load_registered(uri: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network and its spec (classes, kind, size) of a registered classifier, ready for ``predict``."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        spec = json.loads(next(local.rglob("classifier.json")).read_text())
        state = torch.load(next(local.rglob("weights.pt")), map_location="cpu", weights_only=True)
    return build_classifier(spec, state), spec


def predict_registered(
    uri: str, *, cohort_dir: str | Path, split_path: str | Path, fold: int, role: str = "test"
) -> pd.DataFrame:
    """Predictions of a registered classifier on one role of one fold (the predictions frame)."""
    model, spec = load_registered(uri)
    manifest = read_manifest(cohort_dir)
    split, _ = read_split(split_path)
    items = fold_items(split, fold)[role]
    labelled = set(manifest.loc[manifest["label"].notna() & (manifest["kind"] == spec["kind"]), "item_id"])
    size = spec["image_size"][0] if len(spec["image_size"]) == 1 else tuple(spec["image_size"])
    dataset = ManifestDataset(manifest, cohort_dir, items=[i for i in items if i in labelled], classes=spec["classes"],
                              transform=preset(spec["kind"], train=False, size=size))
    return predict(model, dataset)

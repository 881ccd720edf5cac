"""Prefect flows: cohort → split and audit → pretraining → cross-validated fine-tuning → evaluation → champion.

Flows and tasks hold no logic of their own: each task calls one function of
``clinical`` and passes paths, digests and run ids onward, never tensors.
Caching is keyed by content digests carried as task inputs — ingest by the
sources' fingerprint, the split by the cohort digest, pretraining by the
cohort digest, each fold by the split digest and the recipe — so a rerun
with unchanged inputs reuses every result. Training tasks carry the ``gpu``
tag, so a tag concurrency limit (``prefect concurrency-limit create gpu 1``)
bounds how many folds share an accelerator.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.tasks import exponential_backoff

from clinical.cohort import read_manifest
from clinical.ingest import ingest, sources_fingerprint
from clinical.models.pretraining import pretrain
from clinical.splits import audit_split, format_report, read_split, split_manifest, write_split
from clinical.tracking import (
    FoldRun,
    finish_cross_validation,
    format_summary,
    outer_folds,
    register_best_fold,
    run_url,
    start_cross_validation,
    train_fold,
)
from clinical.training import TrainConfig
from pipelines.pacs import pull_flow
from pipelines.settings import PipelineSettings

__all__ = [
    "cohort_to_champion",
    "evaluate_flow",
    "ingest_flow",
    "pretrain_flow",
    "register_flow",
    "split_flow",
    "train_flow",
]

#: Same inputs (digests, paths, options) and same task code: the stored result is reused.
BY_CONTENT = INPUTS + TASK_SOURCE

_IO_RETRIES = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=10), "retry_jitter_factor": 0.5}


# -- tasks -------------------------------------------------------------------------------------------------------


@task(name="fingerprint sources", retries=2, retry_delay_seconds=5)
def fingerprint_task(sources: list[str], labels: str | None, sites: str | None) -> str:
    return sources_fingerprint(sources, labels=labels, sites=sites)


@task(name="ingest", cache_policy=BY_CONTENT, persist_result=True, **_IO_RETRIES)
def ingest_task(
    sources: list[str], cohort: str, *, labels: str | None, sites: str | None, options: dict[str, Any],
    workers: int | None, fingerprint: str,
) -> dict[str, Any]:
    report = ingest(sources, cohort, labels=labels, sites=sites, workers=workers, **options)
    get_run_logger().info(report.summary())
    return {"cohort": cohort, "digest": report.digest, "found": report.found, "ingested": report.ingested,
            "rejected": report.rejected, "items": report.items}


@task(name="split", cache_policy=BY_CONTENT, persist_result=True)
def split_task(cohort: str, out: str, *, cohort_digest: str, folds: int, seed: int, by: str) -> dict[str, Any]:
    split = split_manifest(read_manifest(cohort), folds=folds, seed=seed, by=by)
    meta = write_split(split, out, cohort_digest=cohort_digest)
    return {"split": out, "digest": meta["digest"]}


@task(name="audit", cache_policy=BY_CONTENT, persist_result=True)
def audit_task(cohort: str, split: str, out: str, *, split_digest: str, inflation: bool) -> dict[str, Any]:
    table, meta = read_split(split)
    report = audit_split(read_manifest(cohort), table, cohort, meta=meta, inflation=inflation)
    Path(out).write_text(json.dumps(report, indent=2, default=str))
    create_markdown_artifact(f"```\n{format_report(report)}\n```", key="leakage-audit", description="Leakage audit")
    return {"report": out}


@task(name="pretrain", tags=["gpu"], cache_policy=BY_CONTENT, persist_result=True)
def pretrain_task(
    cohort: str, out: str, *, cohort_digest: str, method: str, model: str, epochs: int, batch_size: int,
    size: list[int], seed: int, device: str,
) -> str:
    pretrain(cohort, method=method, model=model, epochs=epochs, batch_size=batch_size, size=size, seed=seed,
             device=device, out=out)
    return out


@task(name="open cross-validation run", cache_policy=BY_CONTENT, persist_result=True, **_IO_RETRIES)
def start_cv_task(recipe: dict[str, Any], cohort: str, split: str, *, split_digest: str, experiment: str) -> str:
    return start_cross_validation(TrainConfig.build(**recipe), cohort_dir=cohort, split_path=split,
                                  experiment=experiment)


@task(name="train fold", tags=["gpu"], cache_policy=BY_CONTENT, persist_result=True)
def train_fold_task(
    fold: int, *, recipe: dict[str, Any], cohort: str, split: str, split_digest: str, out: str, experiment: str,
    parent_run_id: str,
) -> dict[str, Any]:
    run = train_fold(TrainConfig.build(**recipe), cohort_dir=cohort, split_path=split, fold=fold,
                     out=str(Path(out) / f"fold-{fold}"), experiment=experiment, parent_run_id=parent_run_id)
    return {"fold": run.fold, "run_id": run.run_id, "out": run.out}


@task(name="evaluate", cache_policy=BY_CONTENT, persist_result=True, **_IO_RETRIES)
def evaluate_task(parent_run_id: str, fold_runs: list[dict[str, Any]], cohort: str, split: str, n_boot: int) -> dict:
    cv = finish_cross_validation(parent_run_id, [FoldRun(**r) for r in fold_runs], cohort_dir=cohort,
                                 split_path=split, n_boot=n_boot)
    records = cv.table.round(4).to_dict(orient="records")
    caption = f"Pooled out-of-fold metrics with 95% patient-bootstrap CIs; over folds:\n\n{format_summary(cv.summary)}"
    create_table_artifact(records, key="metrics-with-ci", description=caption)
    create_link_artifact(run_url(parent_run_id), link_text="MLflow run", key="mlflow-run")
    return {"parent_run_id": parent_run_id, "table": records, "summary": cv.summary}


@task(name="register", **_IO_RETRIES)
def register_task(
    fold_runs: list[dict[str, Any]], name: str, cohort: str, split: str, margin: float | None
) -> dict[str, Any]:
    registered = register_best_fold([FoldRun(**r) for r in fold_runs], name, cohort_dir=cohort, split_path=split,
                                    margin=margin)
    return {"name": registered.name, "version": registered.version, "alias": registered.alias,
            "run_id": registered.run_id, "decision": registered.decision}


# -- flows -------------------------------------------------------------------------------------------------------


@flow(name="ingest")
def ingest_flow(settings: PipelineSettings) -> dict[str, Any]:
    """Sources → cohort folder (manifest, rejections, cached arrays); skipped when the sources did not change."""
    if settings.pacs is not None:
        return pull_flow(settings)
    fingerprint = fingerprint_task(settings.sources, settings.labels, settings.sites)
    return ingest_task(settings.sources, settings.path("cohort"), labels=settings.labels, sites=settings.sites,
                       options=settings.ingest_options, workers=settings.ingest_workers, fingerprint=fingerprint)


@flow(name="split")
def split_flow(settings: PipelineSettings, cohort: dict[str, Any]) -> dict[str, Any]:
    """Patient-level folds and the leakage audit of the cohort."""
    split = split_task(cohort["cohort"], settings.path("split.parquet"), cohort_digest=cohort["digest"],
                       folds=settings.folds, seed=settings.seed, by=settings.split_by)
    audit_task(cohort["cohort"], split["split"], settings.path("audit.json"), split_digest=split["digest"],
               inflation=settings.audit_inflation)
    return split


@flow(name="pretrain")
def pretrain_flow(settings: PipelineSettings, cohort: dict[str, Any]) -> str | None:
    """A self-supervised backbone from the cohort's images (labels unused); None when pretraining is off."""
    if settings.pretrain_method is None:
        return None
    recipe = settings.recipe(pretrained=None)
    return pretrain_task(cohort["cohort"], settings.path("backbone.pt"), cohort_digest=cohort["digest"],
                         method=settings.pretrain_method, model=recipe.model, epochs=settings.pretrain_epochs,
                         batch_size=settings.pretrain_batch_size, size=list(recipe.image_size), seed=settings.seed,
                         device=recipe.device)


@flow(name="train")
def train_flow(settings: PipelineSettings, cohort: dict[str, Any], split: dict[str, Any],
               backbone: str | None) -> dict[str, Any]:
    """One model per fold (mapped tasks, tagged ``gpu``) under one MLflow parent run."""
    recipe = settings.recipe(pretrained=backbone).model_dump(mode="json")
    parent = start_cv_task(recipe, cohort["cohort"], split["split"], split_digest=split["digest"],
                           experiment=settings.experiment)
    folds = outer_folds(split["split"])
    static = {"recipe": recipe, "cohort": cohort["cohort"], "split": split["split"], "split_digest": split["digest"],
              "out": settings.path("runs", split["digest"][:12]), "experiment": settings.experiment,
              "parent_run_id": parent}
    futures = train_fold_task.map(folds, **{name: unmapped(value) for name, value in static.items()})
    return {"parent_run_id": parent, "fold_runs": [f.result() for f in futures]}


@flow(name="evaluate")
def evaluate_flow(settings: PipelineSettings, cohort: dict[str, Any], split: dict[str, Any],
                  training: dict[str, Any]) -> dict[str, Any]:
    """The metric table with patient-bootstrap CIs and the mean ± SD over folds, logged and shown as artifacts."""
    return evaluate_task(training["parent_run_id"], training["fold_runs"], cohort["cohort"], split["split"],
                         settings.n_boot)


@flow(name="register")
def register_flow(settings: PipelineSettings, cohort: dict[str, Any], split: dict[str, Any],
                  training: dict[str, Any]) -> dict[str, Any]:
    """Register the best fold's model; the first version is champion, later ones pass the gate or stay challenger."""
    return register_task(training["fold_runs"], settings.model_name, cohort["cohort"], split["split"],
                         settings.gate_margin)


@flow(name="cohort-to-champion", log_prints=True, timeout_seconds=int(timedelta(days=3).total_seconds()))
def cohort_to_champion(settings: PipelineSettings) -> dict[str, Any]:
    """The whole pipeline: ingest → split and audit → pretrain → train folds → evaluate → register."""
    cohort = ingest_flow(settings)
    split = split_flow(settings, cohort)
    backbone = pretrain_flow(settings, cohort)
    training = train_flow(settings, cohort, split, backbone)
    evaluation = evaluate_flow(settings, cohort, split, training)
    registered = register_flow(settings, cohort, split, training)
    return {"cohort": cohort, "split": split, "backbone": backbone, "evaluation": evaluation, "model": registered}

"""Prefect flows: cohort → split and audit → pretraining → cross-validated fine-tuning → evaluation → champion.

Flows and tasks hold no logic of their own: each task calls one function of
``clinical`` and passes paths, digests and run ids onward, never tensors.
Caching is keyed by content digests carried as task inputs — ingest by the
sources' fingerprint, the split by the cohort digest, pretraining by the
cohort digest, each fold by the split digest and the recipe — so a rerun
with unchanged inputs reuses every result. Results persist as JSON (``result_serializer="json"``), never
cloudpickle; Prefect still honours the serializer a stored record names, so keep the result store writable by
the pipeline alone. Training tasks carry the ``gpu`` tag, so a tag concurrency limit
(``prefect concurrency-limit create gpu 1``) bounds how many folds share an accelerator.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.tasks import exponential_backoff

from clinical.ingest import sources_fingerprint
from clinical.splits import format_report, outer_folds, read_split
from clinical.workflows import (
    FoldRun,
    MlflowTracker,
    TrainConfig,
    audit_cohort,
    fit_final_model,
    format_summary,
    ingest_cohort,
    open_cross_validation,
    pool_folds,
    pretrain,
    read_cross_validation,
    register_model,
    split_cohort,
    train_fold,
)
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


@task(name="ingest", cache_policy=BY_CONTENT, persist_result=True, result_serializer="json", **_IO_RETRIES)
def ingest_task(
    sources: list[str], cohort: str, *, labels: str | None, sites: str | None, options: dict[str, Any],
    workers: int | None, fingerprint: str,
) -> dict[str, Any]:
    report = ingest_cohort(sources, cohort, labels=labels, sites=sites, workers=workers, **options)
    get_run_logger().info(report.summary())
    return {"cohort": cohort, "digest": report.digest, "found": report.found, "ingested": report.ingested,
            "rejected": report.rejected, "skipped": report.skipped, "items": report.items}


@task(name="split", cache_policy=BY_CONTENT, persist_result=True, result_serializer="json")
def split_task(cohort: str, out: str, *, cohort_digest: str, folds: int, seed: int, by: str,
               gate_size: float) -> dict[str, Any]:
    meta = split_cohort(cohort, out, folds=folds, seed=seed, by=by, gate_size=gate_size)
    return {"split": out, "digest": meta["digest"]}


@task(name="audit", cache_policy=BY_CONTENT, persist_result=True, result_serializer="json")
def audit_task(cohort: str, split: str, out: str, *, split_digest: str, inflation: bool) -> dict[str, Any]:
    report = audit_cohort(cohort, split, out, inflation=inflation)
    create_markdown_artifact(f"```\n{format_report(report)}\n```", key="leakage-audit", description="Leakage audit")
    return {"report": out}


@task(name="pretrain", tags=["gpu"], cache_policy=BY_CONTENT, persist_result=True, result_serializer="json")
def pretrain_task(
    cohort: str, out: str, *, cohort_digest: str, method: str, model: str, epochs: int, batch_size: int,
    size: list[int], seed: int, device: str,
) -> str:
    pretrain(cohort, method=method, model=model, epochs=epochs, batch_size=batch_size, size=size, seed=seed,
             device=device, out=out)
    return out


@task(name="open cross-validation run", cache_policy=BY_CONTENT, persist_result=True, result_serializer="json",
      **_IO_RETRIES)
def start_cv_task(recipe: dict[str, Any], cohort: str, split: str, *, split_digest: str, experiment: str) -> dict:
    tracker = open_cross_validation(TrainConfig.build(**recipe), cohort_dir=cohort, split_path=split,
                                    tracker=MlflowTracker(experiment))
    return tracker.to_dict()


@task(name="train fold", tags=["gpu"], cache_policy=BY_CONTENT, persist_result=True, result_serializer="json")
def train_fold_task(
    fold: int, *, recipe: dict[str, Any], cohort: str, split: str, split_digest: str, out: str,
    tracker: dict[str, Any],
) -> dict[str, Any]:
    run = train_fold(TrainConfig.build(**recipe), cohort_dir=cohort, split_path=split, fold=fold,
                     out=str(Path(out) / f"fold-{fold}"), tracker=MlflowTracker(**tracker))
    return asdict(run)


@task(name="evaluate", cache_policy=BY_CONTENT, persist_result=True, result_serializer="json", **_IO_RETRIES)
def evaluate_task(tracker: dict[str, Any], fold_runs: list[dict[str, Any]], cohort: str, split: str, out: str,
                  n_boot: int) -> dict:
    cv = pool_folds([FoldRun(**r) for r in fold_runs], cohort_dir=cohort, split_path=split, out=out,
                    tracker=MlflowTracker(**tracker), n_boot=n_boot)
    records = cv.table.round(4).to_dict(orient="records")
    caption = f"Pooled out-of-fold metrics with 95% patient-bootstrap CIs; over folds:\n\n{format_summary(cv.summary)}"
    create_table_artifact(records, key="metrics-with-ci", description=caption)
    create_link_artifact(MlflowTracker(**tracker).parent_url(), link_text="MLflow run", key="mlflow-run")
    return {"parent_run_id": tracker["parent_run_id"], "tracker": tracker, "out": out, "table": records,
            "summary": cv.summary}


@task(name="final model", tags=["gpu"], cache_policy=BY_CONTENT, persist_result=True, result_serializer="json")
def final_model_task(tracker: dict[str, Any], out: str, cohort: str, split: str, *, split_digest: str,
                     how: str) -> dict[str, Any]:
    cv = fit_final_model(read_cross_validation(out), cohort_dir=cohort, split_path=split, how=how,
                         tracker=MlflowTracker(**tracker))
    return {"out": out, "final": asdict(cv.final), "how": cv.final_how}


@task(name="register", **_IO_RETRIES)
def register_task(out: str, name: str, cohort: str, split: str, margin: float | None) -> dict[str, Any]:
    registered = register_model(read_cross_validation(out), name, cohort_dir=cohort, split_path=split,
                                margin=margin)
    return asdict(registered)


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
                       folds=settings.folds, seed=settings.seed, by=settings.split_by, gate_size=settings.gate_size)
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
    tracker = start_cv_task(recipe, cohort["cohort"], split["split"], split_digest=split["digest"],
                            experiment=settings.experiment)
    out = settings.path("runs", split["digest"][:12])
    folds = outer_folds(read_split(split["split"])[0])
    static = {"recipe": recipe, "cohort": cohort["cohort"], "split": split["split"], "split_digest": split["digest"],
              "out": out, "tracker": tracker}
    futures = train_fold_task.map(folds, **{name: unmapped(value) for name, value in static.items()})
    return {"tracker": tracker, "out": out, "fold_runs": [f.result() for f in futures]}


@flow(name="evaluate")
def evaluate_flow(settings: PipelineSettings, cohort: dict[str, Any], split: dict[str, Any],
                  training: dict[str, Any]) -> dict[str, Any]:
    """The metric table with patient-bootstrap CIs and the mean ± SD over folds, logged and shown as artifacts."""
    return evaluate_task(training["tracker"], training["fold_runs"], cohort["cohort"], split["split"],
                         training["out"], settings.n_boot)


@flow(name="register")
def register_flow(settings: PipelineSettings, cohort: dict[str, Any], split: dict[str, Any],
                  evaluation: dict[str, Any]) -> dict[str, Any]:
    """Make the final model (a refit by default) and register it; later versions pass the gate or stay challenger."""
    final_model_task(evaluation["tracker"], evaluation["out"], cohort["cohort"], split["split"],
                     split_digest=split["digest"], how=settings.final_model)
    return register_task(evaluation["out"], settings.model_name, cohort["cohort"], split["split"],
                         settings.gate_margin)


@flow(name="cohort-to-champion", log_prints=True, timeout_seconds=int(timedelta(days=3).total_seconds()))
def cohort_to_champion(settings: PipelineSettings) -> dict[str, Any]:
    """The whole pipeline: ingest → split and audit → pretrain → train folds → evaluate → register."""
    cohort = ingest_flow(settings)
    split = split_flow(settings, cohort)
    backbone = pretrain_flow(settings, cohort)
    training = train_flow(settings, cohort, split, backbone)
    evaluation = evaluate_flow(settings, cohort, split, training)
    registered = register_flow(settings, cohort, split, evaluation)
    return {"cohort": cohort, "split": split, "backbone": backbone, "evaluation": evaluation, "model": registered}

"""Prefect task and flow that pull new studies from the configured PACS and ingest them into the cohort.

``ingest_flow`` runs :func:`pull_flow` instead of a folder ingest when ``settings.pacs`` is set, so
every deployment of ``cohort_to_champion`` (the nightly ones included) asks the PACS for new studies
first; :func:`predict_flow` sends the champion's prediction of each new study back as a DICOM SR.
Nothing is cached by Prefect here: the PACS changes between runs, and the pull itself is
incremental (studies already fetched are skipped). A PACS that stops answering fails the task,
which Prefect retries with backoff; each retry resumes where the last one stopped.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff

from clinical.ingest.pacs import pull
from clinical.workflows import CHAMPION, predict_to_pacs
from pipelines.settings import PipelineSettings

__all__ = ["predict_flow", "predict_task", "pull_flow", "pull_task"]


@task(name="pull from PACS", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=30),
      retry_jitter_factor=0.5, timeout_seconds=12 * 3600)
def pull_task(
    pacs: str, cohort: str, *, since: str | None, until: str | None, modalities: list[str],
    accessions: str | None, patients: str | None, labels: str | None, sites: str | None,
    options: dict[str, Any], workers: int | None,
) -> dict[str, Any]:
    """Pull and ingest; returns what ``ingest_task`` returns plus the pull counts (no identifiers)."""
    report = pull(pacs, cohort, since=since, until=until, modalities=modalities, accessions_csv=accessions,
                  patients_csv=patients, labels=labels, sites=sites, workers=workers, progress=False, **options)
    get_run_logger().info(report.summary())
    ingested = report.ingest
    return {"cohort": cohort, "digest": ingested.digest, "found": ingested.found, "ingested": ingested.ingested,
            "rejected": ingested.rejected, "skipped": ingested.skipped, "items": ingested.items,
            "fetched": report.fetched, "failed_studies": len(report.failed)}


@flow(name="pull")
def pull_flow(settings: PipelineSettings) -> dict[str, Any]:
    """PACS → cohort folder: new studies matching the settings' query, ingested like a folder."""
    return pull_task(settings.pacs, settings.path("cohort"), since=settings.pacs_since, until=settings.pacs_until,
                     modalities=settings.pacs_modalities, accessions=settings.pacs_accessions,
                     patients=settings.pacs_patients, labels=settings.labels, sites=settings.sites,
                     options=settings.ingest_options, workers=settings.ingest_workers)


@task(name="predict into PACS", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=30),
      retry_jitter_factor=0.5, timeout_seconds=12 * 3600)
def predict_task(pacs: str, model_uri: str, staging: str, *, since: str | None, until: str | None,
                 modalities: list[str]) -> dict[str, Any]:
    """New studies → predictions → SRs stored in their studies; returns counts (no identifiers)."""
    results = predict_to_pacs(pacs, model_uri, staging=staging, since=since, until=until,
                              modalities=tuple(modalities))
    get_run_logger().info("%d new studies predicted with %s; their SRs are stored.", len(results), model_uri)
    return {"model": model_uri, "predicted": len(results), "instances": sum(r.instances for r in results)}


@flow(name="predict into PACS")
def predict_flow(settings: PipelineSettings, model_name: str) -> dict[str, Any]:
    """PACS → ``models:/NAME@champion`` → a DICOM SR in each new study (staging under ``WORKDIR/predictions.pacs``)."""
    return predict_task(settings.pacs, f"models:/{model_name}@{CHAMPION}", settings.path("predictions.pacs"),
                        since=settings.pacs_since, until=settings.pacs_until, modalities=settings.pacs_modalities)

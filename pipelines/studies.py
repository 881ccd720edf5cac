"""Prefect flow of the six studies: ``study_flow("petct", out=...)``, one deployment per study in prefect.yaml.

The flow calls :func:`clinical.workflows.run_study` in one task (its arms share the cohort and split it
makes, so they are not split into tasks here) and publishes the study's table as a Markdown artifact and
its MLflow run as a link. The task carries the ``gpu`` tag, like the training tasks of
``cohort_to_champion``. Its result is the table's location, its digest-free summary and the MLflow run:
paths and numbers, no identifiers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from clinical.workflows import MlflowTracker, run_study

__all__ = ["study_flow", "study_task"]


@task(name="study", tags=["gpu"], persist_result=True, result_serializer="json")
def study_task(name: str, out: str, *, size: str, cohort: str | None, seed: int, experiment: str | None,
               options: dict[str, Any] | None = None, ray_address: str | None = None) -> dict[str, Any]:
    """Run every arm of the study; return where the table is and its MLflow run."""
    tracker = MlflowTracker(experiment) if experiment else None
    result = run_study(name, out, size=size, cohort=cohort, seed=seed, tracker=tracker, ray_address=ray_address,
                       **(options or {}))
    create_markdown_artifact(result.markdown, key=f"study-{name}", description=f"Study {name}: arms × metrics")
    get_run_logger().info("Study %s finished: %s", name, result.out / "table.md")
    return {"study": name, "table": str(result.out / "table.md"), "figure": str(result.figure),
            "arms": [arm.name for arm in result.arms], "run_id": result.run_id}


@flow(name="study", log_prints=True, timeout_seconds=int(timedelta(days=2).total_seconds()))
def study_flow(name: str, out: str, size: str = "tiny", cohort: str | None = None, seed: int = 0,
               experiment: str | None = "clinical-studies", options: dict[str, Any] | None = None,
               ray_address: str | None = None) -> dict[str, Any]:
    """One study on its synthetic analogue (``size``) or on an ingested ``cohort``; see ``clinical study``.

    ``options``: the study's own settings, as ``clinical study --option`` (e.g. ``{"ct_signal": false}``).
    ``ray_address``: train every arm's folds on that Ray cluster (``clinical study --ray``).
    """
    return study_task(name, out, size=size, cohort=cohort, seed=seed, experiment=experiment, options=options,
                      ray_address=ray_address)

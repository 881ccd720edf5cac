"""Prefect flow of whole slides from weak labels: ``mil_flow(cohort, split, out)``, ``clinical mil`` as a pipeline.

One task per fold calls :func:`clinical.workflows.train_slide_mil` (tile embeddings from the cohort's
digest-keyed cache, then attention MIL and tile aggregation scored per slide with patient CIs), so folds
are retried and scheduled on their own; the flow publishes the slide-level AUROC of every method and fold
as a table artifact. The tasks carry the ``gpu`` tag like the training tasks of ``cohort_to_champion``
(the embedding pass is the heavy part). Results are paths and numbers, no identifiers.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from clinical.workflows import MlflowTracker, train_slide_mil

__all__ = ["mil_flow", "mil_task"]


@task(name="slide MIL", tags=["gpu"], retries=1, persist_result=True, result_serializer="json")
def mil_task(cohort: str, split: str, out: str, *, fold: int, backbone: str, pretrained: str | None,
             image_size: int, steps: int, n_boot: int, seed: int, device: str, experiment: str | None
             ) -> dict[str, Any]:
    """Attention MIL and tile aggregation on one fold; return each method's slide AUROC with its CI."""
    result = train_slide_mil(cohort, split, out=out, backbone=backbone, pretrained=pretrained, image_size=image_size,
                             fold=fold, steps=steps, n_boot=n_boot, seed=seed, device=device,
                             tracker=MlflowTracker(experiment) if experiment else None)
    auroc = result.table[result.table["metric"] == "auroc"]
    get_run_logger().info("fold %d slide AUROC: %s", fold, ", ".join(
        f"{row.method} {row.value:.3f}" for row in auroc.itertuples()))
    return {"fold": fold, "out": str(result.out), "embeddings": result.embeddings_digest, "run_id": result.run_id,
            "auroc": {row.method: {"value": float(row.value), "low": float(row.low), "high": float(row.high)}
                      for row in auroc.itertuples()},
            "retrieval": {str(k): float(v) for k, v in result.retrieval.items()}}


@flow(name="slide MIL", log_prints=True)
def mil_flow(cohort: str, split: str, out: str, folds: list[int] | None = None, backbone: str = "densenet121",
             pretrained: str | None = None, image_size: int = 224, steps: int = 300, n_boot: int = 1000,
             seed: int = 0, device: str = "cpu", experiment: str | None = None) -> list[dict[str, Any]]:
    """Each fold of ``split`` (default: fold 0) into ``OUT/fold-<k>``; see ``clinical mil``."""
    results = [mil_task(cohort, split, f"{out}/fold-{fold}", fold=fold, backbone=backbone, pretrained=pretrained,
                        image_size=image_size, steps=steps, n_boot=n_boot, seed=seed, device=device,
                        experiment=experiment) for fold in (folds or [0])]
    create_table_artifact(key="slide-mil", description="slide-level test AUROC (95% patient-bootstrap CI)", table=[
        {"fold": r["fold"], "method": method, **scores} for r in results for method, scores in r["auroc"].items()])
    return results

"""Prefect flows for federated training and site-level fine-tuning.

Each task calls one function of ``clinical.federated`` and passes paths and run
ids onward; the flows hold no logic. ``federated_flow`` runs the federation on
Flower's simulation engine (one process, quick experiments) or on its
deployment engine (a SuperLink and one SuperNode per site on this machine, as
``infra/flower.sh`` starts them), then tracks and registers the global model in
MLflow. ``site_finetune_flow`` adapts the champion to one site and registers it
as ``site-<name>`` only when it is better there.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from prefect import flow, task

from clinical.workflows import RunSettings, TrainConfig, federate, site_finetune, track_federation

__all__ = ["federated_flow", "site_finetune_flow"]


@task(name="federate", tags=["gpu"], result_serializer="json")
def federate_task(run_config: dict[str, Any], cohort: str, split: str, sites: list[str], out: str, engine: str,
                  workdir: str) -> dict[str, Any]:
    return federate(RunSettings.from_run_config(run_config), cohort_dir=cohort, split_path=split, sites=sites,
                    out=out, engine=engine, workdir=workdir)


@task(name="track and register the global model", retries=3, retry_delay_seconds=10, result_serializer="json")
def track_task(out: str, cohort: str, split: str, name: str, experiment: str) -> dict[str, Any]:
    return asdict(track_federation(out, cohort_dir=cohort, split_path=split, name=name, experiment=experiment))


@task(name="site fine-tune", tags=["gpu"], result_serializer="json")
def site_finetune_task(
    site: str, model: str, cohort: str, split: str, recipe: dict[str, Any], out: str, experiment: str,
    margin: float | None,
) -> dict[str, Any]:
    return asdict(site_finetune(site, model, cohort, split, config=TrainConfig.build(**recipe), out=out,
                                experiment=experiment, margin=margin))


@flow(name="federated")
def federated_flow(
    cohort: str,
    split: str,
    sites: list[str],
    workdir: str,
    *,
    train: dict[str, Any],
    classes: list[str],
    rounds: int = 10,
    strategy: Literal["fedavg", "fedprox"] = "fedavg",
    proximal_mu: float = 0.0,
    min_nodes: int = 2,
    engine: Literal["simulation", "deployment"] = "simulation",
    name: str = "clinical-federated",
    experiment: str = "clinical",
) -> dict[str, Any]:
    """Federate ``sites`` of one cohort and split, then track and register the global model.

    ``train`` is the recipe (a :class:`~clinical.training.TrainConfig` as a dict; ``epochs`` are
    local epochs per round, ``unfreeze_every`` rounds per freezing stage).
    """
    out = str(Path(workdir) / "federated")
    settings = RunSettings(train_config=TrainConfig.build(**train), classes=tuple(classes), num_rounds=rounds,
                           strategy=strategy, proximal_mu=proximal_mu, min_nodes=min_nodes, out_dir=out)
    summary = federate_task(settings.run_config(), cohort, split, sites, out, engine, str(Path(workdir) / "flower"))
    registered = track_task(out, cohort, split, name, experiment)
    return {"rounds": summary["rounds"], "registered": registered}


@flow(name="site fine-tune")
def site_finetune_flow(
    site: str,
    model: str,
    *,
    cohort: str,
    split: str,
    workdir: str,
    train: dict[str, Any] | None = None,
    margin: float | None = None,
    experiment: str = "clinical",
) -> dict[str, Any]:
    """Fine-tune ``model`` (``models:/NAME@champion``) on ``site``; register ``site-<name>`` only when better."""
    return site_finetune_task(site, model, cohort, split, dict(train or {}), str(Path(workdir) / "site-finetune"),
                              experiment, margin)

"""Federated training as a use case: run the federation, then track and register its global model like any fit.

:func:`federate` runs the sites on Flower's simulation engine (one process) or
its deployment engine (a SuperLink and a SuperNode per site on this machine).
The finished federation's ``global.pt`` is scored on every site's validation and
test patients, written as a fit's run folder (``checkpoints/best.pt``,
``result.json``, predictions, ``plots/bytes_per_round.png``), and given to the same
:class:`~clinical.tracking.MlflowCallback` a centralised fit reports to: rounds
are its epochs (with the bytes sent per round as metrics), and the servable
model is logged and registered.

It is the last round's model that is registered, not ``best_round.pt``: the best
round is picked on the sites' few validation patients, and on the measured
comparisons (``benchmarks/bench_federated.py``) the last round scored as well or better.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from matplotlib.figure import Figure

from clinical.cohort.manifest import cohort_digest, read_cohort_meta, read_manifest
from clinical.errors import ConfigurationError
from clinical.evaluation import save_figure, score
from clinical.federated.deployment import run_local_deployment
from clinical.federated.local import evaluate_site
from clinical.federated.settings import RunSettings, SiteSettings
from clinical.federated.simulation import simulate
from clinical.models import create_model
from clinical.splits import read_split
from clinical.tracking import MlflowCallback, register_run_model, save_classifier
from clinical.training import FitResult

__all__ = ["RegisteredFederation", "federate", "federated_result", "plot_bytes_per_round", "track_federation"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisteredFederation:
    """The MLflow run and registered version of a federated global model."""

    run_id: str
    name: str
    version: str
    alias: str
    test_metrics: dict[str, float]


def federate(
    settings: RunSettings,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    sites: list[str],
    out: str | Path,
    engine: Literal["simulation", "deployment"] = "simulation",
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Federate ``sites`` of one cohort and split; ``global.pt`` and ``federated.json`` go to ``out``.

    ``workdir`` holds the deployment engine's SuperLink and SuperNode state and logs
    (default: ``out/flower``). Returns the run's summary (bytes and metrics per round).

    Raises
    ------
    ConfigurationError
        For an unknown engine, or when the federation fails (the message says where its log is).
    """
    if engine == "simulation":
        return simulate(settings, cohort_dir=cohort_dir, split_path=split_path, sites=sites, out=out)
    if engine == "deployment":
        nodes = [SiteSettings(cohort_dir=str(cohort_dir), split_path=str(split_path), site=site) for site in sites]
        return run_local_deployment(replace(settings, out_dir=str(out)), nodes,
                                    workdir=workdir or Path(out) / "flower")
    raise ConfigurationError(f"engine must be 'simulation' or 'deployment'; got {engine!r}.")


def plot_bytes_per_round(summary: dict[str, Any]) -> Figure:
    """The bytes one site sent per round as a share of the full model, labelled with the groups that trained.

    The curve the freezing schedule buys: flat and low while only the top groups train,
    a step up each time the schedule unfreezes another group.
    """
    rounds = summary["rounds"]
    x = [r["round"] for r in rounds]
    y = [100 * r["bytes_per_site_fraction"] for r in rounds]
    figure = Figure(figsize=(6, 3.5))
    ax = figure.subplots()
    ax.step(x, y, where="mid", marker="o")
    ax.axhline(20, color="grey", linestyle="--", linewidth=1, label="a fifth of the model")
    for record, value in zip(rounds, y, strict=True):
        ax.annotate(f"{len(record['trainable_groups'])} group(s)", (record["round"], value), fontsize=7,
                    textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set(xlabel="round", ylabel="bytes per site (% of full model)", ylim=(0, 105), xticks=x,
           title=f"Bytes sent per round (full model {summary['full_model_bytes'] / 2**20:.1f} MiB)")
    ax.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure


def federated_result(
    out_dir: str | Path, *, cohort_dir: str | Path, split_path: str | Path, fold: int = 0
) -> FitResult:
    """A :class:`FitResult` of the global model in ``out_dir`` (a federated run's folder), scored on all sites.

    Writes ``checkpoints/best.pt`` and ``result.json`` with the predictions beside
    ``global.pt``, so the run folder reads like a fit's.
    """
    out = Path(out_dir)
    summary = json.loads((out / "federated.json").read_text())
    settings = RunSettings.from_run_config(summary["settings"])
    config = settings.train_config
    state = torch.load(out / "global.pt", weights_only=True)
    net = create_model(config.model, spatial_dims=config.spatial_dims, in_channels=config.in_channels,
                       num_classes=len(settings.classes))
    net.load_state_dict(state)
    manifest = read_manifest(cohort_dir)
    split, _ = read_split(split_path)
    kwargs = {"manifest": manifest, "cohort_dir": cohort_dir, "split": split, "fold": fold,
              "classes": settings.classes}
    val_metrics, val = evaluate_site(net, config, role="val", **kwargs)
    test_metrics, test = evaluate_site(net, config, role="test", **kwargs)
    save_figure(plot_bytes_per_round(summary), out / "plots" / "bytes_per_round.png")
    (out / "checkpoints").mkdir(exist_ok=True)
    torch.save({"model": state, "epoch": settings.num_rounds - 1, "classes": list(settings.classes),
                "config": config.model_dump(mode="json")}, out / "checkpoints" / "best.pt")
    history = [{"epoch": r["round"] - 1, **{k: v for k, v in r.items() if k != "round"}} for r in summary["rounds"]]
    result = FitResult(
        fold=fold, classes=list(settings.classes), best_epoch=settings.num_rounds - 1,
        best_score=float(val_metrics.get("auroc", float("nan"))), epochs_run=settings.num_rounds,
        stopped_early=False, history=history,
        val_metrics=score(val, list(settings.classes), level=config.monitor_level,
                                   aggregate=config.aggregate) if "auroc" in val_metrics else {},
        test_metrics=score(test, list(settings.classes), level=config.monitor_level,
                                   aggregate=config.aggregate) if "auroc" in test_metrics else {},
        val_predictions=val, test_predictions=test, config=config, out=out,
        extra={"federated": {"strategy": settings.strategy, "rounds": settings.num_rounds,
                             "full_model_bytes": summary["full_model_bytes"]}},
    )
    result.save()
    return result


def track_federation(
    out_dir: str | Path,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    name: str,
    experiment: str = "clinical",
    fold: int = 0,
) -> RegisteredFederation:
    """Log the federated run in ``out_dir`` to MLflow (rounds as epochs, bytes per round) and register its model.

    Needs a tracking server (``MLFLOW_TRACKING_URI``). The first version of ``name``
    becomes ``champion``, later ones ``challenger`` (see :func:`clinical.tracking.register_run_model`).
    """
    result = federated_result(out_dir, cohort_dir=cohort_dir, split_path=split_path, fold=fold)
    ingest_options = read_cohort_meta(cohort_dir).get("options", {})
    _, split_meta = read_split(split_path)
    federated = result.extra["federated"]
    callback = MlflowCallback(experiment, run_name=f"federated-{federated['strategy']}",
                              split_digest=split_meta["digest"], split_path=split_path,
                              tags={"clinical.federated": federated["strategy"]},
                              log_model=lambda fit: save_classifier(fit, Path(fit.out) / "model",
                                                                    ingest_options=ingest_options))
    manifest = read_manifest(cohort_dir)
    groups = json.loads((Path(out_dir) / "federated.json").read_text())["groups"]
    info = {"fold": fold, "classes": result.classes, "groups": groups, "n_train": 0,
            "n_val": len(result.val_predictions), "n_test": len(result.test_predictions), "device": "federated",
            "world_size": 1, "cohort_digest": cohort_digest(manifest), "out": str(result.out),
            "resumed_from_epoch": None}
    callback.on_fit_start(result.config, info)
    for record in result.history:
        metrics: dict[str, Any] = {"bytes_per_site": max(record["bytes_sent"].values(), default=0),
                                   "bytes_sent_total": record["bytes_sent_total"],
                                   "bytes_fraction": record["bytes_per_site_fraction"],
                                   "sites_accepted": len(record["accepted"]), "sites_rejected": len(record["rejected"]),
                                   "sites_failed": len(record["failed"])}
        metrics |= {k.replace("-", "_"): v for k, v in record.get("evaluate_metrics", {}).items()}
        callback.on_epoch_end(record["epoch"], metrics, {"trainable_groups": record["trainable_groups"],
                                                         "stage": len(record["trainable_groups"]) - 1})
    callback.on_fit_end(result)
    version, alias = register_run_model(str(callback.run_id), name, tags={"clinical.federated": federated["strategy"]})
    logger.info("Federated model registered as %s version %s (%s).", name, version, alias)
    return RegisteredFederation(run_id=str(callback.run_id), name=name, version=version, alias=alias,
                                test_metrics=dict(result.test_metrics))

"""The MLflow side of the training callback protocol.

``fit(..., callbacks=[MlflowCallback(...)])`` logs the recipe, every epoch's
metrics with their step, which layer groups train and at what learning rate,
the cohort and split digests as dataset inputs, and at the end the metrics,
prediction tables, plots and the servable model. A parent run per
cross-validation holds one nested run per fold (:func:`start_parent_run`).

Failure policy, chosen so that hours of training are never lost to logging:
the run refuses to start when the server does not answer at the start
(:class:`~clinical.tracking.server.TrackingUnavailableError`); once started,
calls that fail are queued in an :class:`~clinical.tracking.outbox.Outbox`
and sent when the server is back, at the latest when the fit ends.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from clinical.cohort import code_digest
from clinical.evaluation.figures import save_plots
from clinical.tracking.outbox import Outbox
from clinical.tracking.server import require_tracking_server
from clinical.training.callbacks import BaseCallback
from clinical.training.config import TrainConfig
from clinical.training.result import FitResult

__all__ = ["MlflowCallback", "dataset_input", "flatten", "start_parent_run"]

logger = logging.getLogger(__name__)

#: MLflow keeps dataset digests in a 36-character column; the full digest goes in a tag beside it.
_DIGEST_CHARS = 32


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested configuration → MLflow params (``a.b = value``), values as strings."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


def dataset_input(name: str, digest: str, source: str | Path, context: str) -> DatasetInput:
    """A cohort or split as an MLflow dataset input: name, digest and where it lives."""
    dataset = MetaDataset(LocalArtifactDatasetSource(str(source)), name=name, digest=digest[:_DIGEST_CHARS])
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])


def start_parent_run(
    experiment: str, *, run_name: str, tags: Mapping[str, str] | None = None, tracking_uri: str | None = None
) -> str:
    """Create the parent run of a cross-validation and return its id (nested fold runs point to it)."""
    require_tracking_server(tracking_uri)
    client = MlflowClient(tracking_uri)
    run = client.create_run(_experiment_id(client, experiment), run_name=run_name, tags=dict(tags or {}))
    return run.info.run_id


class MlflowCallback(BaseCallback):
    """Log one fit to MLflow.

    Parameters
    ----------
    experiment
        Experiment name (created when missing).
    run_name
        Name shown in the UI; the fold is appended.
    parent_run_id
        The cross-validation's parent run (:func:`start_parent_run`); ``None`` for a lone run.
    split_digest, split_path
        The split the fit used, logged as a dataset input beside the cohort.
    log_model
        ``result -> folder`` that writes the servable model (e.g. with
        :func:`clinical.tracking.pyfunc.save_classifier`); the folder is logged as ``model``. ``None`` logs no model.
    flush_timeout
        Seconds to keep retrying at the end of the fit when the server is away.
    """

    def __init__(
        self,
        experiment: str = "clinical",
        *,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        tracking_uri: str | None = None,
        split_digest: str | None = None,
        split_path: str | Path | None = None,
        tags: Mapping[str, str] | None = None,
        log_model: Any = None,
        flush_timeout: float = 600.0,
    ) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.tracking_uri = tracking_uri
        self.split_digest = split_digest
        self.split_path = split_path
        self.tags = dict(tags or {})
        self.log_model = log_model
        self.flush_timeout = flush_timeout
        self.client: MlflowClient | None = None
        self.outbox: Outbox | None = None
        self.run_id: str | None = None

    # -- protocol ------------------------------------------------------------------------------------------------

    def on_fit_start(self, config: TrainConfig, info: dict[str, Any]) -> None:
        uri = require_tracking_server(self.tracking_uri)
        self.client = MlflowClient(uri)
        fold = info.get("fold")
        tags = {
            MLFLOW_RUN_NAME: f"{self.run_name or config.model}" + (f"-fold{fold}" if fold is not None else ""),
            "clinical.fold": str(fold),
            "clinical.classes": json.dumps(info.get("classes", [])),
            "clinical.cohort_digest": str(info.get("cohort_digest")),
            "clinical.device": str(info.get("device")),
            "clinical.code_digest": code_digest(),
            **self.tags,
        }
        if self.split_digest:
            tags["clinical.split_digest"] = self.split_digest
        if self.parent_run_id:
            tags[MLFLOW_PARENT_RUN_ID] = self.parent_run_id
        resumed = info.get("resumed_from_epoch")
        if resumed is not None:
            tags["clinical.resumed_from_epoch"] = str(resumed)
        run = self.client.create_run(_experiment_id(self.client, self.experiment), tags=tags)
        self.run_id = run.info.run_id
        spool = Path(info["out"]) / "mlflow_outbox.json" if info.get("out") else None
        self.outbox = Outbox(self.client, self.run_id, spool=spool)
        params = {**flatten(config.model_dump(mode="json"), "config."), **_counts(info)}
        self.outbox.send("log_batch", params=[{"key": k, "value": v[:6000]} for k, v in params.items()])
        self._log_inputs(info)
        logger.info("MLflow run %s (experiment %r)", self.run_id, self.experiment)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        values = {**metrics, "trainable_groups": len(state.get("trainable_groups", []))}
        batch = [
            {"key": _metric_key(k), "value": float(v), "timestamp": now, "step": epoch}
            for k, v in values.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        tags = [{"key": "clinical.stage", "value": str(state.get("stage"))}]
        self._send("log_batch", metrics=batch, tags=tags)
        schedule = json.dumps({"epoch": epoch, **state}, default=str)
        self._send("log_text", text=schedule, artifact_file=f"schedule/epoch_{epoch:03d}.json")

    def on_fit_end(self, result: FitResult) -> None:
        now = int(time.time() * 1000)
        final = {f"best_val_{k}": v for k, v in result.val_metrics.items()}
        final |= {f"test_{k}": v for k, v in result.test_metrics.items()}
        final["best_epoch"] = result.best_epoch
        batch = [
            {"key": _metric_key(k), "value": float(v), "timestamp": now, "step": result.best_epoch}
            for k, v in final.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        self._send("log_batch", metrics=batch)
        for name in ("config.json", "result.json", "predictions_val.parquet", "predictions_test.parquet"):
            path = Path(result.out) / name
            if path.is_file():
                self._send("log_artifact", local_path=str(path), artifact_path="fit")
        self._log_plots(result)
        if self.log_model is not None and self.run_id is not None:
            self._send("log_artifacts", local_dir=str(self.log_model(result)), artifact_path="model")
        self._send("set_terminated", status="FINISHED")
        if self.outbox is not None:
            self.outbox.drain(timeout=self.flush_timeout)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _send(self, call: str, **kwargs: Any) -> None:
        if self.outbox is not None:
            self.outbox.send(call, **kwargs)

    def _log_inputs(self, info: dict[str, Any]) -> None:
        datasets = []
        if info.get("cohort_digest"):
            datasets.append(dataset_input("cohort", info["cohort_digest"], info.get("cohort_dir", "cohort"), "train"))
        if self.split_digest:
            datasets.append(dataset_input("split", self.split_digest, self.split_path or "split", "split"))
        if datasets and self.client is not None and self.run_id is not None:
            try:
                self.client.log_inputs(self.run_id, datasets=datasets)
            except Exception as error:  # inputs are also in tags; never stop training for them
                logger.warning("Could not log dataset inputs (%s); digests remain in the run's tags.", error)

    def _log_plots(self, result: FitResult) -> None:
        """The fit's plots, and any other PNG the trainer left in the run's ``plots`` folder (e.g. bytes per round)."""
        frame = result.test_predictions if result.test_predictions is not None else result.val_predictions
        folder = Path(result.out) / "plots"
        # a refit on every development patient has no held-out items to plot
        made = (save_plots(frame, result.classes, folder, level=result.config.monitor_level,
                           aggregate=result.config.aggregate) if len(frame) else [])
        for path in sorted(set(made) | set(folder.glob("*.png"))):
            self._send("log_artifact", local_path=str(path), artifact_path="plots")


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def _counts(info: dict[str, Any]) -> dict[str, str]:
    return {f"data.{k}": str(info[k]) for k in ("n_train", "n_val", "n_test", "world_size") if k in info}


def _metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, '_', '-', '.', ' ', '/'; anything else becomes '_'."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)



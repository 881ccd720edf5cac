"""Where a use case's runs go in MLflow: a parent run per cross-validation, a nested run per fold.

:class:`MlflowTracker` is what the use cases in :mod:`clinical.workflows` take
as their optional ``tracker``: an untracked cross-validation writes the same
files (fold folders, pooled table, plots) and the tracker only sends them.
It is a small, plain object (experiment, parent run id, tracking URI), so it
travels between Prefect tasks as a dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from clinical.tracking.callback import MlflowCallback, start_parent_run
from clinical.tracking.pyfunc import save_classifier
from clinical.tracking.server import run_url
from clinical.training import TrainConfig

__all__ = ["MlflowTracker"]


@dataclass(frozen=True)
class MlflowTracker:
    """An MLflow experiment, and the parent run of the cross-validation being tracked (once opened).

    Parameters
    ----------
    experiment
        Experiment name (created when missing).
    parent_run_id
        Set by :meth:`open`; fold runs nest under it.
    study_run_id
        Set by :meth:`open_study`; every cross-validation's parent run then nests under it.
    tracking_uri
        ``None``: ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``.
    """

    experiment: str = "clinical"
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    study_run_id: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def pinned(self) -> MlflowTracker:
        """This tracker with its tracking URI fixed now, for processes that do not share this one's environment.

        A Ray worker does not see this process's ``MLFLOW_TRACKING_URI`` nor its working folder.
        """
        return replace(self, tracking_uri=self.tracking_uri or mlflow.get_tracking_uri())

    def open(self, config: TrainConfig, *, tags: Mapping[str, str], run_name: str | None = None) -> MlflowTracker:
        """A copy of this tracker with a new parent run (named after the recipe unless ``run_name``)."""
        tags = {**tags, "clinical.model": config.model, "clinical.schedule": config.schedule}
        if self.study_run_id is not None:
            tags[MLFLOW_PARENT_RUN_ID] = self.study_run_id
        parent = start_parent_run(self.experiment, run_name=run_name or f"{config.model}-{config.schedule}-cv",
                                  tags=tags, tracking_uri=self.tracking_uri)
        return replace(self, parent_run_id=parent)

    def open_study(self, name: str, *, tags: Mapping[str, str] | None = None) -> MlflowTracker:
        """A copy of this tracker with a new study run, under which each arm's runs nest."""
        study = start_parent_run(self.experiment, run_name=f"study-{name}",
                                 tags={**(tags or {}), "clinical.study": name}, tracking_uri=self.tracking_uri)
        return replace(self, study_run_id=study, parent_run_id=None)

    def log_study(self, folder: Path, *, table: pd.DataFrame) -> None:
        """Send a study's table, figure and record (the files of ``folder``) to its run, with each arm's pooled
        metrics as ``<arm>.<metric>``, and close the run."""
        if self.study_run_id is None:
            return
        client = MlflowClient(self.tracking_uri)
        for row in table.to_dict("records"):
            arm = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(row["arm"]))
            for column, value in row.items():
                if column.endswith(("_pooled", "_mean")) and isinstance(value, float) and math.isfinite(value):
                    client.log_metric(self.study_run_id, f"{arm}.{column}", value)
        for path in sorted(folder.iterdir()):
            if path.is_file():
                client.log_artifact(self.study_run_id, str(path), artifact_path="study")
        client.set_terminated(self.study_run_id, status="FINISHED")

    def parent_url(self) -> str | None:
        """Where a person opens the parent run (the UI page on a server, else its ``runs:/`` URI)."""
        return run_url(self.parent_run_id, tracking_uri=self.tracking_uri) if self.parent_run_id else None

    def fold_callback(
        self,
        *,
        split_path: str | Path,
        split_digest: str,
        ingest_options: Mapping[str, Any],
        run_name: str | None = None,
    ) -> MlflowCallback:
        """The callback that logs one fold's fit, nested under the parent run, with its servable model."""
        return MlflowCallback(
            self.experiment,
            run_name=run_name,
            parent_run_id=self.parent_run_id,
            tracking_uri=self.tracking_uri,
            split_digest=split_digest,
            split_path=split_path,
            log_model=lambda result: save_classifier(result, result.out / "model", ingest_options=dict(ingest_options)),
        )

    def log_pooled(self, folder: Path, *, summary: Mapping[str, Mapping[str, float]], table: pd.DataFrame) -> None:
        """Send what the cross-validation wrote to ``folder`` (files, ``plots/*.png``) to the parent run and close it.

        Metrics: ``cv_<name>_mean`` / ``_sd`` over folds and ``pooled_<name>`` with ``_low`` / ``_high``.
        """
        if self.parent_run_id is None:
            return
        client = MlflowClient(self.tracking_uri)
        run = self.parent_run_id
        for name, values in summary.items():
            client.log_metric(run, f"cv_{name}_mean", values["mean"])
            client.log_metric(run, f"cv_{name}_sd", values["sd"])
        for row in table.itertuples():
            for suffix, value in (("", row.value), ("_low", row.low), ("_high", row.high)):
                if pd.notna(value) and math.isfinite(float(value)):
                    client.log_metric(run, f"pooled_{row.metric}{suffix}", float(value))
        for path in sorted(folder.iterdir()):
            if path.is_file():
                client.log_artifact(run, str(path), artifact_path="cv")
        for path in sorted((folder / "plots").glob("*.png")):
            client.log_artifact(run, str(path), artifact_path="plots")
        client.set_terminated(run, status="FINISHED")

    def log_evaluation(self, folder: Path, *, metrics: Mapping[str, float], artifact_path: str) -> None:
        """Add a later evaluation of the parent run's models (files of ``folder`` and its ``plots/*.png``, metrics).

        The files go under ``artifact_path`` and the plots under ``plots/<artifact_path>``, beside the
        cross-validation's; a run still open (a new one) is closed, a finished one keeps its end time.
        """
        if self.parent_run_id is None:
            return
        client = MlflowClient(self.tracking_uri)
        run = self.parent_run_id
        for name, value in metrics.items():
            client.log_metric(run, name, float(value))
        for path in sorted(folder.iterdir()):
            if path.is_file():
                client.log_artifact(run, str(path), artifact_path=artifact_path)
        for path in sorted((folder / "plots").glob("*.png")):
            client.log_artifact(run, str(path), artifact_path=f"plots/{artifact_path}")
        if client.get_run(run).info.status == "RUNNING":
            client.set_terminated(run, status="FINISHED")

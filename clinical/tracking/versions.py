"""One registered version and what its runs hold: the recipe, the cross-validation, the data it came from.

A version (``models:/NAME@alias`` or ``models:/NAME/VERSION``) points to the run that made the model
(the final refit, or the best fold); that run's parent holds the cross-validation (``cv/``). The
report of a version (:func:`clinical.workflows.report_model`) is made from these files and logged
back beside them (``report/``), so every version carries its own report.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from clinical.errors import ConfigurationError

__all__ = ["RegisteredVersion", "download_version_files", "load_pyfunc", "log_version_report", "resolve_version"]

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
#: The version tag naming the report's path among the run's artifacts.
REPORT_TAG = "clinical.report"


@dataclass(frozen=True)
class RegisteredVersion:
    """A version of a registered model, its run and the run's parent (the cross-validation), as plain values."""

    name: str
    version: str
    run_id: str
    parent_run_id: str | None
    tags: dict[str, str]
    params: dict[str, str]
    started_ms: int
    ended_ms: int | None
    datasets: dict[str, str] = field(default_factory=dict)  # "cohort"/"split" → where it was when trained

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_version(uri: str, *, client: MlflowClient | None = None) -> RegisteredVersion:
    """The version ``uri`` names, with its run's tags, params, times and dataset inputs.

    Raises
    ------
    ConfigurationError
        For a URI that is not ``models:/NAME@alias`` or ``models:/NAME/VERSION``, or names no version.
    """
    match = _URI.match(uri)
    if match is None:
        raise ConfigurationError(f"A model is named 'models:/NAME@alias' or 'models:/NAME/VERSION'; got {uri!r}.")
    client = client or MlflowClient()
    name = match["name"]
    try:
        found = (client.get_model_version_by_alias(name, match["alias"]) if match["alias"]
                 else client.get_model_version(name, match["version"]))
    except MlflowException as error:
        raise ConfigurationError(f"The registry has no version {uri!r} ({error.error_code}).") from None
    run = client.get_run(found.run_id)
    datasets = _datasets(run)
    parent = run.data.tags.get(MLFLOW_PARENT_RUN_ID)
    split_digest = found.tags.get("clinical.split_digest")
    if parent and split_digest and run.data.tags.get("clinical.split_digest") != split_digest:
        # a refit trains on a development split made from the version's split: a fold run names the latter
        folds = client.search_runs([run.info.experiment_id], max_results=50, filter_string=(
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}' and tags.`clinical.split_digest` = '{split_digest}'"))
        datasets |= {k: v for k, v in _datasets(folds[0]).items() if k == "split"} if folds else {}
    return RegisteredVersion(
        name=name, version=str(found.version), run_id=found.run_id, parent_run_id=parent,
        tags={**run.data.tags, **found.tags}, params=dict(run.data.params), started_ms=run.info.start_time,
        ended_ms=run.info.end_time, datasets=datasets,
    )


def _datasets(run: Any) -> dict[str, str]:
    """Dataset name → the local path it was logged with (:func:`clinical.tracking.dataset_input`)."""
    return {entry.dataset.name: json.loads(entry.dataset.source or "{}").get("uri", "")
            for entry in run.inputs.dataset_inputs}


def download_version_files(version: RegisteredVersion, dest: str | Path) -> Path:
    """The run's ``fit/`` (recipe, result), its parent's ``cv/`` (pooled table, summary) and ``plots/``, in ``dest``.

    Raises
    ------
    ConfigurationError
        When the version's run has no parent cross-validation run (a model registered from a lone fit).
    """
    if version.parent_run_id is None:
        raise ConfigurationError(
            f"{version.uri} was not made by a tracked cross-validation (its run has no parent), so there is no "
            "cross-validated estimate to report; register it with clinical.workflows.register_model."
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for run, path in ((version.run_id, "fit"), (version.parent_run_id, "cv"), (version.parent_run_id, "plots")):
        mlflow.artifacts.download_artifacts(run_id=run, artifact_path=path, dst_path=str(dest))
    return dest


def log_version_report(version: RegisteredVersion, folder: str | Path, *, client: MlflowClient | None = None) -> str:
    """Log the report folder to the version's run (``report/``) and tag the version with its path; the path."""
    client = client or MlflowClient()
    client.log_artifacts(version.run_id, str(folder), artifact_path="report")
    path = "report/model_report.html"
    client.set_model_version_tag(version.name, version.version, REPORT_TAG, path)
    return path


def load_pyfunc(uri: str) -> Any:
    """The servable model of ``uri``: ``predict`` takes a table with a base64 ``file`` column.

    MLflow downloads a registered model into a temporary folder it never removes, so every scheduled
    run would leave a copy of the weights behind; here the folder goes with the model (when it is
    collected, or when the process ends). It lives as long as the model because the model's code is
    imported from it.
    """
    folder = tempfile.mkdtemp(prefix="clinical-loaded-model-")
    try:
        model = mlflow.pyfunc.load_model(uri, dst_path=folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(model, shutil.rmtree, folder, ignore_errors=True)
    return model

"""MLflow: the training callback, the pyfunc model, the registry and promotion. The only place that imports mlflow.

Importing this package also teaches ``clinical.models.create_model`` to take
``pretrained="models:/NAME@alias"``.
"""

from __future__ import annotations

import os

# Nothing leaves the machine but calls to the servers the user configured: MLflow's usage telemetry is off
# unless the user turned it on explicitly.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from clinical.tracking import weights  # noqa: F401 - registers the models:/ weights loader
from clinical.tracking.callback import MlflowCallback, dataset_input, start_parent_run
from clinical.tracking.outbox import Outbox, replay_outbox
from clinical.tracking.pyfunc import FILE_COLUMN, ClassifierPyfunc, InvalidRequestError, save_classifier
from clinical.tracking.registered import load_registered, predict_registered
from clinical.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    GateDecision,
    alias_version,
    apply_gate,
    decide_promotion,
    register_run_model,
    set_alias,
    site_alias,
    version_tags,
)
from clinical.tracking.runs import MlflowTracker
from clinical.tracking.server import LocalMlflowServer, TrackingUnavailableError, require_tracking_server, run_url

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "FILE_COLUMN",
    "ClassifierPyfunc",
    "GateDecision",
    "InvalidRequestError",
    "LocalMlflowServer",
    "MlflowCallback",
    "MlflowTracker",
    "Outbox",
    "TrackingUnavailableError",
    "alias_version",
    "apply_gate",
    "dataset_input",
    "decide_promotion",
    "load_registered",
    "predict_registered",
    "register_run_model",
    "replay_outbox",
    "require_tracking_server",
    "run_url",
    "save_classifier",
    "set_alias",
    "site_alias",
    "start_parent_run",
    "version_tags",
]

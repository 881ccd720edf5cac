"""``pretrained="models:/NAME@alias"``: weights from the MLflow registry.

``clinical.models`` may not import MLflow, so it takes a loader per URI
scheme; this module registers the ``models`` scheme. Importing
``clinical.tracking`` is enough to make registry URIs work everywhere.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import torch
from mlflow.exceptions import MlflowException

from clinical.errors import WeightsError
from clinical.models import register_weights_loader

__all__ = ["registry_state_dict"]


def registry_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """The network weights of a registered classifier (``models:/NAME@alias`` or ``models:/NAME/VERSION``).

    Raises
    ------
    WeightsError
        When the registry has no such model, or the model is not one of ours (no ``weights.pt``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except MlflowException as error:
            raise WeightsError(f"No model at {uri} in the MLflow registry ({error.error_code}).") from None
        weights = next(iter(local.rglob("weights.pt")), None)
        if weights is None:
            raise WeightsError(f"{uri} is not a clinical classifier: it has no weights.pt artifact.")
        return torch.load(weights, map_location="cpu", weights_only=True)


register_weights_loader("models", registry_state_dict)

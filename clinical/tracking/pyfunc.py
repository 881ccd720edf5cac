"""The servable model: weights, preprocessing and label names in one MLflow pyfunc.

A caller sends what it has — a DICOM or NIfTI file (or a ``.npy`` array, or
a PNG/JPEG photograph) as base64 in a column ``file`` — and gets one
probability per class back. The file is decoded by the same code as ingest
(windowing, MONOCHROME1, orientation, resampling) and transformed by the
same evaluation preset as training, so a served prediction equals the one
made in the training process::

    mlflow models serve -m models:/NAME@champion --env-manager local
    curl -X POST localhost:5000/invocations -H 'Content-Type: application/json' \\
         -d '{"dataframe_split": {"columns": ["file"], "data": [["<base64 of a .dcm>"]]}}'

A malformed request is answered with 400 and a message that names the row
and the reason, never the payload (which may carry PHI in a DICOM header).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

import clinical
from clinical.data.presets import preset
from clinical.errors import ClinicalError
from clinical.ingest import read_file
from clinical.models import create_model
from clinical.training.result import FitResult

__all__ = [
    "FILE_COLUMN",
    "ClassifierPyfunc",
    "InvalidRequestError",
    "build_classifier",
    "classifier_spec",
    "save_classifier",
]

logger = logging.getLogger(__name__)

FILE_COLUMN = "file"
_NPY_MAGIC = b"\x93NUMPY"
#: Requests larger than this many decoded bytes per file are refused (a guard, not a limit of the model).
MAX_FILE_BYTES = 512 << 20


class InvalidRequestError(ClinicalError, ValueError):
    """A prediction request cannot be served; the scoring server answers it with 400."""


def classifier_spec(result: FitResult, *, ingest_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the served model needs besides its weights: architecture, classes, preprocessing."""
    config = result.config
    return {
        "model": config.model,
        "kind": config.kind,
        "spatial_dims": config.spatial_dims,
        "in_channels": config.in_channels,
        "image_size": list(config.image_size),
        "classes": list(result.classes),
        "ingest_options": dict(ingest_options or {}),
        "clinical_version": clinical.__version__,
    }


def save_classifier(result: FitResult, path: str | Path, *, ingest_options: dict[str, Any] | None = None) -> Path:
    """Write the pyfunc model of a fit's best checkpoint to ``path`` (a new folder) and return it.

    The folder is what ``mlflow.pyfunc.load_model`` reads; the MLflow callback
    uploads it as the run's ``model`` artifact.
    """
    path = Path(path)
    if path.exists():  # a fold trained again replaces its model
        shutil.rmtree(path)
    staging = Path(tempfile.mkdtemp(prefix="clinical-model-"))
    code = staging / "code" / "clinical"
    # The served model needs the library, not the synthetic-cohort generator (whose fake identities would
    # otherwise sit in every model's artifacts).
    shutil.copytree(Path(clinical.__file__).parent, code, ignore=shutil.ignore_patterns("synthetic", "__pycache__"))
    checkpoint = torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)
    weights = staging / "weights.pt"
    torch.save(checkpoint["model"], weights)
    spec = classifier_spec(result, ingest_options=ingest_options)
    spec_path = staging / "classifier.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    example = pd.DataFrame({FILE_COLUMN: [_npy_base64(np.zeros(_example_shape(spec), dtype=np.float32))]})
    mlflow.pyfunc.save_model(
        path,
        python_model=str(Path(__file__).with_name("served_model.py")),
        artifacts={"weights": str(weights), "spec": str(spec_path)},
        code_paths=[str(code)],
        signature=ModelSignature(
            inputs=Schema([ColSpec("string", FILE_COLUMN)]),
            outputs=Schema([ColSpec("double", name) for name in spec["classes"]]),
        ),
        input_example=example,
        pip_requirements=_requirements(),
    )
    return path


def build_classifier(spec: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The network a spec describes, with its weights, in eval mode."""
    model = create_model(spec["model"], spatial_dims=spec["spatial_dims"], in_channels=spec["in_channels"],
                         num_classes=len(spec["classes"]))
    model.load_state_dict(state)
    return model.eval()


class ClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with a base64 ``file`` column; returns one probability column per class."""

    def load_context(self, context: Any) -> None:
        self.spec = json.loads(Path(context.artifacts["spec"]).read_text())
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.model = build_classifier(self.spec, state)
        self.transform = preset(self.spec["kind"], train=False, size=tuple(self.spec["image_size"]))

    # No type hints on purpose: MLflow 3 would derive the signature from them instead of the one we give.
    def predict(self, context, model_input, params=None):
        if not isinstance(model_input, pd.DataFrame) or FILE_COLUMN not in model_input.columns:
            columns = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input).__name__
            raise InvalidRequestError(
                f"The request must be a table with a column {FILE_COLUMN!r} holding base64-encoded files "
                f"(DICOM, NIfTI, PNG/JPEG or .npy); got {columns}."
            )
        images = [self._prepare(row, value) for row, value in enumerate(model_input[FILE_COLUMN])]
        with torch.inference_mode():
            probs = torch.cat([torch.softmax(self.model(image[None]), dim=1) for image in images]).numpy()
        return pd.DataFrame(probs.astype(np.float64), columns=self.spec["classes"])

    def _prepare(self, row: int, value: object) -> torch.Tensor:
        array = self._decode(row, value)
        expected = self.spec["spatial_dims"] + 1
        if array.ndim != expected or array.shape[0] != self.spec["in_channels"]:
            raise InvalidRequestError(
                f"Row {row}: the model takes {self.spec['kind']} arrays of {expected} dimensions with "
                f"{self.spec['in_channels']} channel(s) first; the file gave shape {tuple(array.shape)}."
            )
        return self.transform({"image": array.astype(np.float32)})["image"]

    def _decode(self, row: int, value: object) -> np.ndarray:
        if not isinstance(value, str) or not value:
            raise InvalidRequestError(f"Row {row}: {FILE_COLUMN!r} must be a non-empty base64 string.")
        if len(value) * 3 // 4 > MAX_FILE_BYTES:
            raise InvalidRequestError(f"Row {row}: the file is larger than {MAX_FILE_BYTES >> 20} MiB.")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"Row {row}: {FILE_COLUMN!r} is not valid base64.") from None
        if data.startswith(_NPY_MAGIC):
            try:
                return np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as error:
                raise InvalidRequestError(f"Row {row}: the .npy array cannot be read ({error}).") from None
        try:
            decoded = read_file(data, options=self.spec["ingest_options"])
        except ClinicalError as error:  # messages from ingest name the reason and never PHI
            raise InvalidRequestError(f"Row {row}: {error}") from None
        kinds = {item.kind for item in decoded}
        if self.spec["kind"] not in kinds:
            raise InvalidRequestError(
                f"Row {row}: the model takes a {self.spec['kind']}, the file holds {sorted(kinds) or 'nothing'}."
            )
        return next(item.array for item in decoded if item.kind == self.spec["kind"])


def _npy_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()


def _example_shape(spec: dict[str, Any]) -> tuple[int, ...]:
    return (spec["in_channels"], *spec["image_size"])  # the config holds one value per axis


def _requirements() -> list[str]:
    """The served model needs what ``clinical`` needs, at the pinned versions (one source of truth: pyproject)."""
    return [r for r in metadata.requires("clinical") or [] if "extra ==" not in r]

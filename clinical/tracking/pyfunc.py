"""The servable model: weights, preprocessing and label names in one MLflow pyfunc.

A caller sends what it has — a DICOM or NIfTI file (or a ``.npy`` array, or
a PNG/JPEG photograph) as base64 in a column ``file`` — and gets one
probability per class back. The file is decoded by the same code as ingest
(windowing, MONOCHROME1, orientation, resampling) and transformed by the
same evaluation preset as training, so a served prediction equals the one
made in the training process::

    clinical serve models:/NAME@champion --port 5001
    curl -X POST localhost:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"dataframe_split": {"columns": ["file"], "data": [["<base64 of a .dcm>"]]}}'

Every request passes one validation step before anything is decoded
(:meth:`ClassifierPyfunc.validate`): one ``file`` column, at most
``max_rows`` rows, each a base64 string of at most ``max_file_bytes``; a
``.npy`` is held to its header (allowed dtype, shape × itemsize within
``max_array_bytes``) before its data is read, and to finite values after.
Other kinds go to :func:`clinical.ingest.read_file`, which holds them to the
ingest budget. A refused request raises :class:`InvalidRequestError` with a
message that names the row and the reason, never the payload (which may
carry PHI in a DICOM header).

A tile model also takes a whole slide file (pyramidal TIFF, SVS): the tiles are cut inside it as ingest
cuts them (tissue mask, the cohort's tile size and level, the decoded-size budget checked before any
pixel is read), at most ``max_tiles`` of them, and their probabilities are combined into the slide's by
the recipe's ``aggregate`` (:func:`clinical.evaluation.predictions.aggregate`, as slide-level evaluation
combines them); ``n_tiles`` says how many tiles answered (1 for a single tile sent as ``.npy``).

A photograph model also answers ``uncertainty`` and ``entropy`` (the spread of ``tta_passes``
test-time-augmented passes and the entropy of their mean, as :func:`clinical.training.tta.predict_tta`
measures them in evaluation; the entropy is the one that rises on poor photographs) and ``quality_score`` (the
ingest measure, :func:`clinical.ingest.photos.image_quality`; NaN for a ``.npy`` of floats), so that a
screening service can refer what the model cannot read.

Limits come from :class:`ServingLimits`, saved with the model and
overridden at serving time by the environment (``CLINICAL_SERVE_MAX_ROWS``,
``CLINICAL_SERVE_MAX_FILE_BYTES``, ``CLINICAL_SERVE_MAX_ARRAY_BYTES``,
``CLINICAL_SERVE_BATCH_SIZE``, ``CLINICAL_SERVE_THREADS``, ``CLINICAL_SERVE_MAX_TILES``).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from monai.transforms import Compose

import clinical
from clinical.data.cache import split_deterministic
from clinical.data.presets import preset
from clinical.errors import ClinicalError, ConfigurationError
from clinical.evaluation.predictions import aggregate, prob_columns
from clinical.ingest import read_file
from clinical.ingest.photos import image_quality
from clinical.models import create_model
from clinical.training.result import FitResult
from clinical.training.tta import summarize_passes

__all__ = [
    "FILE_COLUMN",
    "ClassifierPyfunc",
    "InvalidRequestError",
    "RequestTimeoutError",
    "ServingLimits",
    "build_classifier",
    "classifier_spec",
    "request_deadline",
    "save_classifier",
    "spec_preset",
]

logger = logging.getLogger(__name__)

FILE_COLUMN = "file"
#: Test-time-augmented passes a photograph model runs per request for its ``uncertainty``.
TTA_PASSES = 8
_NPY_MAGIC = b"\x93NUMPY"
#: ``.npy`` dtypes a model can take: signed and unsigned integers and real floats (no bool, complex,
#: datetime, object, string or structured arrays).
_NPY_KINDS = frozenset("iuf")

#: When set (a ``time.monotonic()`` value), predict stops at the next row or batch past it. The serving
#: app sets it per request, so a request that timed out does not keep a worker busy after its answer.
request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("request_deadline", default=None)


class InvalidRequestError(ClinicalError, ValueError):
    """A prediction request cannot be served; the scoring server answers it with 400."""


class RequestTimeoutError(ClinicalError, TimeoutError):
    """The request ran past its deadline; the work stopped at the next row or batch."""


@dataclass(frozen=True)
class ServingLimits:
    """What one request may ask of the served model, checked before any decode.

    Parameters
    ----------
    max_rows
        Files per request. The default (64) answers in a few seconds on two CPU cores for 2D models at
        224 × 224, well inside the serving timeout (60 s); send more rows as more requests. In-process
        callers of ``mlflow.pyfunc.load_model(...).predict`` are held to it too (one model, one contract).
    max_file_bytes
        Bytes of one file (checked on the base64 length before decoding it).
    max_array_bytes
        Bytes of one ``.npy`` array as its header claims (shape × itemsize), checked before reading it.
    batch_size
        Rows per forward pass; also how many decoded files are held at once.
    threads
        ``torch.set_num_threads`` for the serving process; ``None`` keeps torch's default (one per
        physical core). Forward passes run one at a time, each over all these threads.
    max_tiles
        Tiles cut from one whole slide sent to a tile model (fewer when the cohort's
        ``max_tiles_per_slide`` is lower); chosen as ingest chooses them, seeded by the slide's content.
    """

    max_rows: int = 64
    max_file_bytes: int = 64 << 20
    max_array_bytes: int = 256 << 20
    batch_size: int = 16
    threads: int | None = None
    max_tiles: int = 64

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.name == "threads":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(
                    f"The serving limit {field.name!r} must be a positive integer. Got {value!r} instead."
                )

    @classmethod
    def from_env(cls, saved: dict[str, Any] | None = None) -> ServingLimits:
        """The limits saved with the model, each overridden by ``CLINICAL_SERVE_<NAME>`` when set."""
        values = dict(saved or {})
        for field in dataclasses.fields(cls):
            raw = os.environ.get(f"CLINICAL_SERVE_{field.name.upper()}")
            if raw is not None and raw.strip():
                try:
                    values[field.name] = int(raw)
                except ValueError:
                    raise ConfigurationError(
                        f"CLINICAL_SERVE_{field.name.upper()} must be an integer. Got {raw!r} instead."
                    ) from None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def max_base64_chars(self) -> int:
        return 4 * math.ceil(self.max_file_bytes / 3)


def classifier_spec(
    result: FitResult, *, ingest_options: dict[str, Any] | None = None, limits: ServingLimits | None = None
) -> dict[str, Any]:
    """What the served model needs besides its weights: architecture, classes, preprocessing, limits."""
    config = result.config
    return {
        "model": config.model,
        "kind": config.kind,
        "spatial_dims": config.spatial_dims,
        "in_channels": config.in_channels,
        "image_size": list(config.image_size),
        "intensity": config.intensity,
        "classes": list(result.classes),
        "ingest_options": dict(ingest_options or {}),
        "serving": dataclasses.asdict(limits or ServingLimits()),
        "tta_passes": TTA_PASSES if config.kind == "photo" else 0,
        "aggregate": config.aggregate,
        "clinical_version": clinical.__version__,
    }


def spec_preset(spec: dict[str, Any], *, train: bool) -> Compose:
    """The preset a saved model was trained with (models saved before ``intensity`` z-scored per image)."""
    return preset(spec["kind"], train=train, size=tuple(spec["image_size"]),
                  intensity=spec.get("intensity", "per-image"))


def save_classifier(
    result: FitResult, path: str | Path, *, ingest_options: dict[str, Any] | None = None,
    limits: ServingLimits | None = None,
) -> Path:
    """Write the pyfunc model of a fit's best checkpoint to ``path`` (a new folder) and return it.

    The folder is what ``mlflow.pyfunc.load_model`` reads; the MLflow callback
    uploads it as the run's ``model`` artifact. The checkpoint is read with
    ``weights_only=True``: a file that would run code when unpickled is refused.
    """
    path = Path(path)
    if path.exists():  # a fold trained again replaces its model
        shutil.rmtree(path)
    with tempfile.TemporaryDirectory(prefix="clinical-model-") as folder:
        staging = Path(folder)
        code = staging / "code" / "clinical"
        # The served model needs the library, not the synthetic-cohort generator (whose fake identities would
        # otherwise sit in every model's artifacts).
        shutil.copytree(Path(clinical.__file__).parent, code, ignore=shutil.ignore_patterns("synthetic", "__pycache__"))
        checkpoint = _load_weights(result.best_checkpoint)
        weights = staging / "weights.pt"
        torch.save(checkpoint["model"], weights)
        spec = classifier_spec(result, ingest_options=ingest_options, limits=limits)
        spec["sites"] = list(checkpoint.get("sites", []))  # a centre-aware model's site vocabulary travels with it
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
                outputs=Schema([ColSpec("double", name) for name in [*spec["classes"], *_extra_outputs(spec)]]),
            ),
            input_example=example,
            pip_requirements=_requirements(),
        )
    return path


def _load_weights(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError (and others) for what weights_only refuses
        raise ConfigurationError(
            f"Cannot read the checkpoint {path.name} as weights only (tensors and plain containers): "
            f"{type(error).__name__}. It was not loaded; retrain, or re-save it with torch.save(state_dict)."
        ) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ConfigurationError(f"The checkpoint {path.name} holds no 'model' state dict.")
    return checkpoint


def build_classifier(spec: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The network a spec describes, with its weights, in eval mode."""
    model = create_model(spec["model"], spatial_dims=spec["spatial_dims"], in_channels=spec["in_channels"],
                         num_classes=len(spec["classes"]))
    if spec.get("sites"):  # centre-aware: requests carry no site, so each one gets the learned unknown-site row
        model.use_sites(spec["sites"])
    model.load_state_dict(state)
    return model.eval()


class ClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with a base64 ``file`` column; returns one probability column per class."""

    def load_context(self, context: Any) -> None:
        self.spec = json.loads(Path(context.artifacts["spec"]).read_text())
        self.limits = ServingLimits.from_env(self.spec.get("serving"))
        if self.limits.threads is not None:
            torch.set_num_threads(self.limits.threads)
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.model = build_classifier(self.spec, state)
        self.transform = spec_preset(self.spec, train=False)
        self.passes = int(self.spec.get("tta_passes", 0))
        self.augment = split_deterministic(spec_preset(self.spec, train=True))[1] if self.passes else None
        # One forward pass at a time, over all of torch's threads: concurrent passes would only share the
        # same cores and multiply the activations held in memory.
        self._forward_lock = threading.Lock()

    # No type hints on purpose: MLflow 3 would derive the signature from them instead of the one we give.
    def predict(self, context, model_input, params=None):
        values = self.validate(model_input)
        classes = self.spec["classes"]
        if self.spec["kind"] == "tile":
            answers = [self._slide(row, value) for row, value in enumerate(values)]
            out = pd.DataFrame(np.stack([probs for probs, _ in answers]), columns=classes)
            out["n_tiles"] = [float(n) for _, n in answers]
            return out
        parts, extras = [], []
        for start in range(0, len(values), self.limits.batch_size):
            rows = range(start, min(start + self.limits.batch_size, len(values)))
            prepared = [self._prepare(row, values[row]) for row in rows]
            batch = torch.stack([tensor for tensor, _ in prepared])
            _check_deadline()
            with self._forward_lock, torch.inference_mode():
                parts.append(torch.softmax(self.model(batch), dim=1).numpy().astype(np.float64))
                if self.augment is not None:
                    extras.append(np.column_stack([self._uncertainty(batch), [q for _, q in prepared]]))
        probs = np.concatenate(parts) if parts else np.zeros((0, len(classes)))
        if not np.isfinite(probs).all():
            raise InvalidRequestError("The model gave non-finite probabilities for this request; nothing is returned.")
        out = pd.DataFrame(probs, columns=classes)
        if extras:
            out[_extra_outputs(self.spec)] = np.concatenate(extras)
        return out

    def _uncertainty(self, batch: torch.Tensor) -> np.ndarray:
        """Spread and entropy (two columns) over augmented copies of ``batch`` (seeded: same request, same answer)."""
        self.augment.set_random_state(0)
        passes = [torch.softmax(self.model(torch.stack([self.augment({"image": x})["image"] for x in batch])), dim=1)
                  for _ in range(self.passes)]
        _, spread, entropy = summarize_passes(torch.stack(passes).numpy().astype(np.float64))
        return np.column_stack([spread, entropy])

    def validate(self, model_input: object) -> list[str]:
        """The request-level checks, before any decode: the table, its column, the row count, the string sizes.

        Raises
        ------
        InvalidRequestError
            With the reason; never with the payload or the names of the columns sent.
        """
        if not isinstance(model_input, pd.DataFrame) or list(model_input.columns) != [FILE_COLUMN]:
            raise InvalidRequestError(
                f"The request must be a table with one column {FILE_COLUMN!r} holding base64-encoded files "
                f"(DICOM, NIfTI, PNG/JPEG or .npy), e.g. "
                f'{{"dataframe_split": {{"columns": ["{FILE_COLUMN}"], "data": [["<base64>"]]}}}}.'
            )
        rows = len(model_input)
        if rows == 0:
            raise InvalidRequestError("The request holds no rows; send one file per row.")
        if rows > self.limits.max_rows:
            raise InvalidRequestError(
                f"The request holds {rows} rows; at most {self.limits.max_rows} are served per request "
                f"(CLINICAL_SERVE_MAX_ROWS). Send the rest as further requests."
            )
        values = model_input[FILE_COLUMN].tolist()
        for row, value in enumerate(values):
            if not isinstance(value, str) or not value:
                raise InvalidRequestError(f"Row {row}: {FILE_COLUMN!r} must be a non-empty base64 string.")
            if len(value) > self.limits.max_base64_chars:
                raise InvalidRequestError(
                    f"Row {row}: the file is larger than {_mib(self.limits.max_file_bytes)} "
                    f"(CLINICAL_SERVE_MAX_FILE_BYTES)."
                )
        return values

    def _slide(self, row: int, value: str) -> tuple[np.ndarray, int]:
        """One row of a tile model: its tiles (a whole slide's, or one tile) through the network in batches,
        combined into one probability per class, and the number of tiles."""
        _check_deadline()
        tiles = self._decode(row, value, every=True)
        parts = []
        for start in range(0, len(tiles), self.limits.batch_size):
            batch = torch.stack([self._tensor(row, tile) for tile in tiles[start : start + self.limits.batch_size]])
            _check_deadline()
            with self._forward_lock, torch.inference_mode():
                parts.append(torch.softmax(self.model(batch), dim=1).numpy().astype(np.float64))
        probs = np.concatenate(parts)
        if not np.isfinite(probs).all():
            raise InvalidRequestError(f"Row {row}: the model gave non-finite probabilities; nothing is returned.")
        frame = pd.DataFrame(probs, columns=prob_columns(probs.shape[1])).assign(
            patient_key="slide", series_key="slide", label=pd.array([pd.NA] * len(probs), dtype="Int64"))
        combined = aggregate(frame, self.spec["classes"], level="series", how=self.spec.get("aggregate", "mean"))
        return combined[prob_columns(probs.shape[1])].to_numpy()[0], len(tiles)

    def _prepare(self, row: int, value: str) -> tuple[torch.Tensor, float]:
        """The model's input tensor of one row, and the photograph's quality score (NaN for float arrays)."""
        _check_deadline()
        array = self._decode(row, value)
        quality = image_quality(array)["quality_score"] if array.dtype in (np.uint8, np.uint16) else math.nan
        return self._tensor(row, array), quality

    def _tensor(self, row: int, array: np.ndarray) -> torch.Tensor:
        """One decoded array checked against the model's input (dimensions, channels, finite) and transformed."""
        expected = self.spec["spatial_dims"] + 1
        if array.ndim != expected or array.shape[0] != self.spec["in_channels"]:
            raise InvalidRequestError(
                f"Row {row}: the model takes {self.spec['kind']} arrays of {expected} dimensions with "
                f"{self.spec['in_channels']} channel(s) first; the file gave shape {tuple(array.shape)}."
            )
        if not np.isfinite(array).all():
            raise InvalidRequestError(f"Row {row}: the array holds NaN or infinite values.")
        return self.transform({"image": array.astype(np.float32)})["image"]

    def _decode(self, row: int, value: str, *, every: bool = False) -> np.ndarray | list[np.ndarray]:
        """The file's array of the model's kind; with ``every``, all of them (the tiles of a slide)."""
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"Row {row}: {FILE_COLUMN!r} is not valid base64.") from None
        if data.startswith(_NPY_MAGIC):
            array = _read_npy(row, data, max_bytes=self.limits.max_array_bytes)
            return [array] if every else array
        options = dict(self.spec["ingest_options"])
        cap = options.get("max_tiles_per_slide")
        options["max_tiles_per_slide"] = min(cap or self.limits.max_tiles, self.limits.max_tiles)
        try:
            decoded = read_file(data, options=options)
        except ClinicalError as error:  # messages from ingest name the reason and never PHI
            raise InvalidRequestError(f"Row {row}: {error}") from None
        kinds = {item.kind for item in decoded}
        if self.spec["kind"] not in kinds:
            raise InvalidRequestError(
                f"Row {row}: the model takes a {self.spec['kind']}, the file holds {sorted(kinds) or 'nothing'}."
            )
        arrays = [item.array for item in decoded if item.kind == self.spec["kind"]]
        return arrays if every else arrays[0]


def _read_npy(row: int, data: bytes, *, max_bytes: int) -> np.ndarray:
    """A ``.npy`` held to its header first (version, dtype, shape × itemsize), then read without pickle."""
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(buffer)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(buffer)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not served (1.0 and 2.0 are)")
    except ValueError as error:
        raise InvalidRequestError(f"Row {row}: the .npy header cannot be read ({error}).") from None
    if dtype.kind not in _NPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidRequestError(
            f"Row {row}: the .npy dtype {dtype.str!r} is not served; send integers or real floats."
        )
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > max_bytes:
        raise InvalidRequestError(
            f"Row {row}: the .npy header claims {_mib(claimed)}, more than the {_mib(max_bytes)} allowed "
            f"(CLINICAL_SERVE_MAX_ARRAY_BYTES)."
        )
    if len(data) - buffer.tell() != claimed:
        raise InvalidRequestError(f"Row {row}: the .npy data does not match the shape its header claims.")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise InvalidRequestError(f"Row {row}: the .npy array cannot be read ({error}).") from None


def _extra_outputs(spec: dict[str, Any]) -> list[str]:
    """The columns a model answers beside its class probabilities (photograph models: uncertainty and quality)."""
    if spec["kind"] == "tile":
        return ["n_tiles"]
    return ["uncertainty", "entropy", "quality_score"] if spec.get("tta_passes") else []


def _check_deadline() -> None:
    deadline = request_deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise RequestTimeoutError("The request ran past its deadline; its work was stopped.")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _npy_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()


def _example_shape(spec: dict[str, Any]) -> tuple[int, ...]:
    return (spec["in_channels"], *spec["image_size"])  # the config holds one value per axis


def _requirements() -> list[str]:
    """The served model needs what ``clinical`` needs, at the pinned versions (one source of truth: pyproject)."""
    return [r for r in metadata.requires("clinical") or [] if "extra ==" not in r]

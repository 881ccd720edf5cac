"""The fine-tuning recipe as one validated, JSON-serialisable object.

Everything that changes what a run learns lives here, so a run is redone from
its ``config.json`` alone (plus the cohort, split and pretrained weights it names).
Where a run writes (``out``) and what it resumes from are arguments of
:func:`clinical.training.fit`, not recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from clinical.errors import ConfigurationError

__all__ = ["TrainConfig", "load_config"]


class TrainConfig(BaseModel):
    """One fine-tuning recipe.

    Learning rates are per group ``lr × layer_decay ** depth`` (depth 0 is the
    head, 1 the last stage, ...). In the ``progressive`` schedule stage 0 trains
    the head only, with the frozen backbone's BatchNorm statistics frozen too;
    then one more group unfreezes from the top every ``unfreeze_every`` epochs,
    or after ``unfreeze_patience`` epochs without a better validation score.
    With ``group_granularity="block"`` the groups are residual blocks (or chunks
    of dense layers) instead of stages: unfreezing goes one block at a time and
    ``layer_decay`` applies per block, so a value nearer 1 keeps the early
    blocks' rates from vanishing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # model
    model: str = Field("resnet18", description="registry name, see clinical.models.list_models()")
    kind: Literal["image", "volume", "tile", "photo"] = Field("image", description="manifest kind; picks the preset")
    in_channels: int = Field(1, ge=1)
    channels: tuple[str, ...] | None = Field(
        None, description="channels of multi-series items to train on, by modality, e.g. ('PT',) for PET only or "
        "('PT', 'CT') for both (items ingested with --channels); None: every channel. in_channels must match"
    )
    centre: Literal["agnostic", "embedding"] = Field(
        "agnostic", description="centre-aware training: 'embedding' joins a learned embedding of the item's site to "
        "the pooled features before the head (the training sites are saved with the model; a site it never saw gets "
        "a learned 'unknown' embedding); 'agnostic' ignores the site"
    )
    intensity: Literal["per-image", "ingest"] = Field(
        "per-image", description="'per-image' z-scores each item and channel on its own (contrast kept, scale lost); "
        "'ingest' keeps the cohort's fixed scale (the CT window, PET as SUVbw / 20), so a value means the same "
        "density or uptake in every item, as quantitative PET needs (images and volumes)"
    )
    pretrained: str | None = Field(None, description="path or URI of pretrained weights; None trains from scratch")
    image_size: tuple[int, ...] = Field(
        (224, 224), description="target size in pixels (D, H, W voxels for volumes); one value means every axis"
    )

    # schedule
    schedule: Literal["progressive", "full", "linear-probe"] = "progressive"
    epochs: int = Field(30, ge=1)
    unfreeze_every: int | None = Field(None, ge=1, description="epochs per progressive stage (3 when neither is given)")
    unfreeze_patience: int | None = Field(None, ge=1, description="unfreeze after this many epochs without progress")
    max_trainable_groups: int | None = Field(
        None, ge=1, description="progressive unfreezing stops once this many groups (head included) train; None: all"
    )
    group_granularity: Literal["stage", "block"] = Field(
        "stage", description="layer groups the schedule steps through: whole stages, or each residual block"
    )

    # optimisation
    lr: float = Field(1e-3, gt=0, description="learning rate of the head (AdamW)")
    layer_decay: float = Field(0.5, gt=0, le=1, description="lr factor per group below the head")
    weight_decay: float = Field(0.05, ge=0, description="AdamW decoupled weight decay; never on norms and biases")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up at the start of every stage, then cosine")
    batch_size: int = Field(16, ge=1)
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm")

    # regularisation
    cutmix_alpha: float = Field(0.0, ge=0, description="Beta(α, α) of CutMix; 0 disables it")
    mixup_alpha: float = Field(0.0, ge=0, description="Beta(α, α) of MixUp; 0 disables it")
    mix_prob: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed")
    stain_augmentation: Literal["hed"] | None = Field(
        None, description="tile recipes: 'hed' adds H&E stain jitter in stain space (Tellez et al.) to the augmentation"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_balance: Literal["none", "weighted-loss", "sampler"] = "none"

    # selection
    monitor_level: Literal["patient", "study", "series", "item"] = Field(
        "patient", description="level of model choice and reported metrics; series is a whole slide for tiles"
    )
    aggregate: Literal["mean", "median", "max", "top3", "top10"] = Field(
        "mean", description="how a patient's (study's) item probabilities become one at patient (study) level, for "
        "model choice and every reported metric: mean, median, max (a finding seen on any slice), or the mean of "
        "the 3 or 10 highest (a finding on a few tiles of a slide)"
    )
    select: Literal["best-val", "last"] = Field(
        "best-val", description="weights a fit keeps: the best validation AUROC's epoch, or the last epoch (a refit "
        "on all development patients for the epoch count cross-validation chose; needs no validation part)"
    )
    early_stopping_patience: int | None = Field(10, ge=1, description="epochs without a better validation AUROC")

    # data
    num_workers: int = Field(0, ge=0)
    cache_bytes: int = Field(1 << 30, ge=0, description="bytes of preprocessed items kept in memory")
    cache_on_device: bool = Field(
        False, description="keep the cached items on the training device and augment them there (a GPU-resident "
        "cache: from the second epoch no item crosses the PCIe bus); batches come from a thread, so num_workers=0"
    )

    # hardware
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:1' or 'auto' (CUDA when available)")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="autocast dtype; fp16 adds a GradScaler")
    channels_last: bool = False
    compile: bool = False

    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _default_stage_length(cls, values: object) -> object:
        given = isinstance(values, dict) and (values.get("unfreeze_every"), values.get("unfreeze_patience"))
        if given == (None, None):
            return {**values, "unfreeze_every": 3}
        return values

    @field_validator("image_size")
    @classmethod
    def _every_axis(cls, value: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        """One value becomes one per spatial axis here, so no reader of the config repeats it."""
        from clinical.data.presets import spatial_size  # torch and MONAI load when a recipe is made, not for --help

        kind = info.data.get("kind")
        return value if kind is None else spatial_size(kind, value)  # no kind: its own error is reported

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.unfreeze_every is not None and self.unfreeze_patience is not None:
            raise ValueError(
                "give at most one of unfreeze_every (epochs per progressive stage) or "
                f"unfreeze_patience (epochs without progress); got unfreeze_every={self.unfreeze_every}, "
                f"unfreeze_patience={self.unfreeze_patience}"
            )
        if self.select == "last" and self.unfreeze_patience is not None:
            raise ValueError(
                "select='last' trains without validation scores, so stages cannot end on a plateau; "
                f"give unfreeze_every instead of unfreeze_patience={self.unfreeze_patience}"
            )
        if self.cache_on_device and self.num_workers:
            raise ValueError(
                "cache_on_device keeps the items as device tensors, which worker processes cannot share; "
                f"use num_workers=0 (got {self.num_workers})"
            )
        if self.channels is not None and len(self.channels) != self.in_channels:
            raise ValueError(
                f"channels={list(self.channels)} selects {len(self.channels)} channel(s) but in_channels="
                f"{self.in_channels}; set in_channels={len(self.channels)}"
            )
        if self.amp == "fp16" and not self.device.startswith(("cuda", "auto")):
            raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' on CPU")
        if self.stain_augmentation is not None and self.kind != "tile":
            raise ValueError(f"stain_augmentation is for H&E tiles (kind='tile'); got kind={self.kind!r}")
        if self.intensity == "ingest" and self.kind not in ("image", "volume"):
            raise ValueError(f"intensity='ingest' is for images and volumes; got kind={self.kind!r}")
        return self

    @classmethod
    def build(cls, **values: object) -> TrainConfig:
        """Validate ``values``; a bad value raises :class:`ConfigurationError` naming the field."""
        try:
            return cls(**values)
        except ValidationError as error:
            raise ConfigurationError(_describe(error)) from None

    @property
    def spatial_dims(self) -> int:
        return 3 if self.kind == "volume" else 2

    def save(self, path: str | Path) -> None:
        """Write the config as JSON (kept with every run and checkpoint)."""
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True))


def load_config(path: str | Path) -> TrainConfig:
    """Read a config written by :meth:`TrainConfig.save`.

    Raises
    ------
    ConfigurationError
        When the file is missing, not JSON, or holds an invalid config.
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigurationError(f"Cannot read the training config {path.name}: {error}.") from None
    return TrainConfig.build(**values)


def _describe(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        field = ".".join(str(p) for p in problem["loc"]) or "config"
        parts.append(f"{field}: {problem['msg']} (got {problem.get('input')!r})")
    return "Invalid training config — " + "; ".join(parts) + "."

"""Self-supervised pretraining on a cohort's items, labels ignored (SimCLR or BYOL).

A run that writes a backbone (``out``) also keeps a checkpoint beside it,
``<out stem>.checkpoint.pt``, rewritten after every epoch. Rerunning the same
call after an interruption continues from that checkpoint and ends with the
backbone an uninterrupted run would have written; the checkpoint is deleted
once the backbone is written. A checkpoint left by a call with other settings
is refused (delete it to start afresh).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from monai.transforms import Compose
from torch.utils.data import DataLoader, RandomSampler

from clinical.cohort import read_manifest
from clinical.cohort.manifest import cohort_digest
from clinical.data import ManifestDataset, preset, seed_epoch, spatial_dims_of
from clinical.data.presets import spatial_size
from clinical.errors import ConfigurationError
from clinical.models.classifier import ClassifierModel
from clinical.models.factory import create_model
from clinical.models.weights import WeightsSource, save_backbone
from clinical.training.ddp import resolve_device
from clinical.training.pretraining.augment import TwoViews, contrastive_view
from clinical.training.pretraining.byol import BYOL
from clinical.training.pretraining.loop import train_views
from clinical.training.pretraining.simclr import SimCLR

__all__ = ["METHODS", "PretrainResult", "checkpoint_path", "items_of_kind", "pretrain"]

logger = logging.getLogger(__name__)

METHODS = ("simclr", "byol")


def items_of_kind(manifest: pd.DataFrame, kind: str | None) -> tuple[pd.DataFrame, str]:
    """The rows of one item kind and that kind; ``kind=None`` is allowed only for a single-kind cohort.

    Raises
    ------
    ConfigurationError
        When ``kind`` is ``None`` and the cohort holds several kinds.
    """
    kinds = sorted(manifest["kind"].unique())
    if kind is None:
        if len(kinds) != 1:
            raise ConfigurationError(f"The cohort holds items of kinds {kinds}; choose one with kind= (--kind).")
        kind = kinds[0]
    return manifest[manifest["kind"] == kind], kind


def checkpoint_path(out: str | Path) -> Path:
    """Where a pretraining run writing the backbone ``out`` keeps its checkpoint: ``<out stem>.checkpoint.pt``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.checkpoint.pt")


@dataclass(frozen=True)
class PretrainResult:
    """A pretrained backbone, the loss of each epoch and where it was saved (if it was)."""

    model: ClassifierModel
    losses: tuple[float, ...]
    path: Path | None


def pretrain(
    cohort: str | Path,
    *,
    method: str = "simclr",
    model: str = "resnet18",
    kind: str | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    size: int | Sequence[int] | None = None,
    lr: float = 1e-3,
    temperature: float = 0.2,
    min_crop: float = 0.4,
    flip: bool = True,
    seed: int = 0,
    items: Sequence[str] | None = None,
    pretrained: WeightsSource | None = None,
    device: str = "cpu",
    amp: str = "off",
    out: str | Path | None = None,
    cache_bytes: int = 512 * 2**20,
) -> PretrainResult:
    """Learn a backbone from a cohort's items without their labels; optionally save it.

    With ``out``, the run checkpoints after every epoch (:func:`checkpoint_path`) and a
    rerun of the same call continues from there: see the module's docstring.

    Parameters
    ----------
    cohort
        A cohort folder (``manifest.parquet`` and the cached arrays).
    method
        One of :data:`METHODS`.
    model
        A registered model name; 2D or 3D follows the items' kind.
    kind
        Which items to use when the cohort holds several kinds (``image``, ``volume``, ``tile``, ``photo``).
    epochs, batch_size, lr
        Optimisation; a batch must hold at least two items.
    temperature
        NT-Xent temperature (SimCLR only).
    min_crop, flip
        The views' smallest crop (share of each side) and whether they are mirrored: leave flips off for
        what is chiral, such as script (see :func:`~clinical.training.pretraining.contrastive_view`).
    size
        Spatial size the items are resized to: one value for every axis, one per axis, or
        ``clinical.data.DEFAULT_SIZES[kind]`` when ``None`` (see :func:`clinical.data.presets.spatial_size`).
    seed
        Seeds the initialisation, the item order and the augmentation.
    items
        ``item_id`` values to use (e.g. a split's training items); all items of ``kind`` when ``None``.
    pretrained
        Weights to start from (see :func:`clinical.models.create_model`).
    device, amp
        ``"cpu"``, ``"cuda[:i]"`` or ``"auto"``; autocast ``"off"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
    out
        Where to write the backbone (:func:`clinical.models.save_backbone`) and, beside it, the
        checkpoint; nothing is written when ``None``.

    Raises
    ------
    ConfigurationError
        For an unknown method, a cohort mixing kinds without ``kind``, mixed channel counts,
        fewer items than two, or a checkpoint beside ``out`` left by a call with other settings.
    ManifestError
        When the cohort has no manifest or an array is missing.
    """
    if method not in METHODS:
        raise ConfigurationError(f"Unknown pretraining method {method!r}; available: {list(METHODS)}.")
    manifest, kind = items_of_kind(read_manifest(cohort), kind)
    if items is not None:
        manifest = manifest[manifest["item_id"].isin(set(items))]
    if len(manifest) < 2:
        raise ConfigurationError(
            f"Pretraining needs at least two items of kind {kind!r}; the cohort has {len(manifest)}."
        )
    channels = sorted({int(shape[0]) for shape in manifest["shape"]})
    if len(channels) != 1:
        raise ConfigurationError(f"The {kind} items have different channel counts {channels}; pretrain on one count.")
    dims = spatial_dims_of(kind)
    size = spatial_size(kind, size)

    torch.manual_seed(seed)
    encoder = create_model(model, spatial_dims=dims, in_channels=channels[0], num_classes=1, pretrained=pretrained)
    base = preset(kind, train=False, size=size)
    classes = sorted(manifest["label"].dropna().astype(str).unique())
    dataset = ManifestDataset(
        manifest,
        cohort,
        classes=classes,
        transform=Compose([*base.transforms, TwoViews(contrastive_view(size, min_crop=min_crop, flip=flip))]),
        cache_bytes=cache_bytes,
    )
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(dataset))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=generator),
        drop_last=True,
        generator=generator,
    )
    logger.info(
        "%s on %d %s items (%d channel(s), size %s) with %s, %d epochs",
        method,
        len(dataset),
        kind,
        channels[0],
        size,
        model,
        epochs,
    )
    learner = SimCLR(encoder, temperature=temperature) if method == "simclr" else BYOL(encoder)
    settings = {
        "method": method, "model": model, "kind": kind, "epochs": epochs, "batch_size": batch_size,
        "size": list(size), "lr": lr, "temperature": temperature, "seed": seed,
        "min_crop": min_crop, "flip": flip,
        "pretrained": None if pretrained is None else str(pretrained), "amp": amp,
        "cohort_digest": cohort_digest(manifest),
    }
    checkpoint = checkpoint_path(out) if out is not None else None
    losses = train_views(
        learner,
        loader,
        epochs=epochs,
        lr=lr,
        device=resolve_device(device),
        amp=amp,
        on_epoch_start=lambda epoch: seed_epoch(loader, seed=seed, epoch=epoch),
        checkpoint=checkpoint,
        settings=settings,
    )
    path = None
    if out is not None:
        meta = {
            "method": method,
            "epochs": epochs,
            "items": len(dataset),
            "kind": kind,
            "size": list(size),
            "seed": seed,
            "final_loss": losses[-1],
        }
        path = save_backbone(encoder, out, meta=meta)
        checkpoint.unlink(missing_ok=True)
        logger.info("Backbone written to %s", path)
    return PretrainResult(model=encoder, losses=tuple(losses), path=path)

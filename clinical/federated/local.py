"""One site's part of a round: train the round's groups with the engine's pieces, or score the global model.

The Flower ClientApp calls these functions, so the client holds no training
logic of its own: the groups the server chose for the round train with the
engine's stage plan, layer-wise AdamW, learning-rate curve, mixing, loss and
train step (AMP, GradScaler, clipping), and every other group stays frozen
(weights and BatchNorm statistics).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from clinical.data import ManifestDataset, make_loader, preset, seed_epoch
from clinical.errors import ConfigurationError
from clinical.evaluation import score
from clinical.federated.exchange import pack_groups
from clinical.splits import fold_items
from clinical.training import (
    FreezeSchedule,
    StageLR,
    StagePlan,
    TrainConfig,
    TrainStep,
    build_mixer,
    build_optimizer,
    predict,
)
from clinical.training.ddp import resolve_device
from clinical.training.mixing import balanced_class_weights, loss_fn

__all__ = ["evaluate_site", "labelled_items", "site_part", "stage_plan", "train_round"]

logger = logging.getLogger(__name__)


def stage_plan(net: nn.Module, config: TrainConfig, trainable: Sequence[str]) -> StagePlan:
    """The engine's progressive stage in which exactly the top groups ``trainable`` train.

    Its learning rates are the recipe's layer-wise ones (``lr × layer_decay ** depth``)
    and its ``apply`` freezes the other groups' weights and BatchNorm statistics.

    Raises
    ------
    ConfigurationError
        When ``trainable`` is not the top ``k`` groups of the model (input → output order).
    """
    groups = net.layer_groups(config.group_granularity)
    names = [group.name for group in groups]
    wanted = list(trainable)
    if not wanted or names[len(names) - len(wanted):] != wanted:
        raise ConfigurationError(
            f"Trainable groups must be the top groups of {names} in that order (e.g. ['stage4', 'head']); got {wanted}."
        )
    schedule = FreezeSchedule(groups, mode="progressive", lr=config.lr, layer_decay=config.layer_decay,
                              unfreeze_every=1)
    return schedule.plan(len(wanted) - 1)  # stage k trains the top k + 1 groups


def site_part(manifest: pd.DataFrame, split: pd.DataFrame, site: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest and split rows of ``site`` (all rows when ``None``): what that site holds.

    Raises
    ------
    ConfigurationError
        When the manifest holds no row of that site.
    """
    if site is None or site == "":
        return manifest, split
    rows = manifest[manifest["site"] == site]
    if rows.empty:
        raise ConfigurationError(
            f"The cohort has no items of site {site!r}; its sites are {sorted(manifest['site'].unique())}."
        )
    return rows, split[split["item_id"].isin(set(rows["item_id"]))]


def labelled_items(manifest: pd.DataFrame, split: pd.DataFrame, fold: int, role: str, kind: str) -> list[str]:
    """Labelled items of ``kind`` in ``role`` of ``fold`` that the manifest holds."""
    wanted = set(fold_items(split, fold).get(role, []))
    rows = manifest[(manifest["kind"] == kind) & manifest["label"].notna() & manifest["item_id"].isin(wanted)]
    return rows["item_id"].astype(str).tolist()


def train_round(
    net: nn.Module,
    config: TrainConfig,
    *,
    trainable: Sequence[str],
    manifest: pd.DataFrame,
    cohort_dir: str | Path,
    split: pd.DataFrame,
    fold: int,
    classes: Sequence[str],
    proximal_mu: float = 0.0,
) -> tuple[dict[str, torch.Tensor], dict[str, float], int]:
    """Train the ``trainable`` groups of ``net`` for ``config.epochs`` local epochs on the site's train items.

    The engine's pieces do the work: its stage plan and layer-wise AdamW groups
    (:func:`stage_plan`, :func:`clinical.training.build_optimizer`), its warm-up and
    cosine (:class:`clinical.training.StageLR`), CutMix/MixUp, loss and train step
    (:class:`clinical.training.TrainStep`: ``config.amp``, ``config.channels_last`` for
    the inputs, ``config.grad_clip``). A round keeps the last weights (model choice is
    the server's, over rounds), so unlike :func:`clinical.training.fit` it writes no checkpoint.

    Parameters
    ----------
    net
        The global model (a ``ClassifierModel``), updated in place.
    config
        The recipe: local epochs, batch size, learning rates, mixing, loss options.
    trainable
        The top layer groups the server chose for this round.
    manifest, cohort_dir, split, fold
        The site's cohort rows and its split.
    classes
        Class names of the federation (the same order on every site).
    proximal_mu
        FedProx: adds ``mu/2 · ||w − w_global||²`` over the trained parameters to the loss (0: FedAvg).

    Returns
    -------
    tuple
        The trained groups' state entries, ``{"train_loss": ...}``, and the number of training items.

    Raises
    ------
    ConfigurationError
        When the site has no labelled training items, ``proximal_mu`` is negative, or
        the device cannot run ``config.amp``.
    """
    if proximal_mu < 0:
        raise ConfigurationError(f"proximal_mu must be >= 0; got {proximal_mu}.")
    items = labelled_items(manifest, split, fold, "train", config.kind)
    if not items:
        raise ConfigurationError(f"The site has no labelled {config.kind!r} items in the train part of fold {fold}.")
    device = resolve_device(config.device)
    dataset = ManifestDataset(manifest, cohort_dir, items=items, classes=list(classes),
                              transform=preset(config.kind, train=True, size=config.image_size,
                                               intensity=config.intensity),
                              cache_bytes=config.cache_bytes)
    loader = make_loader(dataset, batch_size=config.batch_size, train=True, seed=config.seed,
                         balanced=config.class_balance == "sampler", num_workers=config.num_workers)
    net.to(device)
    plan = stage_plan(net, config, trainable)
    plan.apply(net)
    lr = StageLR(len(loader), config.warmup_epochs)
    lr.start_stage(0, config.epochs)
    mixer = build_mixer(cutmix_alpha=config.cutmix_alpha, mixup_alpha=config.mixup_alpha, num_classes=len(classes),
                        prob=config.mix_prob)
    step = TrainStep(build_optimizer(plan, net, weight_decay=config.weight_decay), device=device, amp=config.amp,
                     grad_clip=config.grad_clip, channels_last=config.channels_last, mixer=mixer, lr=lr)
    weight = (balanced_class_weights(dataset.labels, len(classes)).to(device)
              if config.class_balance == "weighted-loss" else None)
    anchors = [(p, p.detach().clone()) for group in plan.trainable for p in group.parameters()] if proximal_mu else []

    def objective(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = loss_fn(net(batch["image"]), batch["label"], weight=weight, label_smoothing=config.label_smoothing)
        if proximal_mu > 0:
            loss = loss + proximal_mu / 2 * sum(((p - w0) ** 2).sum() for p, w0 in anchors)
        return loss

    total, count = 0.0, 0
    for epoch in tqdm(range(config.epochs), desc="local epochs", unit="epoch", disable=None):
        seed_epoch(loader, seed=config.seed, epoch=epoch)
        net.train()
        plan.apply(net)
        for batch in loader:
            total += step(batch, objective) * len(batch["image"])
            count += len(batch["image"])
    net.eval()
    return pack_groups(net, trainable, config.group_granularity), {"train_loss": total / max(count, 1)}, len(items)


def evaluate_site(
    net: nn.Module,
    config: TrainConfig,
    *,
    manifest: pd.DataFrame,
    cohort_dir: str | Path,
    split: pd.DataFrame,
    fold: int,
    classes: Sequence[str],
    role: str = "val",
) -> tuple[dict[str, float], pd.DataFrame]:
    """Score ``net`` on the site's ``role`` items at the recipe's level and aggregation; metrics and predictions.

    Only ``n_items`` comes back when the site's part holds one class (the metrics are undefined).
    """
    items = labelled_items(manifest, split, fold, role, config.kind)
    if not items:
        raise ConfigurationError(f"The site has no labelled {config.kind!r} items in the {role} part of fold {fold}.")
    dataset = ManifestDataset(manifest, cohort_dir, items=items, classes=list(classes),
                              transform=preset(config.kind, train=False, size=config.image_size,
                                               intensity=config.intensity))
    frame = predict(net, dataset, batch_size=max(config.batch_size, 32))
    metrics: dict[str, float] = {"n_items": float(len(items))}
    if frame["label"].nunique() >= 2:
        metrics.update({k: float(v) for k, v in score(frame, list(classes), level=config.monitor_level,
                                                                  aggregate=config.aggregate).items()
                        if isinstance(v, (int, float))})
    return metrics, frame

"""One site's part of a round: train the round's groups with the engine's pieces, or score the global model.

The Flower ClientApp calls these functions, so the client holds no training
logic of its own: the groups the server chose for the round train with the
engine's freezing schedule, layer-wise AdamW, learning-rate curve, mixing and
loss, and every other group stays frozen (weights and BatchNorm statistics).
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
from clinical.splits import fold_items, split_manifest
from clinical.training import FreezeSchedule, StageLR, TrainConfig, build_mixer, build_optimizer, predict
from clinical.training.mixing import balanced_class_weights, loss_fn

__all__ = ["evaluate_site", "labelled_items", "site_part", "split_by_site", "stage_schedule", "train_round"]

logger = logging.getLogger(__name__)


def stage_schedule(net: nn.Module, config: TrainConfig, trainable: Sequence[str]) -> FreezeSchedule:
    """The engine's freezing schedule with exactly the top groups ``trainable`` unfrozen.

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
    schedule.load_state_dict({**schedule.state_dict(), "n_trainable": len(wanted), "stage": len(wanted) - 1})
    return schedule


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


def split_by_site(manifest: pd.DataFrame, *, folds: int = 5, seed: int = 0, val_size: float = 0.2) -> pd.DataFrame:
    """One patient-level split per site, stacked: every site then has train, validation and test patients.

    A federated site trains and selects its local model on its own patients, so each
    needs a validation part; a split of the pooled cohort can leave a small site without one.
    """
    parts = [split_manifest(rows, folds=folds, seed=seed, val_size=val_size)
             for _, rows in manifest.groupby("site", sort=True)]
    split = pd.concat(parts, ignore_index=True)
    split.attrs = {"split": {**parts[0].attrs.get("split", {}), "per_site": True}}
    return split


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

    The engine's pieces do the work: its freezing schedule and layer-wise AdamW groups
    (:func:`stage_schedule`, :func:`clinical.training.build_optimizer`), its warm-up and
    cosine (:class:`clinical.training.StageLR`), CutMix/MixUp and loss. A round keeps
    the last weights (model choice is the server's, over rounds), so unlike
    :func:`clinical.training.fit` it writes no checkpoint.

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
        When the site has no labelled training items, or ``proximal_mu`` is negative.
    """
    if proximal_mu < 0:
        raise ConfigurationError(f"proximal_mu must be >= 0; got {proximal_mu}.")
    items = labelled_items(manifest, split, fold, "train", config.kind)
    if not items:
        raise ConfigurationError(f"The site has no labelled {config.kind!r} items in the train part of fold {fold}.")
    device = _device(config)
    size = config.image_size[0] if len(config.image_size) == 1 else config.image_size
    dataset = ManifestDataset(manifest, cohort_dir, items=items, classes=list(classes),
                              transform=preset(config.kind, train=True, size=size), cache_bytes=config.cache_bytes)
    loader = make_loader(dataset, batch_size=config.batch_size, train=True, seed=config.seed,
                         balanced=config.class_balance == "sampler", num_workers=config.num_workers)
    net.to(device)
    schedule = stage_schedule(net, config, trainable)
    schedule.apply(net)
    optimizer = build_optimizer(schedule, net, weight_decay=config.weight_decay)
    lr = StageLR(len(loader), config.warmup_epochs)
    lr.start_stage(0, config.epochs)
    mixer = build_mixer(cutmix_alpha=config.cutmix_alpha, mixup_alpha=config.mixup_alpha, num_classes=len(classes),
                        prob=config.mix_prob)
    weight = (balanced_class_weights(dataset.labels, len(classes)).to(device)
              if config.class_balance == "weighted-loss" else None)
    anchors = [(p, p.detach().clone()) for _, group in schedule.trainable() for p in group.parameters()]
    step, total, count = 0, 0.0, 0
    for epoch in tqdm(range(config.epochs), desc="local epochs", unit="epoch", disable=None):
        seed_epoch(loader, seed=config.seed, epoch=epoch)
        net.train()
        schedule.apply(net)
        for batch in loader:
            images, targets = batch["image"].to(device), batch["label"].to(device)
            if mixer is not None:
                images, targets = mixer(images, targets)
            lr.apply(optimizer, step)
            loss = loss_fn(net(images), targets, weight=weight, label_smoothing=config.label_smoothing)
            if proximal_mu > 0:
                loss = loss + proximal_mu / 2 * sum(((p - w0) ** 2).sum() for p, w0 in anchors)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_([p for p, _ in anchors], config.grad_clip)
            optimizer.step()
            step += 1
            total += float(loss.detach()) * len(images)
            count += len(images)
    net.eval()
    return pack_groups(net, trainable, config.group_granularity), {"train_loss": total / max(count, 1)}, len(items)


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


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
    """Score ``net`` on the site's ``role`` items at ``config.monitor_level``; metrics and the predictions frame.

    Only ``n_items`` comes back when the site's part holds one class (the metrics are undefined).
    """
    items = labelled_items(manifest, split, fold, role, config.kind)
    if not items:
        raise ConfigurationError(f"The site has no labelled {config.kind!r} items in the {role} part of fold {fold}.")
    size = config.image_size[0] if len(config.image_size) == 1 else config.image_size
    dataset = ManifestDataset(manifest, cohort_dir, items=items, classes=list(classes),
                              transform=preset(config.kind, train=False, size=size))
    frame = predict(net, dataset, batch_size=max(config.batch_size, 32))
    metrics: dict[str, float] = {"n_items": float(len(items))}
    if frame["label"].nunique() >= 2:
        metrics.update({k: float(v) for k, v in score(frame, list(classes), level=config.monitor_level).items()
                        if isinstance(v, (int, float))})
    return metrics, frame

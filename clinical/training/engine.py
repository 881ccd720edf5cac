"""``fit``: fine-tune one model on one fold of a split.

One epoch: train (the schedule's groups, CutMix/MixUp, AMP), predict the
validation items, score them with ``clinical.evaluation.score`` at patient
level, keep the best model by validation AUROC (ties broken by the lower
validation loss), write a checkpoint, tell the callbacks, then let the
schedule unfreeze the next group. Early stopping counts only in the final
stage, so a progressive run is never stopped before its backbone trains.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss
from torch import nn
from tqdm.auto import tqdm

from clinical.cohort.manifest import cohort_digest
from clinical.data import ManifestDataset, class_names, make_loader, preset, seed_epoch
from clinical.errors import ConfigurationError
from clinical.evaluation import score
from clinical.models import create_model
from clinical.splits import check_no_leakage, fold_items
from clinical.training.callbacks import Callback
from clinical.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from clinical.training.config import TrainConfig
from clinical.training.ddp import DistInfo, all_sum, init_distributed, resolve_device, sync_buffers, wrap_model
from clinical.training.inference import predict
from clinical.training.mixing import balanced_class_weights, build_mixer, loss_fn
from clinical.training.optim import StageLR, build_optimizer
from clinical.training.result import FitResult
from clinical.training.schedule import FreezeSchedule
from clinical.training.step import TrainStep

__all__ = ["fit"]

logger = logging.getLogger(__name__)

MONITOR = "auroc"


def fit(
    config: TrainConfig,
    *,
    manifest: pd.DataFrame,
    cohort_dir: str | Path,
    split: pd.DataFrame,
    fold: int,
    out: str | Path,
    callbacks: tuple[Callback, ...] | list[Callback] = (),
    resume: str | Path | None = None,
) -> FitResult:
    """Fine-tune ``config.model`` on the train items of ``fold``, choosing the epoch by validation AUROC.

    Parameters
    ----------
    config
        The recipe (see :class:`TrainConfig`).
    manifest, cohort_dir
        The cohort (``clinical.cohort.read_manifest(cohort_dir)``); only rows of ``config.kind`` are used.
    split, fold
        A split table (``clinical.splits``) and the fold to train; its leakage is checked first.
    out
        Run folder for ``config.json``, checkpoints, predictions and ``result.json``.
    callbacks
        Objects following :class:`Callback`; called on rank 0 only.
    resume
        A checkpoint of this run (``out/checkpoints/last.pt``): training continues after its
        epoch, with every state restored, and ends as the uninterrupted run would have.

    Raises
    ------
    LeakageError
        When a patient, study or series crosses roles in the split.
    ConfigurationError
        When the fold has no train or validation items, the resumed checkpoint was made
        with another config, or a hardware option is not available.
    """
    out = Path(out)
    info_dist = init_distributed("cuda" if config.device.startswith("cuda") else "cpu")
    device = resolve_device(config.device, info_dist)
    check_no_leakage(split, manifest)
    manifest = manifest[manifest["kind"] == config.kind]
    classes = class_names(manifest)
    roles = fold_items(split, fold)
    datasets = _datasets(config, manifest, cohort_dir, roles, classes, device)
    if info_dist.main:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.json")

    torch.manual_seed(config.seed)
    model = create_model(config.model, spatial_dims=config.spatial_dims, in_channels=config.in_channels,
                         num_classes=len(classes), pretrained=config.pretrained)
    if config.centre == "embedding":
        model.use_sites(sorted(set(datasets["train"].frame()["site"])))
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last if config.spatial_dims == 2 else torch.channels_last_3d)
    schedule = FreezeSchedule.from_recipe(model.layer_groups(config.group_granularity), config)
    loop = _Loop(config, model, schedule, datasets, classes, device, info_dist)
    start_epoch = 0
    if resume is not None:
        start_epoch = loop.restore(load_checkpoint(resume, map_location=device), out / "checkpoints" / "best.pt")
    if info_dist.main:
        info = {
            "fold": fold, "classes": classes, "groups": [g.name for g in schedule.groups],
            "n_train": len(datasets["train"]), "n_val": len(datasets["val"]) if datasets["val"] is not None else 0,
            "n_test": len(datasets["test"]) if datasets["test"] is not None else 0,
            "device": str(device), "world_size": info_dist.world_size, "cohort_digest": cohort_digest(manifest),
            "out": str(out), "cohort_dir": str(Path(cohort_dir).resolve()),
            "resumed_from_epoch": start_epoch - 1 if resume is not None else None,
            "pretrained_keys_loaded": len(model.weights_report.loaded) if model.weights_report else 0,
        }
        for callback in callbacks:
            callback.on_fit_start(config, info)

    bar = tqdm(range(start_epoch, config.epochs), desc=f"fold {fold}", unit="epoch", initial=start_epoch,
               total=config.epochs, disable=None if info_dist.main else True)
    for epoch in bar:
        metrics, state = loop.run_epoch(epoch)
        if info_dist.main:
            last = save_checkpoint(out / "checkpoints" / "last.pt", loop.checkpoint(epoch))
            for callback in callbacks:
                callback.on_checkpoint(last, False)
            if state["improved"]:
                best = save_checkpoint(out / "checkpoints" / "best.pt", loop.best_payload())
                for callback in callbacks:
                    callback.on_checkpoint(best, True)
            for callback in callbacks:
                callback.on_epoch_end(epoch, metrics, state)
        bar.set_postfix(val_auroc=f"{metrics.get('val_auroc', math.nan):.3f}", stage=state["stage"])
        logger.info("fold %d epoch %d: train_loss %.4f val_loss %.4f val_%s %.4f, training %s", fold, epoch,
                    metrics["train_loss"], metrics["val_loss"], MONITOR, metrics.get(f"val_{MONITOR}", math.nan),
                    state["trainable_groups"])
        if state["stop"]:
            logger.info("Early stopping after epoch %d (best epoch %d).", epoch, loop.best_epoch)
            break

    result = loop.finish(fold, out)
    if info_dist.main:
        result.save()
        for callback in callbacks:
            callback.on_fit_end(result)
    return result


def _datasets(
    config: TrainConfig, manifest: pd.DataFrame, cohort_dir: str | Path, roles: dict[str, list[str]],
    classes: list[str], device: torch.device,
) -> dict[str, ManifestDataset | None]:
    labelled = set(manifest.loc[manifest["label"].notna(), "item_id"])
    known = set(manifest["item_id"])
    parts: dict[str, list[str]] = {}
    for role in ("train", "val", "test"):
        items = [i for i in roles.get(role, []) if i in known]
        dropped = sum(i not in labelled for i in items)
        if dropped:
            logger.info("%d unlabelled item(s) left out of the %s part.", dropped, role)
        parts[role] = [i for i in items if i in labelled]
    for role in ("train", "val") if config.select == "best-val" else ("train",):
        if not parts[role]:
            raise ConfigurationError(
                f"The fold has no labelled {config.kind!r} items in its {role} part; training needs both train and "
                "val items. Make the split with val_size > 0 and check the manifest's kind and labels."
            )

    def dataset(role: str, train: bool) -> ManifestDataset:
        return ManifestDataset(manifest, cohort_dir, items=parts[role], classes=classes,
                               transform=preset(config.kind, train=train, size=config.image_size,
                                                device=device if config.cache_on_device else None,
                                                stain=config.stain_augmentation, intensity=config.intensity),
                               cache_bytes=config.cache_bytes, channels=config.channels)

    return {"train": dataset("train", True), "val": dataset("val", False) if parts["val"] else None,
            "test": dataset("test", False) if parts["test"] else None}


class _Loop:
    """The mutable state of one fit: model, train step (optimizer, scaler), schedules, best model, history."""

    def __init__(self, config: TrainConfig, model: nn.Module, schedule: FreezeSchedule,
                 datasets: dict[str, ManifestDataset | None], classes: list[str], device: torch.device,
                 dist: DistInfo) -> None:
        self.config, self.model, self.schedule, self.datasets = config, model, schedule, datasets
        self.classes, self.device, self.dist = classes, device, dist
        train = datasets["train"]
        self.loader = make_loader(train, batch_size=config.batch_size, train=True, seed=config.seed,
                                  balanced=config.class_balance == "sampler", num_workers=config.num_workers,
                                  pin_memory=device.type == "cuda", world_size=dist.world_size, rank=dist.rank)
        self.weight = (balanced_class_weights(train.labels, len(classes)).to(device)
                       if config.class_balance == "weighted-loss" else None)
        self.lr = StageLR(len(self.loader), config.warmup_epochs)
        mixer = build_mixer(cutmix_alpha=config.cutmix_alpha, mixup_alpha=config.mixup_alpha,
                            num_classes=len(classes), prob=config.mix_prob)
        self.train_step = TrainStep(self._rebuild(previous=None), device=device, amp=config.amp,
                                    grad_clip=config.grad_clip, channels_last=config.channels_last, mixer=mixer,
                                    lr=self.lr, keys=("image", "label", "site") if model.sites else ("image", "label"))
        self.best_epoch, self.best_score, self.best_loss = -1, -math.inf, math.inf
        self.stale = 0
        self.history: list[dict[str, Any]] = []
        self._best_state: dict[str, torch.Tensor] | None = None
        train.preload()
        if datasets["val"] is not None:
            datasets["val"].preload()

    # --- set-up ---------------------------------------------------------------------------------
    def _rebuild(self, previous: torch.optim.Optimizer | None) -> torch.optim.Optimizer:
        """Freeze/unfreeze, restart the stage's lr curve, re-wrap; return the rebuilt optimizer (keeping moments)."""
        self.schedule.apply(self.model)
        optimizer = build_optimizer(self.schedule.current, self.model, weight_decay=self.config.weight_decay,
                                    previous=previous)
        self.lr.start_stage(self.schedule.stage_start, self.schedule.stage_end(self.config.epochs))
        runner = wrap_model(self.model, self.dist, self.device)
        self.runner = torch.compile(runner) if self.config.compile else runner
        return optimizer

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn(self.runner(batch["image"], site=batch.get("site")), batch["label"], weight=self.weight,
                       label_smoothing=self.config.label_smoothing)

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def best_payload(self) -> dict[str, Any]:
        """What ``best.pt`` holds: the best weights, their epoch, the classes and the config."""
        return {"model": self._best_state, "epoch": self.best_epoch, "classes": self.classes,
                "sites": list(self.model.sites), "config": self.config.model_dump(mode="json")}

    # --- one epoch ------------------------------------------------------------------------------
    def run_epoch(self, epoch: int) -> tuple[dict[str, float], dict[str, Any]]:
        config = self.config
        started = time.perf_counter()
        seed_epoch(self.loader, seed=config.seed, epoch=epoch)
        self.model.train()
        self.schedule.apply(self.model)
        total, count = 0.0, 0
        for batch in tqdm(self.loader, desc=f"epoch {epoch}", unit="batch", leave=False,
                          disable=None if self.dist.main else True):
            if self.model.sites:  # names become embedding rows here, so the step moves them as a tensor
                batch = {**batch, "site": self.model.site_index(batch["site"])}
            loss = self.train_step(batch, self._loss)
            total += loss * len(batch["image"])
            count += len(batch["image"])
        sync_buffers(self.model, self.dist)
        total, count = all_sum([total, count], self.dist)
        train_seconds = time.perf_counter() - started

        val, val_loss = {}, math.nan
        if self.datasets["val"] is not None:
            frame = predict(self.model, self.datasets["val"], batch_size=max(config.batch_size, 32),
                            device=self.device, amp=config.amp, channels_last=config.channels_last)
            val = _safe_score(frame, self.classes, config)
            val_loss = _log_loss(frame, len(self.classes))
        monitored = val.get(MONITOR, math.nan)
        ranked = -math.inf if math.isnan(monitored) else monitored
        improved = (config.select == "last"
                    or ranked > self.best_score or (ranked == self.best_score and val_loss < self.best_loss))
        if improved:
            self.best_epoch, self.best_score, self.best_loss = epoch, ranked, val_loss
            self._best_state = self.model_state()
        report = self.schedule.report()
        metrics = {"train_loss": total / max(count, 1), "val_loss": val_loss,
                   **{f"val_{k}": v for k, v in val.items()},
                   **{f"lr/{g['name']}": g["lr"] for g in self.train_step.optimizer.param_groups},
                   "train_seconds": train_seconds, "train_items_per_second": count / train_seconds,
                   "epoch_seconds": time.perf_counter() - started}
        if self.schedule.final:
            self.stale = 0 if improved else self.stale + 1
        stop = (config.select == "best-val" and config.early_stopping_patience is not None and self.schedule.final
                and self.stale >= config.early_stopping_patience)
        unfroze = self.schedule.end_epoch(epoch, monitored if not math.isnan(monitored) else -val_loss)
        if unfroze:
            self.train_step.optimizer = self._rebuild(previous=self.train_step.optimizer)
        state = {**report, "unfroze": unfroze, "improved": improved, "best_epoch": self.best_epoch,
                 "best_score": self.best_score, "stop": stop}
        self.history.append({"epoch": epoch, **metrics, **{k: v for k, v in state.items() if k != "improved"}})
        return metrics, state

    # --- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "config": self.config.model_dump(mode="json"),
            "classes": self.classes,
            "sites": list(self.model.sites),
            "model": self.model.state_dict(),
            "step": self.train_step.state_dict(),
            "schedule": self.schedule.state_dict(),
            "lr": self.lr.state_dict(),
            "loop": {"best_epoch": self.best_epoch, "best_score": self.best_score, "best_loss": self.best_loss,
                     "stale": self.stale},
            "history": self.history,
            "rng": rng_state(self.loader.generator),
        }

    def restore(self, payload: dict[str, Any], best_path: Path) -> int:
        """Load a checkpoint (and the best model so far from ``best_path``); return the first epoch still to run."""
        if payload["config"] != self.config.model_dump(mode="json") or payload["classes"] != self.classes:
            raise ConfigurationError(
                "The checkpoint was made with another config or class list; resume with the run's own config.json "
                "(or start a new run folder)."
            )
        self.model.load_state_dict(payload["model"])
        self.schedule.load_state_dict(payload["schedule"])
        self.train_step.optimizer = self._rebuild(previous=None)
        self.train_step.load_state_dict(payload["step"])
        self.lr.load_state_dict(payload["lr"])
        loop = payload["loop"]
        self.best_epoch, self.stale = int(loop["best_epoch"]), int(loop["stale"])
        self.best_score, self.best_loss = float(loop["best_score"]), float(loop["best_loss"])
        if self.best_epoch >= 0:
            self._best_state = load_checkpoint(best_path, map_location=self.device)["model"]
        self.history = list(payload["history"])
        set_rng_state(payload["rng"], self.loader.generator)
        return int(payload["epoch"]) + 1

    # --- the end --------------------------------------------------------------------------------
    def finish(self, fold: int, out: Path) -> FitResult:
        """Load the best weights, predict val and test, score them."""
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        kwargs = {"batch_size": max(self.config.batch_size, 32), "device": self.device, "amp": self.config.amp,
                  "channels_last": self.config.channels_last}
        val = (predict(self.model, self.datasets["val"], **kwargs) if self.datasets["val"] is not None
               else _no_predictions(self.datasets["train"], len(self.classes)))
        test = predict(self.model, self.datasets["test"], **kwargs) if self.datasets["test"] is not None else None
        last = self.history[-1]["epoch"] if self.history else -1
        return FitResult(
            fold=fold, classes=self.classes, best_epoch=self.best_epoch,
            best_score=self.best_score if math.isfinite(self.best_score) else math.nan,
            epochs_run=last + 1, stopped_early=last + 1 < self.config.epochs, history=self.history,
            val_metrics=_safe_score(val, self.classes, self.config) if len(val) else {},
            test_metrics=_safe_score(test, self.classes, self.config) if test is not None else {},
            val_predictions=val, test_predictions=test, config=self.config, out=out,
        )


def _no_predictions(dataset: ManifestDataset, n_classes: int) -> pd.DataFrame:
    """An empty predictions frame (the columns :func:`predict` gives) for a fit without a validation part."""
    frame = dataset.frame().iloc[:0].copy()
    frame["label"] = pd.array([], dtype="Int64")
    for k in range(n_classes):
        frame[f"prob_{k}"] = np.array([], dtype=np.float64)
    return frame


def _safe_score(frame: pd.DataFrame, classes: list[str], config: TrainConfig) -> dict[str, float]:
    """``score`` at the recipe's level and aggregation; AUROC is NaN (with a warning) when the part holds one class."""
    labels = frame["label"].dropna()
    if labels.nunique() < 2:
        logger.warning("The %d scored items hold one class only; AUROC is undefined (NaN) for them.", len(labels))
        return {MONITOR: math.nan}
    return score(frame, classes, level=config.monitor_level, aggregate=config.aggregate)


def _log_loss(frame: pd.DataFrame, n_classes: int) -> float:
    """Mean item-level cross-entropy of the predicted probabilities (tie-breaker for model choice); NaN with no labels.

    The probabilities are float32 softmax outputs; renormalised in float64 they pass scikit-learn's sum check.
    """
    known = frame["label"].notna().to_numpy()
    if not known.any():
        return math.nan
    probs = frame.loc[known, [f"prob_{k}" for k in range(n_classes)]].to_numpy(dtype=np.float64)
    labels = frame.loc[known, "label"].to_numpy(dtype=np.int64)
    return float(log_loss(labels, y_proba=probs / probs.sum(axis=1, keepdims=True), labels=list(range(n_classes))))

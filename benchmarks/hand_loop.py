"""The baseline of the training benchmarks: the simplest correct PyTorch loop over the engine's own data.

Same model, dataset, preset and loader as ``clinical.training.fit``; what it leaves out is
everything the engine adds (schedules, mixing, checkpoints, validation). It honours the
recipe's device, AMP dtype, channels-last layout and device cache, so a GPU comparison is
like for like, and it times how long each step waits for its batch.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from clinical.data import ManifestDataset, make_loader, preset, seed_epoch
from clinical.models import create_model
from clinical.training import TrainConfig

__all__ = ["hand_loop"]


def hand_loop(config: TrainConfig, manifest: pd.DataFrame, cohort, items: list[str], classes: list[str]) -> dict:
    """Items per second over the epochs after the first, and the fraction of step time spent waiting for data."""
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                          "cpu" if config.device == "auto" else config.device)
    torch.manual_seed(config.seed)
    model = create_model(config.model, spatial_dims=config.spatial_dims, in_channels=config.in_channels,
                         num_classes=len(classes)).to(device)
    layout = torch.channels_last if config.spatial_dims == 2 else torch.channels_last_3d
    if config.channels_last:
        model = model.to(memory_format=layout)
    dataset = ManifestDataset(manifest, cohort, items=items, classes=classes,
                              transform=preset(config.kind, train=True, size=config.image_size,
                                               device=device if config.cache_on_device else None),
                              cache_bytes=config.cache_bytes)
    dataset.preload()
    loader = make_loader(dataset, batch_size=config.batch_size, train=True, seed=config.seed,
                         pin_memory=device.type == "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    rates, waits = [], []
    for epoch in range(config.epochs):
        seed_epoch(loader, seed=config.seed, epoch=epoch)
        model.train()
        start, count, waited = time.perf_counter(), 0, 0.0
        batches = iter(loader)
        while True:
            asked = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - asked
            if batch is None:
                break
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            if config.channels_last:
                images = images.contiguous(memory_format=layout)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            count += len(labels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        rates.append(count / elapsed)
        waits.append(waited / elapsed)
    return {"items_per_second": float(np.mean(rates[1:])), "data_wait_fraction": float(np.mean(waits[1:]))}

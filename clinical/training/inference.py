"""Class probabilities for every item of a dataset, as the predictions frame evaluation reads."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from clinical.data import UNLABELLED, ManifestDataset, make_loader

__all__ = ["autocast", "memory_format", "predict"]


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for ``amp`` in ``{"bf16", "fp16"}``, a no-op context for ``"off"``."""
    if amp == "off":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def memory_format(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``images`` in channels-last layout (2D or 3D) when asked, unchanged otherwise."""
    if not channels_last:
        return images
    return images.contiguous(memory_format=torch.channels_last if images.ndim == 4 else torch.channels_last_3d)


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: ManifestDataset,
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    amp: str = "off",
    channels_last: bool = False,
    num_workers: int = 0,
) -> pd.DataFrame:
    """The predictions frame of ``dataset``: one row per item, in dataset order.

    Columns ``item_id, patient_key, study_key, series_key, site, label`` (class index,
    ``<NA>`` when unlabelled) and ``prob_0 … prob_{C-1}`` (softmax of the logits).
    The model is put in eval mode and left there.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    loader = make_loader(dataset, batch_size=batch_size, train=False, num_workers=num_workers,
                         pin_memory=device.type == "cuda")
    sites = bool(getattr(model, "sites", ()))  # a centre-aware ClassifierModel reads each item's site
    chunks = []
    for batch in tqdm(loader, desc="predict", unit="batch", disable=None, leave=False):
        images = memory_format(batch["image"].to(device, non_blocking=True), channels_last)
        with autocast(device, amp):
            logits = model(images, site=model.site_index(batch["site"]).to(device)) if sites else model(images)
        chunks.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    probs = np.concatenate(chunks) if chunks else np.zeros((0, len(dataset.classes)))
    frame = dataset.frame()
    frame["label"] = pd.array(np.where(frame["label"] == UNLABELLED, None, frame["label"]), dtype="Int64")
    for k in range(probs.shape[1]):
        frame[f"prob_{k}"] = probs[:, k].astype(np.float64)
    return frame

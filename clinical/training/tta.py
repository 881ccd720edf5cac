"""Test-time augmentation: class probabilities with a per-item uncertainty, for the evaluation to report.

The networks we train (ResNet, DenseNet) have no dropout to sample, so MC dropout does not apply; TTA
works with every model. Each pass feeds the item through the training preset's random augmentation
(small rotation and scale, intensity jitter, noise — what the model was taught not to care about).

Two per-item measures come out. The spread over passes says how far the prediction moves under the
augmentation; on the synthetic fundus cohort it is much the same on good and on blurred or badly
exposed photographs (the noise moves the sharp ones most). The entropy of the mean probabilities is
the one that tracks quality: where degradation hides the lesions, a trained model's probability falls
back towards the base rate, and it is the measure to refer by when photographs vary in quality.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from clinical.data import ManifestDataset
from clinical.errors import ConfigurationError
from clinical.evaluation.predictions import prob_columns
from clinical.training.inference import predict

__all__ = ["UNCERTAINTY_COLUMNS", "predict_tta", "summarize_passes"]

#: Columns :func:`predict_tta` adds to the predictions frame.
UNCERTAINTY_COLUMNS = ("uncertainty", "entropy")


def summarize_passes(passes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean probabilities, spread and entropy of ``passes`` (P, N, C) of softmax outputs.

    The spread is the SD over passes of each class's probability, averaged over classes (for a binary
    task, the SD of ``prob_1``); the entropy is that of the mean probabilities, in units of ``log C``
    (0 certain, 1 uniform).
    """
    if passes.ndim != 3 or passes.shape[0] < 2:
        raise ConfigurationError(f"passes must have shape (P >= 2, N, C); got {passes.shape}.")
    mean = passes.mean(axis=0)
    spread = passes.std(axis=0).mean(axis=1)
    entropy = -(mean * np.log(np.clip(mean, 1e-12, 1.0))).sum(axis=1) / np.log(mean.shape[1])
    return mean, spread, entropy


@torch.no_grad()
def predict_tta(
    model: nn.Module,
    dataset: ManifestDataset,
    *,
    passes: int = 8,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    amp: str = "off",
) -> pd.DataFrame:
    """The predictions frame of ``dataset`` averaged over ``passes`` augmented passes, with its uncertainty.

    ``dataset`` must carry the training preset of its kind (``transform=preset(kind, train=True, size=...)``):
    its random part is the augmentation drawn anew in every pass.
    Columns are those of :func:`clinical.training.inference.predict`, with ``prob_k`` the mean over passes,
    plus ``uncertainty`` (the spread over passes, see :func:`summarize_passes`) and ``entropy``. The
    passes run in this process (no loader workers), so that ``seed`` alone fixes every augmentation.

    Raises
    ------
    ConfigurationError
        When ``passes`` is below 2 or the dataset's transform has no random part.
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 2:
        raise ConfigurationError(f"passes must be an integer >= 2 (one pass has no spread); got {passes!r}.")
    if dataset._random_part is None:
        raise ConfigurationError(
            "predict_tta needs a dataset with random augmentation; build it with "
            "transform=clinical.data.preset(kind, train=True, size=...)."
        )
    columns = prob_columns(len(dataset.classes))
    frames = []
    for k in range(passes):
        dataset.set_random_state(seed + k)
        frames.append(predict(model, dataset, batch_size=batch_size, device=device, amp=amp))
    mean, spread, entropy = summarize_passes(np.stack([f[columns].to_numpy() for f in frames]))
    out = frames[0].copy()
    out[columns] = mean
    out["uncertainty"] = spread
    out["entropy"] = entropy
    return out

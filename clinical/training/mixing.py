"""CutMix and MixUp (torchvision ``transforms.v2``), class weights and the loss.

Mixed batches carry soft targets (``[B, C]`` probabilities); unmixed batches
keep integer labels. ``torch.nn.functional.cross_entropy`` takes both, with
class weights and label smoothing, so one loss serves every combination.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch.nn import functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from clinical.errors import ConfigurationError

__all__ = ["BatchMixer", "balanced_class_weights", "build_mixer", "loss_fn"]


class BatchMixer:
    """Apply CutMix or MixUp (picked at random when both are on) to a batch with probability ``prob``.

    CutMix cuts boxes in the last two axes, so for volumes (``[B, C, D, H, W]``,
    passed to torchvision as a video batch) it cuts the same box through every slice.
    """

    def __init__(self, mix: v2.Transform, prob: float) -> None:
        self.mix = mix
        self.prob = prob

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prob < 1.0 and float(torch.rand(())) >= self.prob:
            return images, labels
        if images.ndim == 5:
            mixed, targets = self.mix(tv_tensors.Video(images), labels)
            return mixed.as_subclass(torch.Tensor), targets
        return self.mix(images, labels)


def build_mixer(*, cutmix_alpha: float, mixup_alpha: float, num_classes: int, prob: float = 1.0) -> BatchMixer | None:
    """A :class:`BatchMixer`, or ``None`` when both alphas are 0."""
    choices: list[v2.Transform] = []
    if cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if not choices or prob == 0:
        return None
    return BatchMixer(choices[0] if len(choices) == 1 else v2.RandomChoice(choices), prob)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """scikit-learn's ``"balanced"`` weights, ``N / (C × count_c)``: each class weighs the same in the loss in total.

    Raises
    ------
    ConfigurationError
        When a class has no training item (its weight would be infinite).
    """
    labels = np.asarray(labels)
    missing = sorted(set(range(num_classes)) - {int(c) for c in np.unique(labels)})
    if missing:
        raise ConfigurationError(
            f"Class index(es) {missing} have no training item in this fold; class weighting needs every class. "
            "Check the split's stratification or merge rare classes."
        )
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels)
    return torch.as_tensor(weights, dtype=torch.float32)


def loss_fn(
    logits: torch.Tensor, targets: torch.Tensor, *, weight: torch.Tensor | None, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy on integer labels or soft (mixed) targets, computed in float32."""
    return F.cross_entropy(logits.float(), targets, weight=weight, label_smoothing=label_smoothing)

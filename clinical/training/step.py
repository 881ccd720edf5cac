"""One optimisation step, the same for fine-tuning, federated rounds and self-supervised pretraining.

A step moves the batch to the device (channels-last when asked), mixes it
(CutMix/MixUp), sets the step's learning rate, runs the forward pass and the
loss under autocast, and takes a scaled backward pass, gradient clipping and
the optimizer step. Only the loss differs between the three: the caller
passes it as a function of the batch (cross-entropy on the logits, plus the
FedProx term in a federated round, or an SSL method's ``loss(view1, view2)``),
so every loop gets AMP, the GradScaler and clipping the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from clinical.errors import ConfigurationError
from clinical.training.inference import autocast, memory_format
from clinical.training.mixing import BatchMixer
from clinical.training.optim import StageLR

__all__ = ["TrainStep"]

#: The loss of one batch: called with the batch's tensors on the device (mixed), under autocast.
LossFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class TrainStep:
    """Forward, loss, backward and optimizer step for one batch, counting the steps taken.

    Parameters
    ----------
    optimizer
        The optimizer; its parameters are the ones clipped. Assign ``step.optimizer`` when it is rebuilt.
    device
        Where the batch goes.
    amp
        ``"off"``, ``"bf16"`` or ``"fp16"``; fp16 scales the loss with a ``GradScaler``.
    grad_clip
        Max gradient norm over the optimizer's parameters (after unscaling); ``None`` to not clip.
    channels_last
        Put image tensors (4-D or 5-D) in channels-last layout.
    mixer
        CutMix/MixUp applied to ``batch["image"]`` and ``batch["label"]``.
    lr
        Sets each step's learning rate from the count of steps taken; ``None`` leaves the optimizer's.
    keys
        The batch entries the loss reads, moved to the device.

    Raises
    ------
    ConfigurationError
        For fp16 on a device other than CUDA, or a mixer without ``image`` and ``label`` keys.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        amp: str = "off",
        grad_clip: float | None = None,
        channels_last: bool = False,
        mixer: BatchMixer | None = None,
        lr: StageLR | None = None,
        keys: Sequence[str] = ("image", "label"),
    ) -> None:
        if amp == "fp16" and device.type != "cuda":
            raise ConfigurationError("amp='fp16' needs a CUDA device (it uses a GradScaler); use amp='bf16' on CPU.")
        if mixer is not None and not {"image", "label"} <= set(keys):
            raise ConfigurationError(f"Mixing needs the batch keys 'image' and 'label'; got keys {list(keys)}.")
        self.optimizer = optimizer
        self.device = device
        self.amp = amp
        self.grad_clip = grad_clip
        self.channels_last = channels_last
        self.mixer = mixer
        self.lr = lr
        self.keys = tuple(keys)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        self.steps = 0

    def __call__(self, batch: Mapping[str, Any], loss: LossFn) -> float:
        """Train on ``batch``; return its loss (before the step)."""
        inputs = {}
        for key in self.keys:
            value = batch[key].to(self.device, non_blocking=True)
            inputs[key] = memory_format(value, self.channels_last and value.ndim >= 4)
        if self.mixer is not None:
            inputs["image"], inputs["label"] = self.mixer(inputs["image"], inputs["label"])
        if self.lr is not None:
            self.lr.apply(self.optimizer, self.steps)
        with autocast(self.device, self.amp):
            value = loss(inputs)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(value).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps += 1
        return float(value.detach())

    def state_dict(self) -> dict[str, Any]:
        """Optimizer and scaler states and the step count: what a checkpoint needs to continue."""
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (into an optimizer over the same parameter groups)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.steps = int(state["steps"])

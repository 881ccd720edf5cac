"""Distributed data parallel under ``torchrun``: process group, device and model wrapping.

``torchrun --nproc-per-node N -m clinical train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT``; the engine
joins that group (gloo on CPU, nccl on CUDA), shards the training set with a
``DistributedSampler``, and lets only rank 0 write checkpoints and call the
callbacks. Every rank validates the whole (small) validation set, so all ranks
take the same unfreezing and stopping decisions without messages.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import distributed as dist
from torch import nn

from clinical.errors import ConfigurationError

__all__ = ["DistInfo", "all_sum", "init_distributed", "resolve_device", "sync_buffers", "wrap_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job; ``world_size == 1`` when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, info: DistInfo = DistInfo()) -> torch.device:
    """``cpu``, ``cuda[:i]`` or ``auto`` (CUDA when available); under DDP on CUDA each rank takes ``cuda:LOCAL_RANK``.

    Every training loop (fine-tuning, federated rounds, pretraining) resolves its device here.

    Raises
    ------
    ConfigurationError
        When CUDA is asked for but not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(f"device={name!r} was asked for but CUDA is not available; use device='cpu'.")
        if info.world_size > 1:
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group ``torchrun`` (or a spawner setting the same variables) prepared.

    Returns ``DistInfo()`` when ``WORLD_SIZE`` is unset or 1. Uses nccl for CUDA and gloo for CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        logger.info("Joined the process group as rank %d of %d.", info.rank, info.world_size)
    return info


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model``.

    Call again after every unfreeze: DDP registers the parameters that require
    gradients when it is built, so a newly unfrozen group needs a new wrapper.
    """
    if info.world_size <= 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after an epoch's last
    step every rank holds statistics of its own shard; syncing them before
    validation keeps the ranks' models, scores and decisions identical.
    """
    if info.world_size <= 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def all_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum ``values`` over ranks (e.g. loss totals and item counts of each rank's shard)."""
    if info.world_size <= 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()

"""Checkpoints that resume a run exactly: model, optimizer, scaler, schedules, loop state and RNG states.

Everything stored is a tensor or plain Python data, so checkpoints load with
``torch.load(weights_only=True)`` and never execute code from the file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinical.errors import ConfigurationError

__all__ = ["CHECKPOINT_VERSION", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]

CHECKPOINT_VERSION = 2  # 2: the train step (optimizer, scaler, steps) is one entry; the schedule keeps its stage only


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy, python and sampler-generator RNG states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, then rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"version": CHECKPOINT_VERSION, **payload}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    ConfigurationError
        When the file is missing, unreadable, or of another checkpoint version.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"No checkpoint at {path}; pass the run's checkpoints/last.pt to resume.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or foreign file
        raise ConfigurationError(f"Cannot read the checkpoint {path.name}: {error}") from None
    if not isinstance(payload, dict) or payload.get("version") != CHECKPOINT_VERSION:
        raise ConfigurationError(
            f"{path.name} is not a clinical checkpoint of version {CHECKPOINT_VERSION}; "
            f"got {payload.get('version') if isinstance(payload, dict) else type(payload).__name__}."
        )
    return payload

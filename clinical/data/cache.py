"""An in-memory cache with a byte cap for the deterministic part of a transform chain.

Written by hand because MONAI's ``CacheDataset`` caps by item fraction, not by
bytes, and fills itself eagerly at construction; here items enter on first use
(or through an explicit preload) and stop entering once the cap is reached.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Randomizable

__all__ = ["ByteCappedCache", "nbytes", "split_deterministic"]

logger = logging.getLogger(__name__)


def nbytes(value: Any) -> int:
    """Bytes held by the arrays and tensors inside ``value`` (a dict, list, array or tensor)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


class ByteCappedCache:
    """Keep computed values until ``max_bytes`` is used up; later values are computed each time.

    No eviction: with a fixed dataset, evicting would only trade one reread for
    another, so the first items to arrive stay. Thread-safe for the main
    process; each DataLoader worker holds its own copy (preload before the
    workers fork to share one copy on write).

    Parameters
    ----------
    max_bytes
        Cap in bytes; 0 disables caching.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0 disables the cache); got {max_bytes}.")
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._store: dict[Hashable, Any] = {}
        self._lock = threading.Lock()
        self._warned = False

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._store

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return the cached value for ``key``, computing (and caching while room is left) on a miss."""
        if key in self._store:
            return self._store[key]
        value = compute()
        size = nbytes(value)
        with self._lock:
            if self.used_bytes + size <= self.max_bytes:
                self._store[key] = value
                self.used_bytes += size
            elif self.max_bytes and not self._warned:
                self._warned = True
                logger.warning(
                    "The item cache is full (%.1f MiB of %.1f MiB); further items are reread every epoch.",
                    self.used_bytes / 2**20,
                    self.max_bytes / 2**20,
                )
        return value


def split_deterministic(transform: Callable | None) -> tuple[Callable | None, Callable | None]:
    """Split a MONAI ``Compose`` into its deterministic prefix and the rest.

    The prefix (everything before the first random transform) gives the same
    output every epoch, so it is what may be cached; this is the rule MONAI's
    ``CacheDataset`` follows. A transform that is not a ``Compose`` counts as
    random unless it is a deterministic MONAI transform.
    """
    if transform is None:
        return None, None
    if not isinstance(transform, Compose):
        deterministic = _is_monai(transform) and not isinstance(transform, Randomizable)
        return (transform, None) if deterministic else (None, transform)
    steps = list(transform.transforms)
    first_random = next((i for i, t in enumerate(steps) if isinstance(t, Randomizable)), len(steps))
    head = Compose(steps[:first_random]) if first_random else None
    tail = Compose(steps[first_random:]) if first_random < len(steps) else None
    return head, tail


def _is_monai(transform: Callable) -> bool:
    return type(transform).__module__.startswith("monai.")

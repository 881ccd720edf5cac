"""Small 2D views of the cached arrays, for hashing and for the quick inflation model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.transform import resize
from tqdm.auto import tqdm

__all__ = ["central_plane", "thumbnails"]

logger = logging.getLogger(__name__)


def central_plane(array: np.ndarray) -> np.ndarray:
    """A 2D float plane of a channels-first array: the central slice of a volume, averaged over channels.

    ``(C, H, W)`` images, tiles and photographs give their channel mean;
    ``(C, D, H, W)`` volumes give the channel mean of slice ``D // 2``; a
    plain ``(H, W)`` array is returned as float.
    """
    plane = np.asarray(array)
    while plane.ndim > 3:
        plane = plane[:, plane.shape[1] // 2]
    if plane.ndim == 3:
        plane = plane.mean(axis=0, dtype=np.float64)
    if plane.ndim != 2:
        raise ValueError(f"Expected a channels-first array with 2 spatial axes or more; got shape {array.shape}.")
    return plane.astype(np.float64, copy=False)


def thumbnails(manifest: pd.DataFrame, cohort: str | Path, *, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read each item's cached array and shrink its central plane to ``size × size``.

    Returns ``(stack, ok)``: a ``(n_items, size, size)`` float array in
    manifest order and a boolean mask of the items that could be read. An
    unreadable array is logged with its cohort-relative path and the reason
    and left out, so one bad file does not stop the audit.
    """
    cohort = Path(cohort)
    stack = np.zeros((len(manifest), size, size))
    ok = np.zeros(len(manifest), dtype=bool)
    for row, relative in enumerate(
        tqdm(manifest["path"].astype(str), desc="reading arrays", unit="item", disable=None)
    ):
        try:
            plane = central_plane(np.load(cohort / relative, mmap_mode="r"))
        except (OSError, EOFError, ValueError) as error:
            logger.warning("Skipped %s: %s", relative, error)
            continue
        stack[row] = resize(plane, (size, size), anti_aliasing=True, preserve_range=True)
        ok[row] = True
    return stack, ok

"""Where attention MIL looked: a slide's tiles laid out at their positions, coloured by attention.

The thumbnail is rebuilt from the cohort's own tiles (at their level-0 coordinates), so it needs
neither the original slide file nor its path, and it shows exactly what the model saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from clinical.errors import ConfigurationError

__all__ = ["plot_attention"]

#: Side in pixels of one tile in the thumbnail.
_THUMB_TILE = 32


def plot_attention(
    tiles: Sequence[np.ndarray], xy: Sequence[tuple[int, int]], weights: Sequence[float], *, tile_size: int,
    title: str = "attention",
) -> Figure:
    """The tiles (uint8 ``(3, T, T)``) at level-0 ``xy`` with their attention weights as a heat overlay.

    Raises
    ------
    ConfigurationError
        ``tiles``, ``xy`` and ``weights`` differ in length or are empty.
    """
    if not len(tiles) == len(xy) == len(weights) or not len(tiles):
        raise ConfigurationError(f"one position and weight per tile needed; got {len(tiles)} tiles, {len(xy)} "
                                 f"positions, {len(weights)} weights.")
    scale = _THUMB_TILE / tile_size
    cells = [(round(x * scale), round(y * scale)) for x, y in xy]
    width = max(x for x, _ in cells) + _THUMB_TILE
    height = max(y for _, y in cells) + _THUMB_TILE
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    heat = np.full((height, width), np.nan)
    share = np.asarray(weights, dtype=np.float64) / max(float(np.max(weights)), 1e-12)
    for tile, (x, y), value in zip(tiles, cells, share, strict=True):
        rgb = np.clip(np.asarray(tile), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        canvas[y : y + _THUMB_TILE, x : x + _THUMB_TILE] = np.asarray(
            Image.fromarray(rgb).resize((_THUMB_TILE, _THUMB_TILE), Image.Resampling.BOX))
        heat[y : y + _THUMB_TILE, x : x + _THUMB_TILE] = value
    figure = Figure(figsize=(9, 4.5))
    left, right = figure.subplots(1, 2)
    left.imshow(canvas)
    left.set_title("tiles the model saw")
    right.imshow(canvas)
    shown = right.imshow(np.ma.masked_invalid(heat), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    right.set_title(title)
    figure.colorbar(shown, ax=right, label="attention / largest")
    for axis in (left, right):
        axis.set_axis_off()
    return figure

"""Whole-slide images (pyramidal TIFF, SVS, ...) through tiffslide: tissue mask, then tiles.

- Tissue mask at the lowest-resolution level: Otsu threshold (scikit-image) on
  the HSV saturation; stained tissue is saturated, glass background is not.
- Tiles of ``tile_size``×``tile_size`` pixels at ``tile_level`` on a regular grid;
  a tile is kept when at least ``min_tissue`` of its area is tissue in the mask.
- At most ``max_tiles`` per slide, chosen by a random generator seeded with the
  slide's content digest: the same slide always gives the same tiles.
- ``tile_x``/``tile_y`` are the tile's top-left corner in level-0 pixels (what
  ``read_region`` takes); spacing is µm per pixel at the tile level, NaN when
  the file does not state its microns per pixel.
- Decoded-size budget (``max_decoded_mb``), checked from the TIFF structure before any pixel
  is decoded: the lowest level, which is read whole for the mask, and one chunk (tile or
  strip) of the tiled level, which every ``read_region`` decodes whole. Over it: ``too-large``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from clinical.errors import ConfigurationError, IngestError, UnsupportedFileError
from clinical.ingest.reasons import Reason, Rejected, looks_corrupt
from clinical.ingest.units import DecodedItem, Unit

if TYPE_CHECKING:
    from clinical.ingest.options import IngestOptions

__all__ = ["decode", "is_pyramidal", "quiet_tifffile", "read_slide_tiles", "tissue_mask"]


@contextmanager
def quiet_tifffile() -> Iterator[None]:
    """Silence tifffile's logger while reading: its messages name the file, and file names may be PHI."""
    tifffile_logger = logging.getLogger("tifffile")
    previous = tifffile_logger.level
    tifffile_logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        tifffile_logger.setLevel(previous)


def is_pyramidal(path: str | Path) -> bool:
    """Whether a TIFF holds a resolution pyramid (a whole slide) rather than one flat image."""
    with quiet_tifffile(), tifffile.TiffFile(path) as tif:
        return bool(tif.series) and len(tif.series[0].levels) > 1


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail (H, W, 3): Otsu on saturation (all False when uniform)."""
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    saturation = rgb2hsv(rgb[..., :3])[..., 1]
    if float(saturation.max() - saturation.min()) < 1e-3:
        return np.zeros(saturation.shape, dtype=bool)
    return saturation > threshold_otsu(saturation)


def read_slide_tiles(
    path: str | Path,
    *,
    seed: int,
    tile_size: int,
    tile_level: int,
    max_tiles: int | None,
    min_tissue: float,
    options: IngestOptions | None = None,
) -> Iterator[tuple[np.ndarray, dict, list[float]]]:
    """Yield ``(tile, coordinates, spacing)``: uint8 RGB (3, tile_size, tile_size), tile_x/tile_y/tile_level, µm.

    ``options`` give the decoded-size budget, checked before the lowest level is read.

    Raises
    ------
    clinical.ingest.reasons.Rejected
        ``too-large`` over the budget; ``corrupt-pixels`` when a tile's data is truncated or damaged.
    ConfigurationError
        When ``tile_level`` does not exist in the slide.
    UnsupportedFileError
        When no tile holds enough tissue.
    IngestError
        When the slide cannot be opened or read.
    """
    import tiffslide

    try:
        with quiet_tifffile():
            slide = tiffslide.TiffSlide(str(path))
    except Exception as error:  # tiffslide/tifffile raise many types on broken files
        raise IngestError(f"tiffslide cannot open the slide ({type(error).__name__})") from error
    with slide, quiet_tifffile():
        if not 0 <= tile_level < slide.level_count:
            raise ConfigurationError(
                f"tile_level must be in [0, {slide.level_count - 1}] for this slide; got {tile_level}."
            )
        low = slide.level_count - 1
        if options is not None:
            _check_budget(slide, low, tile_level, options)
        try:
            thumbnail = np.asarray(slide.read_region((0, 0), low, slide.level_dimensions[low], as_array=True))
        except Exception as error:  # truncated tiles raise in the codec
            text = f"the slide's lowest level cannot be read ({type(error).__name__})"
            raise (Rejected(Reason.CORRUPT_PIXELS, text) if looks_corrupt(str(error)) else IngestError(text)) from error
        mask = tissue_mask(thumbnail)
        width, height = slide.level_dimensions[tile_level]
        down_tile = float(slide.level_downsamples[tile_level])
        down_mask = float(slide.level_downsamples[low])
        candidates = []
        for y in range(0, height - tile_size + 1, tile_size):
            for x in range(0, width - tile_size + 1, tile_size):
                scale = down_tile / down_mask
                top, left = int(y * scale), int(x * scale)
                bottom = max(int(np.ceil((y + tile_size) * scale)), top + 1)
                right = max(int(np.ceil((x + tile_size) * scale)), left + 1)
                window = mask[top:bottom, left:right]
                if window.size and window.mean() >= min_tissue:
                    candidates.append((round(x * down_tile), round(y * down_tile)))
        if not candidates:
            raise UnsupportedFileError(
                f"no {tile_size}×{tile_size} tile at level {tile_level} holds {min_tissue:.0%} tissue"
            )
        if max_tiles is not None and len(candidates) > max_tiles:
            chosen = np.random.default_rng(seed).choice(len(candidates), size=max_tiles, replace=False)
            candidates = [candidates[i] for i in sorted(chosen)]
        spacing = _spacing(slide.properties, down_tile)
        for x, y in candidates:
            try:
                tile = np.asarray(slide.read_region((x, y), tile_level, (tile_size, tile_size), as_array=True))
            except Exception as error:  # codec errors on a damaged tile
                text = f"a tile at ({x}, {y}) cannot be read ({type(error).__name__})"
                raise (Rejected(Reason.CORRUPT_PIXELS, text) if looks_corrupt(str(error)) else IngestError(text)) \
                    from error
            tile = np.ascontiguousarray(tile[..., :3].transpose(2, 0, 1)).astype(np.uint8)
            yield tile, {"tile_x": x, "tile_y": y, "tile_level": tile_level}, spacing


def _check_budget(slide, low: int, tile_level: int, options: IngestOptions) -> None:
    """The lowest level (read whole) and one chunk of the tiled level against ``max_decoded_mb``."""
    width, height = slide.level_dimensions[low]
    samples, itemsize, chunk = 3, 1, None
    try:
        levels = slide.ts_tifffile.series[0].levels
        if len(levels) == slide.level_count:
            page = levels[low].keyframe
            samples, itemsize = max(int(page.samplesperpixel), 1), page.dtype.itemsize
            chunk = tuple(int(c) for c in levels[tile_level].keyframe.chunks)
    except Exception:  # an unusual structure: the level dimensions alone are checked
        chunk = None
    depth = samples * itemsize
    options.check_decoded_size(width * height * depth, f"slide level {low} of {width}×{height} pixels × {depth} bytes")
    if chunk is not None:
        shape = "×".join(map(str, chunk))
        what = f"one tile/strip {shape} of slide level {tile_level}"
        options.check_decoded_size(int(np.prod(chunk)) * itemsize, what)


def _spacing(properties: dict, downsample: float) -> list[float]:
    import tiffslide

    def micrometres(name: str) -> float:
        value = properties.get(name)
        return float(value) * downsample if value else float("nan")

    return [micrometres(tiffslide.PROPERTY_NAME_MPP_Y), micrometres(tiffslide.PROPERTY_NAME_MPP_X)]


def decode(unit: Unit, options: IngestOptions) -> Iterator[DecodedItem]:
    """The tiles of one slide, chosen with a generator seeded by the slide's content digest."""
    tiles = read_slide_tiles(
        unit.paths[0],
        seed=int(unit.source_digest[:16], 16),
        tile_size=options.tile_size,
        tile_level=options.tile_level,
        max_tiles=options.max_tiles_per_slide,
        min_tissue=options.min_tissue,
        options=options,
    )
    for tile, coordinates, spacing in tiles:
        level, x, y = coordinates["tile_level"], coordinates["tile_x"], coordinates["tile_y"]
        yield DecodedItem(tile, "tile", spacing, f"tile:{level}:{x}:{y}:{options.tile_size}", coordinates)

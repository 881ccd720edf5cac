"""Photographs and flat TIFFs (papyri, fundus, dermatology): PIL, EXIF orientation, bomb guard.

- The pixel count is checked from the header before any decoding; an image over
  ``max_pixels`` (default ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 Mpx) is a
  rejection, never a decompressed allocation. So is one whose size × its mode's bytes per
  pixel exceeds ``max_decoded_mb``. PIL's own bomb limits are relied on as the outer wall:
  ``Image.open`` raises over twice ``MAX_IMAGE_PIXELS`` (caught as ``too-large``), PNG text
  chunks stay under ``PngImagePlugin.MAX_TEXT_CHUNK``, and ``ImageFile.LOAD_TRUNCATED_IMAGES``
  is left False, so that a truncated file raises instead of loading grey.
- Pixel integrity: a load that raises or warns about truncated or corrupt data is a
  ``corrupt-pixels`` rejection (:mod:`clinical.ingest.reasons`), not an item.
- ``ImageOps.exif_transpose`` applies the camera's orientation (EXIF 0x0112).
- 8-bit images stay uint8; 16-bit greyscale (modes ``I;16*``, ``I``) stays uint16;
  float images are scaled to [0, 1] and stored as uint16.
- Flat TIFFs are read with tifffile, because PIL reduces 16-bit RGB to 8 bits; their
  Orientation tag (0x0112) is not applied (scanners write 1).
- Palette, alpha, CMYK and 1-bit images are converted to RGB or L.
- Optional tiling (``tile``): an image larger than ``tile`` in either side is cut
  into ``tile``×``tile`` pieces on a regular grid (edges dropped).
- Image quality (:func:`image_quality`), measured on every photograph or tile and kept in the
  manifest: ``quality_blur`` (scikit-image's no-reference blur effect, 0 sharp – 1 blurred),
  ``quality_exposure`` (mean luminance inside the field), ``quality_clipped`` (share of field
  pixels saturated) and their summary ``quality_score`` in [0, 1] (1 good). A fundus camera's
  black surround is not field: pixels darker than ``FIELD_LEVEL`` are left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage
from skimage.measure import block_reduce, blur_effect

from clinical.errors import IngestError, UnsupportedFileError
from clinical.ingest.reasons import Reason, Rejected, looks_corrupt
from clinical.ingest.units import DecodedItem, Unit

if TYPE_CHECKING:
    from clinical.ingest.options import IngestOptions

__all__ = ["QUALITY_COLUMNS", "decode", "image_quality", "read_photo", "tiles_of"]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: The manifest columns :func:`image_quality` fills.
QUALITY_COLUMNS = ("quality_blur", "quality_exposure", "quality_clipped", "quality_score")
#: Luminance (0–1) below which a pixel is the camera's dark surround, not field.
FIELD_LEVEL = 0.03
#: Blur effect of a sharp photograph and of a defocused one (measured on the synthetic fundus cohort: sharp
#: 0.34–0.49, defocused 0.65–0.80): ``quality_score``'s sharpness term falls linearly between them.
SHARP_BLUR, DEFOCUSED_BLUR = 0.45, 0.6
#: Mean field luminance of a well-exposed photograph; the exposure term falls linearly to 0 at the outer limits
#: (synthetic fundus: good 0.28–0.41, under-exposed 0.07–0.13, over-exposed 0.57–0.74).
WELL_EXPOSED, EXPOSURE_LIMITS = (0.2, 0.5), (0.05, 0.8)
#: Longest side the measures are taken at (block means above it), so that a large photograph costs little.
_QUALITY_SIDE = 512


def read_photo(
    path: str | Path, *, max_pixels: int | None = None, options: IngestOptions | None = None
) -> np.ndarray:
    """Read a photograph as (C, H, W), uint8 or uint16, channels RGB or L.

    ``options`` give the decoded-size budget (``max_decoded_mb``), checked before decoding.

    Raises
    ------
    clinical.ingest.reasons.Rejected
        ``too-large`` when the image has more than ``max_pixels`` pixels (a decompression bomb)
        or its decoded size exceeds the budget; ``corrupt-pixels`` when the data is truncated or damaged.
    UnsupportedFileError
        When the image is empty.
    IngestError
        When the file cannot be decoded otherwise.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    with open(path, "rb") as handle:
        if handle.read(4) in _TIFF_MAGIC:
            return _read_tiff(path, limit, options)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise Rejected(Reason.TOO_LARGE, f"decompression bomb refused by PIL ({error.args[0][:80]})") from error
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        code = Reason.CORRUPT_PIXELS if looks_corrupt(str(error)) else Reason.DECODE_ERROR
        raise Rejected(code, f"PIL cannot open the image ({type(error).__name__}: {str(error)[:80]})") from error
    with image:
        width, height = image.size
        if width * height == 0:
            raise UnsupportedFileError(f"empty image ({width}×{height} pixels)")
        if limit and width * height > limit:
            raise Rejected(
                Reason.TOO_LARGE,
                f"decompression bomb guard: {width}×{height} = {width * height} pixels exceeds max_pixels={limit}",
            )
        if options is not None:
            depth = _bytes_per_pixel(image.mode)
            options.check_decoded_size(width * height * depth, f"{width}×{height} pixels × {depth} bytes")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image.load()
            damaged = [str(w.message) for w in caught if looks_corrupt(str(w.message))]
            if damaged:
                raise Rejected(Reason.CORRUPT_PIXELS, f"the image data is damaged (PIL warned: {damaged[0][:80]})")
            image = ImageOps.exif_transpose(image)
            arr = _to_array(image)
        except (UnsupportedFileError, IngestError):
            raise
        except Exception as error:  # truncated files raise OSError during load
            text = f"{type(error).__name__}: {str(error)[:80]}"
            if looks_corrupt(str(error)):
                raise Rejected(Reason.CORRUPT_PIXELS, f"the image data is truncated or corrupt ({text})") from error
            raise IngestError(f"the image data cannot be decoded ({text})") from error
    return arr


def _bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of the array decoding makes from an image of ``mode`` (palettes become RGB)."""
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return 2
    if mode in ("I", "F"):
        return 4
    if mode in ("1", "L", "LA", "La"):
        return 1
    return 4 if mode in ("RGBA", "CMYK", "RGBX", "RGBa", "PA") else 3


def tiles_of(image: np.ndarray, tile: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Yield ``(piece, x, y)`` of a (C, H, W) image cut on a ``tile``-pixel grid; a small image is one piece."""
    _, height, width = image.shape
    if height <= tile and width <= tile:
        yield image, 0, 0
        return
    for y in range(0, height - tile + 1, tile):
        for x in range(0, width - tile + 1, tile):
            yield np.ascontiguousarray(image[:, y : y + tile, x : x + tile]), x, y


def decode(unit: Unit, options: IngestOptions) -> Iterator[DecodedItem]:
    """The photograph, or with ``options.photo_tile`` its tiles; spacing unknown (NaN)."""
    image = read_photo(unit.paths[0], max_pixels=options.max_pixels, options=options)
    spacing = [float("nan"), float("nan")]
    if options.photo_tile is None:
        yield DecodedItem(image, "photo", spacing, extra=image_quality(image))
        return
    for piece, x, y in tiles_of(image, options.photo_tile):
        position = f"tile:{x}:{y}:{options.photo_tile}"
        extra = {"tile_x": x, "tile_y": y, "tile_level": 0, **image_quality(piece)}
        yield DecodedItem(piece, "photo", spacing, position, extra)


def image_quality(image: np.ndarray) -> dict[str, float]:
    """Sharpness and exposure of a (C, H, W) photograph, as the :data:`QUALITY_COLUMNS`.

    Screening graders reject blurred and badly exposed photographs because small lesions vanish in them;
    these are the measures they judge by. ``quality_score`` is the product of a sharpness term (1 up to
    :data:`SHARP_BLUR`, 0 from :data:`DEFOCUSED_BLUR`), an exposure term (1 inside :data:`WELL_EXPOSED`,
    0 outside :data:`EXPOSURE_LIMITS`) and the unclipped share of the field.
    """
    scale = 255.0 if image.dtype == np.uint8 else 65535.0
    values = image.astype(np.float32) / scale
    factor = max(1, -(-max(values.shape[1:]) // _QUALITY_SIDE))
    if factor > 1:
        values = block_reduce(values, (1, factor, factor), np.mean)
    luminance = values.mean(axis=0)
    field = ndimage.binary_erosion(luminance > FIELD_LEVEL, iterations=2)
    if field.sum() < 0.05 * field.size:  # (nearly) black: judge every pixel
        field = np.ones_like(field)
    blur = float(blur_effect(luminance)) if min(luminance.shape) >= 8 else 1.0
    exposure = float(luminance[field].mean())
    clipped = float((values[:, field].max(axis=0) >= 0.98).mean())
    sharp = float(np.clip((DEFOCUSED_BLUR - blur) / (DEFOCUSED_BLUR - SHARP_BLUR), 0.0, 1.0))
    (low, high), (lowest, highest) = WELL_EXPOSED, EXPOSURE_LIMITS
    exposed = float(np.clip(min((exposure - lowest) / (low - lowest), (highest - exposure) / (highest - high)), 0, 1))
    return {"quality_blur": blur, "quality_exposure": exposure, "quality_clipped": clipped,
            "quality_score": sharp * exposed * (1.0 - clipped)}


def _to_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(image, dtype=np.uint16)[None]
    elif image.mode == "I":
        arr = np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.uint16)[None]
    elif image.mode == "F":
        arr = _float_to_uint16(np.asarray(image, dtype=np.float32))[None]
    elif image.mode in ("L", "RGB"):
        arr = np.asarray(image, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    elif image.mode in ("1", "LA", "La"):
        arr = np.asarray(image.convert("L"), dtype=np.uint8)[None]
    else:  # P, PA, RGBA, CMYK, YCbCr, LAB, HSV ...
        arr = np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def _read_tiff(path: str | Path, limit: int | None, options: IngestOptions | None) -> np.ndarray:
    """The first page of a flat TIFF at its own bit depth, its size checked from the IFD before decoding."""
    import tifffile

    from clinical.ingest.slides import quiet_tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if limit and int(np.prod(page.shape[:2])) > limit:
                raise Rejected(
                    Reason.TOO_LARGE,
                    f"decompression bomb guard: {page.shape[1]}×{page.shape[0]} pixels exceeds max_pixels={limit}",
                )
            if options is not None:
                shape = "×".join(str(int(d)) for d in page.shape)
                options.check_decoded_size(int(np.prod(page.shape)) * page.dtype.itemsize,
                                           f"TIFF page {shape} of {page.dtype}")
            arr = page.asarray()
    except Rejected:
        raise
    except Exception as error:  # tifffile raises TiffFileError, ValueError, codec errors ... on broken files
        if looks_corrupt(str(error)) or "codec" in type(error).__module__.lower():
            reason = f"the TIFF pixel data is truncated or corrupt ({type(error).__name__}: {str(error)[:80]})"
            raise Rejected(Reason.CORRUPT_PIXELS, reason) from error
        raise IngestError(f"the TIFF cannot be decoded ({type(error).__name__})") from error
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        arr = arr[..., : 3 if arr.shape[-1] >= 3 else 1].transpose(2, 0, 1)
    else:
        raise UnsupportedFileError(f"TIFF page of shape {list(arr.shape)} is not a 2D greyscale or RGB image")
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        return _float_to_uint16(arr.astype(np.float32))
    return np.clip(arr, 0, 65535).astype(np.uint16)


def _float_to_uint16(arr: np.ndarray) -> np.ndarray:
    finite = arr[np.isfinite(arr)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scaled = (np.nan_to_num(arr, nan=low, posinf=high, neginf=low) - low) / (high - low) if high > low else arr * 0
    return np.round(scaled * 65535).astype(np.uint16)

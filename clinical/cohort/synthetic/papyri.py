"""Photographs of papyrus fragments with hand-written Greek-letter-like glyphs.

The label is the glyph class (twelve capital letters drawn as pen strokes,
see :data:`GLYPHS`). Most photos are crops of one glyph; a few large
photographs (2000 px and more) hold several glyphs of one class on a wide
fragment and must be tiled: their glyph boxes are in ``ground_truth.csv``
(``[x, y, w, h]`` in the upright image, i.e. after the EXIF orientation is applied).

The papyrus is two crossed layers of fibres (horizontal over vertical) with
stains and holes. Each ``<site>`` folder is a collection photographed with
its own light, white balance and resolution; each ``<papyrus_dir>`` is one
papyrus, the "patient": with ``patient_effect`` every papyrus keeps its fibre
colour and texture and is written mostly in one hand and one letter (a
writing exercise), so an image-level split lets a model recognise the
papyrus instead of the letter; without it colour, texture and letters are
drawn per photo.

Formats: PNG and JPEG (some JPEGs carry an EXIF Orientation other than 1 and
store the pixels accordingly rotated), and one 16-bit RGB TIFF per cohort
(PIL opens it as 8-bit RGB; tifffile keeps the 16 bits).

``labels.csv`` is keyed by ``file`` (relative to ``papyri/``). Ground-truth
columns beyond the common ones: ``photo_kind`` (crop|large), ``format``
(png|jpg|tif), ``bit_depth``, ``exif_orientation`` (0x0112, 1 when absent),
``width, height`` (upright), ``glyph_boxes`` (large photos) and ``n_glyphs``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm.auto import tqdm

from clinical.cohort.synthetic.records import opaque_name, rng_for, write_task_tables
from clinical.cohort.synthetic.sizes import SizeSpec
from clinical.cohort.synthetic.textures import smooth_noise, streak_noise

__all__ = ["GLYPHS", "SITES", "PapyrusSite", "generate_papyri"]

logger = logging.getLogger(__name__)

TASK = "papyri"

#: Pen strokes of each glyph in a unit box (x right, y down): lines as (x0, y0, x1, y1); ``"O"`` is an ellipse.
GLYPHS: dict[str, tuple] = {
    "alpha": ((0.1, 1.0, 0.5, 0.0), (0.5, 0.0, 0.9, 1.0), (0.3, 0.6, 0.7, 0.6)),
    "gamma": ((0.25, 1.0, 0.25, 0.0), (0.25, 0.0, 0.85, 0.0)),
    "delta": ((0.5, 0.0, 0.1, 1.0), (0.5, 0.0, 0.9, 1.0), (0.1, 1.0, 0.9, 1.0)),
    "epsilon": ((0.25, 0.0, 0.25, 1.0), (0.25, 0.0, 0.85, 0.0), (0.25, 0.5, 0.7, 0.5), (0.25, 1.0, 0.85, 1.0)),
    "eta": ((0.2, 0.0, 0.2, 1.0), (0.8, 0.0, 0.8, 1.0), (0.2, 0.5, 0.8, 0.5)),
    "iota": ((0.5, 0.0, 0.5, 1.0),),
    "kappa": ((0.25, 0.0, 0.25, 1.0), (0.85, 0.0, 0.25, 0.55), (0.4, 0.42, 0.85, 1.0)),
    "lambda": ((0.5, 0.0, 0.1, 1.0), (0.5, 0.0, 0.9, 1.0)),
    "omicron": ("O",),
    "pi": ((0.2, 1.0, 0.2, 0.0), (0.1, 0.0, 0.9, 0.0), (0.8, 0.0, 0.8, 1.0)),
    "tau": ((0.1, 0.0, 0.9, 0.0), (0.5, 0.0, 0.5, 1.0)),
    "chi": ((0.1, 0.0, 0.9, 1.0), (0.9, 0.0, 0.1, 1.0)),
}
CLASSES = tuple(GLYPHS)

#: EXIF Orientation values (0x0112) and the PIL transpose that stores an upright image so that
#: a viewer applying the tag shows it upright again.
_STORE_FOR_ORIENTATION = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@dataclass(frozen=True)
class PapyrusSite:
    """How one collection photographs its papyri."""

    name: str
    white_balance: tuple[float, float, float]
    brightness: float
    vignette: float
    scale: float  # photo side relative to the size's crop size
    jpeg_share: float  # share of photos saved as JPEG (the rest PNG)
    jpeg_quality: int


SITES = (
    PapyrusSite("oxyrhynchus", (1.0, 0.97, 0.9), 1.0, 0.15, 1.0, 0.5, 90),
    PapyrusSite("tebtunis", (1.05, 1.0, 0.85), 0.9, 0.3, 1.25, 0.8, 85),
    PapyrusSite("karanis", (0.95, 0.98, 1.0), 1.08, 0.05, 0.75, 0.3, 92),
)


def _papyrus(
    size: tuple[int, int], signature: np.random.Generator, rng: np.random.Generator, px_scale: float
) -> np.ndarray:
    """Float RGB in [0, 1]: two layers of fibres, stains and a few dark holes; ``px_scale`` is pixels per unit."""
    base = np.array([0.78, 0.64, 0.42]) * signature.uniform(0.85, 1.1, size=3)
    fibre_width = float(signature.uniform(0.8, 2.0)) * px_scale
    horizontal = streak_noise(rng, size, 20.0 * fibre_width, fibre_width, 1)
    vertical = streak_noise(rng, size, 20.0 * fibre_width, fibre_width, 0)
    stain = smooth_noise(rng, size, min(size) / 5)
    contrast = float(signature.uniform(0.04, 0.09))
    shade = 1.0 + contrast * horizontal + 0.4 * contrast * vertical + 0.05 * stain
    image = base[None, None, :] * shade[..., None]
    holes = smooth_noise(rng, size, 6.0 * px_scale) > 2.8
    image[holes] *= 0.35
    return np.clip(image, 0, 1)


def _ink(
    size: tuple[int, int], glyph: str, boxes: list[list[int]], hand: np.random.Generator, rng: np.random.Generator
) -> np.ndarray:
    """Ink coverage in [0, 1] of ``glyph`` written in each box (x, y, w, h) with one jittered pen."""
    canvas = Image.new("L", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(canvas)
    slant = float(hand.uniform(-0.15, 0.15))
    pen = float(hand.uniform(0.07, 0.12))
    width = 1
    for x, y, w, h in boxes:
        width = max(1, round(min(w, h) * pen))

        def point(px: float, py: float, x: int = x, y: int = y, w: int = w, h: int = h) -> tuple[float, float]:
            jx, jy = rng.normal(0, 0.04, size=2)
            return x + (px + jx + slant * (1 - py)) * w, y + (py + jy) * h

        for stroke in GLYPHS[glyph]:
            if stroke == "O":
                draw.ellipse([point(0.15, 0.05), point(0.85, 0.95)], outline=255, width=width)
            else:
                draw.line([point(stroke[0], stroke[1]), point(stroke[2], stroke[3])], fill=255, width=width)
    ink = np.asarray(canvas, dtype=np.float32) / 255.0
    return ndimage.gaussian_filter(ink, max(0.5, width / 4))


def _photograph(image: np.ndarray, site: PapyrusSite, light: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) * 2
    out = image * np.array(site.white_balance) * site.brightness * float(light.uniform(0.93, 1.07))
    out = out * (1 - site.vignette * r2)[..., None]
    out += 0.01 * light.standard_normal(out.shape)
    return np.clip(out, 0, 1)


def _compose(
    size: tuple[int, int], glyph: str, boxes: list[list[int]], site: PapyrusSite,
    signature: np.random.Generator, rng: np.random.Generator,
) -> np.ndarray:
    px_scale = max(1.0, min(min(b[2], b[3]) for b in boxes) / 40)
    sheet = _papyrus(size, signature, rng, px_scale)
    ink_colour = np.array([0.16, 0.1, 0.06]) * signature.uniform(0.7, 1.3)
    hand = rng_for(int(signature.integers(2**31)), "hand")
    ink = _ink(size, glyph, boxes, hand, rng)
    ink *= float(rng.uniform(0.75, 0.95)) * (1 - 0.25 * np.clip(smooth_noise(rng, size, 3.0 * px_scale), -1, 1))
    coloured = sheet * (1 - ink[..., None]) + ink_colour * ink[..., None]
    return _photograph(coloured, site, rng)


def _glyph_boxes(rng: np.random.Generator, size: tuple[int, int], count: int, glyph_px: int) -> list[list[int]]:
    """Non-overlapping glyph boxes on a grid of lines, as a scribe writes."""
    h, w = size
    boxes: list[list[int]] = []
    per_line = max(1, w // (2 * glyph_px))
    lines = max(1, h // (2 * glyph_px))
    cells = rng.choice(per_line * lines, size=min(count, per_line * lines), replace=False)
    for cell in sorted(cells.tolist()):
        row, col = divmod(cell, per_line)
        gw = int(glyph_px * rng.uniform(0.8, 1.1))
        gh = int(glyph_px * rng.uniform(0.9, 1.1))
        x = int(col * 2 * glyph_px + rng.integers(0, max(1, 2 * glyph_px - gw)))
        y = int(row * 2 * glyph_px + rng.integers(0, max(1, 2 * glyph_px - gh)))
        boxes.append([x, y, gw, gh])
    return boxes


def _save(image: np.ndarray, path: Path, fmt: str, orientation: int, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "tif":
        tifffile.imwrite(path, np.round(image * 65535).astype(np.uint16), photometric="rgb", metadata=None)
        return
    picture = Image.fromarray(np.round(image * 255).astype(np.uint8), mode="RGB")
    if fmt == "png":
        picture.save(path, format="PNG")
        return
    exif = Image.Exif()
    if orientation != 1:
        picture = picture.transpose(_STORE_FOR_ORIENTATION[orientation])
        exif[0x0112] = orientation
    picture.save(path, format="JPEG", quality=quality, exif=exif.tobytes())


def generate_papyri(
    out: Path, spec: SizeSpec, *, seed: int, patient_effect: bool, finding_strength: float
) -> list[dict]:
    """Write ``out/papyri/`` and its tables; return the ground-truth rows (one per photograph).

    ``finding_strength`` does not apply: the glyph is the object itself.
    """
    task_dir = out / TASK
    rows_out: list[dict] = []
    labels: list[dict] = []
    n = spec.papyri_per_site
    jobs = [(s, site, i) for s, site in enumerate(SITES) for i in range(n)]
    large_rng = rng_for(seed, TASK, "large")
    large_for = set(large_rng.choice(len(jobs), size=min(spec.large_photos, len(jobs)), replace=False).tolist())
    tif_for = int(rng_for(seed, TASK, "tif").integers(len(jobs)))
    for p, (s, site, i) in enumerate(tqdm(jobs, desc="papyri", unit="papyrus", disable=None, leave=False)):
        prng = rng_for(seed, TASK, "papyrus", p)
        papyrus_dir = opaque_name(seed, TASK, "papyrus", p)
        favourite = CLASSES[int(prng.integers(len(CLASSES)))]
        photos = [("crop", k) for k in range(spec.crops_per_papyrus)] + ([("large", 0)] if p in large_for else [])
        for kind, k in photos:
            rng = rng_for(seed, TASK, "photo", p, kind, k)
            glyph = favourite if patient_effect and rng.random() < 0.75 else CLASSES[int(rng.integers(len(CLASSES)))]
            signature = rng_for(seed, TASK, "signature", *((p,) if patient_effect else (p, kind, k)))
            if kind == "large":
                size = (int(spec.large_size * 0.75), spec.large_size)
                glyph_px = max(48, spec.large_size // 16)
                boxes = _glyph_boxes(rng, size, int(rng.integers(4, 9)), glyph_px)
            else:
                side = round(spec.crop_size * site.scale * rng.uniform(0.9, 1.15))
                size = (side, round(side * rng.uniform(0.85, 1.15)))
                gw, gh = int(size[1] * rng.uniform(0.55, 0.7)), int(size[0] * rng.uniform(0.6, 0.75))
                boxes = [[int(rng.integers(2, size[1] - gw - 1)), int(rng.integers(2, size[0] - gh - 1)), gw, gh]]
            image = _compose(size, glyph, boxes, site, signature, rng)
            if kind == "crop" and k == 0 and p == tif_for:
                fmt, orientation = "tif", 1
            elif kind == "crop" and k == 1 and i == 0:  # every collection has a rotated JPEG, whatever the seed
                fmt, orientation = "jpg", (6, 3, 8)[s % 3]
            elif rng.random() < site.jpeg_share:
                fmt = "jpg"
                orientation = int(rng.choice([1, 1, 3, 6, 8]))
            else:
                fmt, orientation = "png", 1
            rel = f"{site.name}/{papyrus_dir}/{opaque_name(seed, TASK, 'file', p, kind, k)}.{fmt}"
            _save(image, task_dir / rel, fmt, orientation, site.jpeg_quality)
            rows_out.append({
                "task": TASK, "file": rel, "files": [rel], "patient_id": papyrus_dir, "site": site.name,
                "label": glyph, "photo_kind": kind, "format": fmt, "bit_depth": 16 if fmt == "tif" else 8,
                "exif_orientation": orientation, "width": size[1], "height": size[0],
                "glyph_boxes": boxes if kind == "large" else "", "n_glyphs": len(boxes),
            })
            labels.append({"file": rel, "label": glyph})
    write_task_tables(task_dir, rows_out, labels, EXTRA_COLUMNS)
    logger.info("Wrote %d papyrus photographs of %d papyri.", len(rows_out), len(jobs))
    return rows_out


EXTRA_COLUMNS = ("photo_kind", "format", "bit_depth", "exif_orientation", "width", "height", "glyph_boxes", "n_glyphs")

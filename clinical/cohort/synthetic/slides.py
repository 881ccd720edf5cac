"""Whole-slide images: pyramidal tiled TIFFs of H&E-like tissue islands with a weak slide label.

Each slide holds a few tissue islands on a near-white background. On a
``positive`` slide one or two islands (never all) carry a tumour-like
texture: denser, larger, darker nuclei in clusters. The rest of the tissue,
and every island of a ``negative`` slide, is normal stroma with sparse small
nuclei. The label is the slide's (and the patient's), so a patch classifier
meets the weak-label problem of the KimiaNet setting; the boxes of the
label-carrying islands are in ``ground_truth.csv`` (level-0 pixels ``[x, y, w, h]``).

Labels are balanced within every site (each site's patients cycle through the
classes), so site and label are independent and no slide result can come from
recognising the laboratory. Every patient has two or three slides.

Colours come from Beer–Lambert optical densities of haematoxylin and eosin;
each site stains differently, and with ``patient_effect`` each patient keeps
one stain shade and stroma texture across slides.

Files: tiled (256 × 256) JPEG-compressed TIFF, the full-resolution image in the
first page and the reduced levels (each half the previous, down to 256 px or
less) as SubIFDs, with the resolution tags set from the site's µm per pixel,
so ``tiffslide.TiffSlide(path).level_count >= 3``.

``labels.csv`` is keyed by ``file`` (relative to ``slides/``); the patient is
the parent folder. Ground-truth columns beyond the common ones:
``level_count, level_dimensions`` (``[width, height]`` per level), ``mpp``,
``label_boxes``, ``n_islands`` and ``tissue_fraction``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from clinical.cohort.synthetic.records import balanced_labels, opaque_name, rng_for, write_task_tables
from clinical.cohort.synthetic.sizes import SizeSpec
from clinical.cohort.synthetic.textures import smooth_noise, streak_noise
from clinical.errors import ConfigurationError

__all__ = ["CLASSES", "SITES", "SlideSite", "generate_slides"]

logger = logging.getLogger(__name__)

TASK = "slides"
CLASSES = ("negative", "positive")
TILE = 256
#: Optical density per unit stain in (R, G, B) (Ruifrok & Johnston's H&E vectors).
_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29], dtype=np.float32)
_EOSIN = np.array([0.07, 0.99, 0.11], dtype=np.float32)


@dataclass(frozen=True)
class SlideSite:
    """How one laboratory stains and scans."""

    name: str
    mpp: float  # µm per level-0 pixel
    haematoxylin: float  # stain strength multipliers
    eosin: float
    background_od: float  # optical density of the glass
    jpeg_quality: int


SITES = (
    SlideSite("northfield", 0.50, 1.0, 1.0, 0.03, 85),
    SlideSite("riverside", 0.46, 1.25, 0.8, 0.05, 80),
    SlideSite("eastgate", 0.52, 0.85, 1.25, 0.02, 90),
)


@dataclass(frozen=True)
class _Island:
    """One tissue island: its mask inside the box whose top-left corner is ``(y, x)`` (level-0 pixels)."""

    y: int
    x: int
    mask: np.ndarray

    def box(self) -> list[int]:
        """``[x, y, w, h]`` of the tissue itself."""
        ys, xs = np.nonzero(self.mask)
        x0, y0 = int(xs.min()), int(ys.min())
        return [self.x + x0, self.y + y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def _islands(rng: np.random.Generator, size: tuple[int, int]) -> list[_Island]:
    """Three to six irregular tissue islands that do not touch (their bounding circles are kept apart)."""
    h, w = size
    islands: list[_Island] = []
    placed: list[tuple[float, float, float]] = []
    wanted = int(rng.integers(3, 7))
    for _ in range(60):
        if len(islands) >= wanted:
            break
        ry, rx = rng.uniform(0.09, 0.18, size=2) * min(h, w)
        reach = 1.35 * max(ry, rx)
        cy, cx = rng.uniform(reach, h - reach), rng.uniform(reach, w - reach)
        if any(np.hypot(cy - y, cx - x) < reach + r + 0.02 * min(h, w) for y, x, r in placed):
            continue
        y0, x0 = int(cy - reach), int(cx - reach)
        yy, xx = np.mgrid[y0 : int(cy + reach), x0 : int(cx + reach)].astype(np.float32)
        r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        r += 0.22 * smooth_noise(rng, r.shape, min(rx, ry) / 4)
        islands.append(_Island(y0, x0, r < 1))
        placed.append((cy, cx, reach))
    return islands


def _nuclei(rng: np.random.Generator, size: tuple[int, int], density: float, radius: float) -> np.ndarray:
    """A nuclei map in [0, 1]: Poisson seeds blurred to blobs of about ``radius`` pixels."""
    seeds = (rng.random(size, dtype=np.float32) < density).astype(np.float32)
    blobs = ndimage.gaussian_filter(seeds, radius / 1.5) * (2 * np.pi * (radius / 1.5) ** 2)
    return np.clip(blobs * 1.6, 0, 1)


def _focus(rng: np.random.Generator, mask: np.ndarray, focus: float) -> np.ndarray:
    """A soft disc of about ``focus`` × the island's area, centred on one of its tissue pixels.

    Confines the tumour texture to a focus so that it covers a small share of a slide's tiles (few
    witnesses among many weakly labelled tiles: the multiple-instance regime).
    """
    ys, xs = np.nonzero(mask)
    centre = int(rng.integers(len(ys)))
    radius = max(np.sqrt(focus * len(ys) / np.pi), 1.0)
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]].astype(np.float32)
    inside = (np.hypot(yy - ys[centre], xx - xs[centre]) <= radius).astype(np.float32)
    return ndimage.gaussian_filter(inside, 3.0)


def _render(
    size: tuple[int, int], islands: list[_Island], tumour: list[int], site: SlideSite,
    signature: np.random.Generator, rng: np.random.Generator, strength: float, focus: float = 1.0,
    boxes: dict[int, list[int]] | None = None,
) -> np.ndarray:
    """RGB uint8 level-0 image; only the islands' boxes are computed, the glass is a flat colour with grain.

    With ``focus < 1`` the tumour texture of an island is one focus, whose ``[x, y, w, h]`` goes into ``boxes``
    by island index.
    """
    boxes = {} if boxes is None else boxes
    glass = 255.0 * np.exp(-site.background_od)
    image = np.full((*size, 3), glass, dtype=np.float32)
    image += 1.5 * rng.standard_normal((*size, 1), dtype=np.float32)
    shade = signature.uniform(0.85, 1.15, size=2)
    fibre_axis = int(signature.integers(2))
    fibre_contrast = float(signature.uniform(0.5, 1.5))
    for index, island in enumerate(islands):
        box = (slice(island.y, island.y + island.mask.shape[0]), slice(island.x, island.x + island.mask.shape[1]))
        local = island.mask.shape
        tissue = ndimage.gaussian_filter(island.mask.astype(np.float32), 2.0)
        fibres = streak_noise(rng, local, 12.0, 1.2, fibre_axis)
        eosin = tissue * (0.45 + 0.12 * fibres * fibre_contrast) * site.eosin * shade[1]
        haem = _nuclei(rng, local, 0.0025, 2.2) * 0.55
        if index in tumour and strength > 0:
            s = min(strength, 2.0)
            cluster = np.clip(0.5 + 0.5 * smooth_noise(rng, local, 18.0), 0, 1)
            dense = _nuclei(rng, local, 0.0025 * (1 + 2.5 * s), 2.2 * (1 + 0.4 * s)) * (0.55 + 0.35 * s)
            weight = ndimage.gaussian_filter(island.mask.astype(np.float32), 4.0)
            if focus < 1:  # one focus instead of clusters over the whole island
                weight = weight * _focus(rng, island.mask, focus)
                ys, xs = np.nonzero(weight > 0.1)
                boxes[index] = [island.x + int(xs.min()), island.y + int(ys.min()),
                                int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1]
            else:
                weight = weight * cluster
            haem = haem * (1 - weight) + dense * weight
        haem = haem * tissue * site.haematoxylin * shade[0]
        od = site.background_od + haem[..., None] * _HAEMATOXYLIN + eosin[..., None] * _EOSIN
        inside = tissue > 0.01
        image[box][inside] = 255.0 * np.exp(-od[inside]) + rng.normal(0, 1.5, size=(int(inside.sum()), 1))
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_pyramid(path: Path, image: np.ndarray, site: SlideSite) -> list[list[int]]:
    """Write the tiled pyramid; return the level dimensions as ``[width, height]``."""
    levels = [image]
    while max(levels[-1].shape[:2]) > TILE:
        levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(2)))  # 2 × 2 box average
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {
        "tile": (TILE, TILE), "photometric": "rgb", "compression": "jpeg",
        "compressionargs": {"level": site.jpeg_quality}, "resolutionunit": "CENTIMETER", "metadata": None,
    }
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            per_cm = 1e4 / (site.mpp * 2**index)
            extra = {"subifds": len(levels) - 1} if index == 0 else {"subfiletype": 1}
            tif.write(level, resolution=(per_cm, per_cm), **options, **extra)
    return [[int(level.shape[1]), int(level.shape[0])] for level in levels]


def generate_slides(
    out: Path, spec: SizeSpec, *, seed: int, patient_effect: bool, finding_strength: float,
    finding_focus: float = 1.0,
) -> list[dict]:
    """Write ``out/slides/`` and its tables; return the ground-truth rows (one per slide).

    ``finding_focus`` (in (0, 1]) is the share of a tumour island the texture covers: 1 (default) spreads
    it in clusters over the whole island (a finding on 20–40 % of a positive slide's tissue tiles);
    0.1 keeps it to one focus of a tenth of the island, a few per cent of the tiles (few witnesses
    among many weakly labelled tiles, where attention MIL is expected to beat tile aggregation). The
    default draws nothing extra, so its files are byte-identical to those before the parameter.

    Raises
    ------
    ConfigurationError
        ``finding_focus`` outside (0, 1].
    """
    if not isinstance(finding_focus, (int, float)) or not 0 < finding_focus <= 1:
        raise ConfigurationError(f"finding_focus must be in (0, 1]; got {finding_focus!r}.")
    task_dir = out / TASK
    rows_out: list[dict] = []
    labels: list[dict] = []
    n = spec.slide_patients_per_site
    site_labels = {site.name: balanced_labels(rng_for(seed, TASK, "labels", site.name), n, CLASSES) for site in SITES}
    size = (spec.slide_size * 3 // 4, spec.slide_size)
    jobs = [(s, site, i) for s, site in enumerate(SITES) for i in range(n)]
    for s, site, i in tqdm(jobs, desc="slides", unit="patient", disable=None, leave=False):
        p = s * n + i
        label = site_labels[site.name][i]
        patient_dir = opaque_name(seed, TASK, "patient", p)
        n_slides = int(rng_for(seed, TASK, "patient", p).integers(2, 4))
        for k in range(n_slides):
            rng = rng_for(seed, TASK, "slide", p, k)
            islands = _islands(rng, size)
            tumour: list[int] = []
            if label == "positive":
                count = 1 if len(islands) <= 3 else int(rng.integers(1, 3))
                tumour = sorted(rng.choice(len(islands), size=count, replace=False).tolist())
            signature = rng_for(seed, TASK, "signature", *((p,) if patient_effect else (p, k)))
            foci: dict[int, list[int]] = {}
            image = _render(size, islands, tumour, site, signature, rng, finding_strength, finding_focus, foci)
            rel = f"{site.name}/{patient_dir}/{opaque_name(seed, TASK, 'file', p, k)}.tiff"
            dims = _write_pyramid(task_dir / rel, image, site)
            boxes = [foci.get(index) or islands[index].box() for index in tumour]
            tissue_fraction = sum(int(island.mask.sum()) for island in islands) / (size[0] * size[1])
            rows_out.append({
                "task": TASK, "file": rel, "files": [rel], "patient_id": patient_dir, "site": site.name,
                "label": label, "level_count": len(dims), "level_dimensions": dims, "mpp": site.mpp,
                "label_boxes": boxes, "n_islands": len(islands), "tissue_fraction": round(tissue_fraction, 4),
            })
            labels.append({"file": rel, "label": label})
    write_task_tables(task_dir, rows_out, labels, EXTRA_COLUMNS)
    logger.info("Wrote %d slides of %d patients.", len(rows_out), len(jobs))
    return rows_out


EXTRA_COLUMNS = ("level_count", "level_dimensions", "mpp", "label_boxes", "n_islands", "tissue_fraction")

"""Colour fundus photographs graded for diabetic retinopathy, two eyes per patient, of varying quality.

Each photograph is a circular field on black: an orange-red retina with a
darker macula, a bright optic disc (on the right for the right eye ``OD``, on
the left for ``OS``) and vessel arcades leaving it. The grade (0–4, as in the
international DR scale) decides the lesions: microaneurysms (small red dots)
from grade 1, blot haemorrhages from grade 2, hard exudates (yellow spots)
from grade 3, and at grade 4 new vessels near the disc and a large
pre-retinal haemorrhage. ``finding_strength`` scales how many lesions there
are and their contrast (0 removes them; the grade is still recorded).

The label is ``referable`` (grade ≥ 2) or ``non-referable``, per eye. A
patient's two eyes have correlated grades: one patient-level severity, each
eye at most one grade away from it. Half of the patients are drawn from the
referable grades, so both classes appear whatever the size.

Image quality varies per photograph (``quality_issue``): ``none`` (good),
``blur`` (defocus), ``under`` and ``over`` (exposure, with clipping),
``artefact`` (eyelash shadows, dust and a light reflex). Lesions are small,
so a blurred or badly exposed photograph hides them: the grade is harder to
read exactly where the quality is poor, as in real screening.

Each ``<site>`` folder is one camera with its own colour cast, field size,
resolution and file format. Each ``<patient_dir>`` is one patient; with
``patient_effect`` both eyes share the pigmentation and vessel pattern,
without it they are drawn per photograph.

``labels.csv`` is keyed by ``file`` (relative to ``fundus/``). Ground-truth
columns beyond the common ones: ``eye`` (OD|OS), ``grade`` (0–4),
``quality`` (good|poor), ``quality_issue``, ``camera``, ``format``,
``width, height`` and ``n_lesions``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm.auto import tqdm

from clinical.cohort.synthetic.records import balanced_labels, opaque_name, rng_for, write_task_tables
from clinical.cohort.synthetic.sizes import SizeSpec
from clinical.cohort.synthetic.textures import smooth_noise

__all__ = ["CLASSES", "QUALITY_ISSUES", "SITES", "FundusCamera", "generate_fundus"]

logger = logging.getLogger(__name__)

TASK = "fundus"
CLASSES = ("non-referable", "referable")
#: Grades from which an eye is referable.
REFERABLE_GRADE = 2
#: What can be wrong with a photograph, and how often (the rest are good).
QUALITY_ISSUES = {"blur": 0.15, "under": 0.1, "over": 0.1, "artefact": 0.1}
EYES = ("OD", "OS")


@dataclass(frozen=True)
class FundusCamera:
    """How one screening site's camera photographs the retina."""

    name: str
    camera: str
    colour: tuple[float, float, float]  # channel gains (the camera's white balance)
    field: float  # field radius as a fraction of the image side
    scale: float  # image side relative to the size's fundus size
    fmt: str  # png or jpg
    jpeg_quality: int
    noise: float


SITES = (
    FundusCamera("eastgate", "Topcon-like", (1.0, 0.95, 0.85), 0.47, 1.0, "jpg", 92, 0.01),
    FundusCamera("lakeside", "Canon-like", (1.08, 0.9, 0.8), 0.44, 1.15, "png", 0, 0.015),
    FundusCamera("hillcrest", "handheld", (0.95, 1.02, 1.05), 0.41, 0.85, "jpg", 85, 0.025),
)


def _disk_mask(shape: tuple[int, int], spots: list[tuple[float, float, float]], soften: float) -> np.ndarray:
    """Coverage in [0, 1] of filled discs ``(x, y, r)`` in pixels, edges softened by ``soften`` pixels."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for x, y, r in spots:
        r = max(r, 0.6)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    return ndimage.gaussian_filter(mask, soften) if soften > 0 else mask


def _vessels(shape: tuple[int, int], disc: tuple[float, float], radius: float, side: int,
             rng: np.random.Generator, *, count: int = 4, thin: bool = False) -> np.ndarray:
    """Coverage of vessel arcades leaving the disc towards the macula (curved, tapering polylines)."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    toward = 1.0 if disc[0] < shape[1] / 2 else -1.0  # the macula lies on the other side of the disc
    for k in range(count):
        up = 1.0 if k % 2 == 0 else -1.0
        angle = np.pi * (0.5 - toward * 0.5) + up * (rng.uniform(0.3, 0.9) if not thin else rng.uniform(0, np.pi))
        x, y = disc
        width = max(1.0, side / (90 if not thin else 300)) * rng.uniform(0.8, 1.2)
        steps = 14 if not thin else 5
        length = radius * (0.12 if not thin else 0.05)
        for _ in range(steps):
            angle += -toward * up * rng.uniform(0.02, 0.2) + rng.normal(0, 0.15 if not thin else 0.6)
            nx, ny = x + np.cos(angle) * length, y + np.sin(angle) * length
            draw.line([x, y, nx, ny], fill=255, width=max(1, round(width)))
            x, y = nx, ny
            width = max(1.0, width * 0.93)
    return ndimage.gaussian_filter(np.asarray(canvas, dtype=np.float32) / 255.0, 0.5)


def _lesion_spots(
    rng: np.random.Generator, count: int, centre: tuple[float, float], radius: float, size: tuple[float, float],
    disc: tuple[float, float], disc_r: float,
) -> list[tuple[float, float, float]]:
    """``count`` spots of radius ``size`` (pixels, a range) in the posterior pole, away from the disc."""
    spots: list[tuple[float, float, float]] = []
    while len(spots) < count:
        r = radius * 0.75 * np.sqrt(rng.uniform(0, 1))
        a = rng.uniform(0, 2 * np.pi)
        x, y = centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)
        if np.hypot(x - disc[0], y - disc[1]) > 1.4 * disc_r:
            spots.append((x, y, rng.uniform(*size)))
    return spots


def _retina(side: int, site: FundusCamera, eye: str, grade: int, signature: np.random.Generator,
            rng: np.random.Generator, strength: float) -> tuple[np.ndarray, int]:
    """Float RGB (H, W, 3) in [0, 1] of one eye before the photograph's quality issue; and its lesion count."""
    shape = (side, side)
    radius = site.field * side
    centre = (side / 2 + rng.normal(0, 0.01 * side), side / 2 + rng.normal(0, 0.01 * side))
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    r = np.hypot(xx - centre[0], yy - centre[1]) / radius
    field = np.clip((1.0 - r) * radius / 1.5, 0, 1)  # a soft circular edge about 1.5 px wide
    pigment = signature.uniform(0.8, 1.15)
    base = np.array([0.78, 0.36, 0.16]) * pigment
    texture = smooth_noise(signature, shape, side / 12)
    image = base * (1 + 0.06 * texture[..., None]) * (1 - 0.35 * r[..., None] ** 2)
    disc_side = 1.0 if eye == "OD" else -1.0
    disc = (centre[0] + disc_side * 0.42 * radius, centre[1] + rng.normal(0, 0.03 * radius))
    macula = (centre[0] - disc_side * 0.1 * radius, centre[1])
    disc_r = 0.11 * radius
    macula_mask = np.exp(-((xx - macula[0]) ** 2 + (yy - macula[1]) ** 2) / (2 * (0.12 * radius) ** 2))
    image *= (1 - 0.35 * macula_mask)[..., None]
    disc_mask = _disk_mask(shape, [(*disc, disc_r)], max(0.5, disc_r / 4))
    image = image * (1 - disc_mask[..., None]) + np.array([0.98, 0.86, 0.58]) * disc_mask[..., None]
    vessels = _vessels(shape, disc, radius, side, signature)
    image = image * (1 - 0.55 * vessels[..., None]) + np.array([0.45, 0.06, 0.04]) * 0.55 * vessels[..., None]

    px = side / 100  # lesion sizes in hundredths of the side
    counts = {"ma": (0, 4, 8, 10, 12)[grade], "haem": (0, 0, 4, 6, 8)[grade], "exudate": (0, 0, 1, 6, 7)[grade]}
    counts = {k: int(rng.poisson(v * strength)) if v else 0 for k, v in counts.items()}
    red = _lesion_spots(rng, counts["ma"], macula, radius, (0.5 * px, 0.8 * px), disc, disc_r)
    red += _lesion_spots(rng, counts["haem"], macula, radius, (1.2 * px, 2.4 * px), disc, disc_r)
    contrast = min(1.0, 0.75 * strength)
    red_mask = _disk_mask(shape, red, 0.4) * contrast
    image = image * (1 - red_mask[..., None]) + np.array([0.35, 0.03, 0.03]) * red_mask[..., None]
    yellow = _lesion_spots(rng, counts["exudate"], macula, radius, (0.7 * px, 1.3 * px), disc, disc_r)
    yellow_mask = _disk_mask(shape, yellow, 0.4) * contrast
    image = image * (1 - yellow_mask[..., None]) + np.array([0.98, 0.92, 0.45]) * yellow_mask[..., None]
    n_lesions = len(red) + len(yellow)
    if grade >= 4 and strength > 0:
        new_vessels = _vessels(shape, disc, radius, side, rng, count=8, thin=True) * contrast
        image = image * (1 - 0.7 * new_vessels[..., None]) + np.array([0.5, 0.05, 0.05]) * 0.7 * new_vessels[..., None]
        pool = _disk_mask(shape, _lesion_spots(rng, 1, macula, radius, (4 * px, 6 * px), disc, disc_r), 1.0)
        image = image * (1 - contrast * pool[..., None]) + np.array([0.4, 0.02, 0.02]) * contrast * pool[..., None]
        n_lesions += 1
    return np.clip(image, 0, 1) * field[..., None], n_lesions


#: Defocus blur, as a share of the image side. Lesions are 0.5–2.4 hundredths of the side in radius: a blur
#: this wide spreads a microaneurysm or a blot haemorrhage into a faint patch no deeper than the retina's own
#: texture, so the grade can no longer be read (a blur of one lesion radius would leave them all countable).
DEFOCUS = (0.03, 0.045)
#: Width of the in-camera noise reduction of an under-exposed photograph and of the bloom of an over-exposed
#: one, as a share of the side: both smear away what is smaller than a blot haemorrhage.
SMEAR = (0.02, 0.03)


def _smear(image: np.ndarray, side: int, width: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``image`` blurred over ``width`` (a range, shares of the side), per channel."""
    sigma = side * rng.uniform(*width)
    return ndimage.gaussian_filter(image, (sigma, sigma, 0))


def _degrade(image: np.ndarray, issue: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """The photograph after its quality issue (none, blur, under, over, artefact).

    Every issue but ``artefact`` hides the small lesions that grade the eye, as it does for a grader: defocus
    spreads them out; an under-exposed photograph is dark and noisy, and the camera's noise reduction
    smooths the lesions away with the noise; an over-exposed one clips, and its bloom washes out the contrast
    of what is left. Artefacts cover part of the field and leave the rest readable.
    """
    if issue == "blur":
        return _smear(image, side, DEFOCUS, rng)
    if issue == "under":
        dark = image * rng.uniform(0.22, 0.35)
        noisy = dark + rng.uniform(0.02, 0.04) * rng.standard_normal(image.shape) * (dark > 0.005)
        return np.clip(_smear(noisy, side, SMEAR, rng), 0, 1)
    if issue == "over":
        bloom = rng.uniform(0.6, 0.8)
        washed = (1 - bloom) * image + bloom * _smear(image, side, SMEAR, rng)
        return np.clip(washed * rng.uniform(1.9, 2.6) + 0.1 * (image > 0.02), 0, 1)
    if issue == "artefact":
        h, w = image.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        out = image.copy()
        for _ in range(int(rng.integers(2, 5))):  # eyelash shadows: dark soft bands across the top
            y0, slope = rng.uniform(0.05, 0.35) * h, rng.uniform(-0.3, 0.3)
            band = np.exp(-((yy - y0 - slope * (xx - w / 2)) ** 2) / (2 * (0.02 * h) ** 2))
            out *= (1 - 0.7 * band)[..., None]
        dust = _disk_mask((h, w), [(rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(0.01, 0.03) * w)
                                   for _ in range(int(rng.integers(3, 7)))], 1.0)
        out *= (1 - 0.6 * dust)[..., None]
        reflex = np.exp(-((np.hypot(xx - w / 2, yy - h / 2) - 0.3 * w) ** 2) / (2 * (0.015 * w) ** 2))
        return np.clip(out + 0.35 * reflex[..., None] * (image.sum(axis=2, keepdims=True) > 0.05), 0, 1)
    return image


def _photograph(image: np.ndarray, site: FundusCamera, rng: np.random.Generator) -> np.ndarray:
    out = image * np.array(site.colour) + site.noise * rng.standard_normal(image.shape)
    return np.clip(out, 0, 1) * (image.sum(axis=2, keepdims=True) > 0.005)


def _eye_grades(rng: np.random.Generator, referable: bool) -> tuple[int, int]:
    """Two correlated grades: one patient severity, each eye at most one grade away (and within 0–4)."""
    severity = int(rng.choice([2, 3, 4], p=[0.5, 0.3, 0.2])) if referable else int(rng.choice([0, 1], p=[0.6, 0.4]))
    return tuple(int(np.clip(severity + rng.choice([-1, 0, 1], p=[0.2, 0.6, 0.2]), 0, 4)) for _ in EYES)


def _issue(rng: np.random.Generator) -> str:
    draw = rng.uniform()
    for issue, share in QUALITY_ISSUES.items():
        if draw < share:
            return issue
        draw -= share
    return "none"


def _save(image: np.ndarray, path: Path, site: FundusCamera) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(np.round(image * 255).astype(np.uint8), mode="RGB")
    if site.fmt == "png":
        picture.save(path, format="PNG")
    else:
        picture.save(path, format="JPEG", quality=site.jpeg_quality)


def generate_fundus(
    out: Path, spec: SizeSpec, *, seed: int, patient_effect: bool, finding_strength: float
) -> list[dict]:
    """Write ``out/fundus/`` and its tables; return the ground-truth rows (one per photograph)."""
    task_dir = out / TASK
    rows: list[dict] = []
    labels: list[dict] = []
    n = spec.fundus_patients_per_site
    jobs = [(site, i) for site in SITES for i in range(n)]
    for site in SITES:
        status = balanced_labels(rng_for(seed, TASK, "status", site.name), n, ("low", "high"))
        for i in tqdm(range(n), desc=f"fundus {site.name}", unit="patient", disable=None, leave=False):
            prng = rng_for(seed, TASK, "patient", site.name, i)
            patient_dir = opaque_name(seed, TASK, "patient", site.name, i)
            grades = _eye_grades(prng, status[i] == "high")
            for eye, grade in zip(EYES, grades, strict=True):
                rng = rng_for(seed, TASK, "photo", site.name, i, eye)
                signature = rng_for(seed, TASK, "signature", site.name, i, *(() if patient_effect else (eye,)))
                side = round(spec.fundus_size * site.scale)
                retina, n_lesions = _retina(side, site, eye, grade, signature, rng, finding_strength)
                issue = _issue(rng)
                image = _photograph(_degrade(retina, issue, side, rng), site, rng)
                rel = f"{site.name}/{patient_dir}/{opaque_name(seed, TASK, 'file', site.name, i, eye)}.{site.fmt}"
                _save(image, task_dir / rel, site)
                label = CLASSES[int(grade >= REFERABLE_GRADE)]
                rows.append({
                    "task": TASK, "file": rel, "files": [rel], "patient_id": patient_dir, "site": site.name,
                    "label": label, "eye": eye, "grade": grade, "quality": "good" if issue == "none" else "poor",
                    "quality_issue": issue, "camera": site.camera, "format": site.fmt, "width": side,
                    "height": side, "n_lesions": n_lesions,
                })
                labels.append({"file": rel, "label": label})
    write_task_tables(task_dir, rows, labels, EXTRA_COLUMNS)
    logger.info("Wrote %d fundus photographs of %d patients.", len(rows), len(jobs))
    return rows


EXTRA_COLUMNS = ("eye", "grade", "quality", "quality_issue", "camera", "format", "width", "height", "n_lesions")

"""Chest-like radiographs (DICOM CR and DX) with a planted diffuse lung opacity.

Each image is a phantom of a thorax: body, two lungs, heart, spine and ribs.
The label is a patient outcome (``positive``/``negative``, as in the BPD
study): every study of a patient shares it. Positive patients get a diffuse
hazy, finely reticular opacity inside the lung fields whose contrast is
``finding_strength`` times a per-patient severity.

Sites differ the way real departments do: modality and SOP class, matrix size,
(0028,0030) Pixel Spacing / (0018,1164) Imager Pixel Spacing, detector gain,
contrast curve, noise and sharpness; ``northfield`` writes MONOCHROME1 and
``riverside`` stores pixels through a non-trivial (0028,1053) Rescale Slope /
(0028,1052) Rescale Intercept.

With ``patient_effect`` each patient keeps one anatomy and one strong body
texture across studies, so an image-level split lets a model recognise the
patient instead of the finding; without it both are drawn afresh per image.

``labels.csv`` is keyed by ``patient_id`` (the raw (0010,0020)). Ground-truth
columns beyond the common ones: ``sop_instance_uid, modality, sop_class_uid,
rows, cols, photometric, bits_stored, pixel_spacing, imager_pixel_spacing``
(mm, ``[row, col]``, empty where not written), ``rescale_slope,
rescale_intercept`` (empty where not written), ``study_date`` and
``finding_severity`` (0 for none; the planted opacity's contrast scale).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation
from scipy import ndimage
from tqdm.auto import tqdm

from clinical.cohort.synthetic.dicom import new_dataset, save_dataset, set_pixels
from clinical.cohort.synthetic.phi import INDEX_OFFSET, accession_number, fake_identity
from clinical.cohort.synthetic.records import make_uid, opaque_name, rng_for, write_task_tables
from clinical.cohort.synthetic.sizes import SizeSpec
from clinical.cohort.synthetic.textures import smooth_noise, soft_ellipse

__all__ = ["CLASSES", "SITES", "RadiographSite", "generate_radiographs"]

logger = logging.getLogger(__name__)

TASK = "radiographs"
CLASSES = ("negative", "positive")


@dataclass(frozen=True)
class RadiographSite:
    """How one department acquires and stores chest radiographs."""

    name: str
    institution: str
    manufacturer: str
    modality: str  # CR or DX
    photometric: str  # MONOCHROME1 (bright = low value) or MONOCHROME2
    bits_stored: int
    rescale: tuple[float, float] | None  # (slope, intercept) written, or None
    shape_scale: tuple[float, float]  # (rows, cols) as a fraction of the size's matrix
    field_of_view_mm: float  # detector width
    magnification: float  # ImagerPixelSpacing / PixelSpacing when both are written
    gain: float
    offset: float
    gamma: float
    noise: float  # SD of additive noise, in units of the full intensity range
    blur: float  # Gaussian blur in pixels (detector unsharpness)
    prevalence: float  # share of positive patients


SITES = (
    RadiographSite(
        "northfield", "Northfield General Hospital", "Acme Imaging", "CR", "MONOCHROME1", 12, None,
        (1.0, 0.875), 350.0, 1.0, 0.85, 0.06, 1.0, 0.015, 0.0, 0.40,
    ),
    RadiographSite(
        "riverside", "Riverside Children's Hospital", "Borealis Medical", "DX", "MONOCHROME2", 14, (0.5, -200.0),
        (0.9375, 0.9375), 300.0, 1.0, 0.95, 0.02, 1.25, 0.02, 0.4, 0.45,
    ),
    RadiographSite(
        "eastgate", "Eastgate University Medical Centre", "Cygnus Systems", "DX", "MONOCHROME2", 12, (1.0, 0.0),
        (0.875, 1.0), 400.0, 1.1, 1.1, 0.0, 0.8, 0.03, 0.8, 0.50,
    ),
)

_STUDY_EPOCH = date(2023, 1, 9)
_SOP_CLASS = {"CR": ComputedRadiographyImageStorage, "DX": DigitalXRayImageStorageForPresentation}


@dataclass(frozen=True)
class _Anatomy:
    """Where the organs are, in normalised coordinates (-1 to 1, y down)."""

    lung_dx: float
    lung_y: float
    lung_radii: tuple[float, float]
    lung_density: float
    heart: tuple[float, float, float, float]  # x, y, rx, ry
    tissue: float
    rib_gap: float
    rib_phase: float
    texture_key: tuple


def _anatomy(rng: np.random.Generator, texture_key: tuple) -> _Anatomy:
    return _Anatomy(
        lung_dx=float(rng.uniform(0.33, 0.43)),
        lung_y=float(rng.uniform(-0.12, 0.02)),
        lung_radii=(float(rng.uniform(0.22, 0.3)), float(rng.uniform(0.45, 0.62))),
        lung_density=float(rng.uniform(0.12, 0.2)),
        heart=(float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.15, 0.3)),
               float(rng.uniform(0.18, 0.3)), float(rng.uniform(0.2, 0.3))),
        tissue=float(rng.uniform(0.38, 0.5)),
        rib_gap=float(rng.uniform(0.16, 0.22)),
        rib_phase=float(rng.uniform(0.0, 1.0)),
        texture_key=texture_key,
    )


def _render(
    shape: tuple[int, int], anatomy: _Anatomy, rng: np.random.Generator, severity: float, seed: int
) -> np.ndarray:
    """Presentation image in [0, 1], bright = dense, before the site's detector response."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    angle = np.deg2rad(rng.uniform(-3, 3))
    shift = rng.uniform(-0.04, 0.04, size=2)
    u0 = (x + 0.5) / cols * 2 - 1
    v0 = (y + 0.5) / rows * 2 - 1
    u = np.cos(angle) * u0 - np.sin(angle) * v0 + shift[0]
    v = np.sin(angle) * u0 + np.cos(angle) * v0 + shift[1]
    a = anatomy
    body = soft_ellipse(u, v, (0.0, 0.08), (0.92, 1.05), 0.03)
    lungs = np.maximum(
        soft_ellipse(u, v, (-a.lung_dx, a.lung_y), a.lung_radii, 0.06),
        soft_ellipse(u, v, (a.lung_dx, a.lung_y), a.lung_radii, 0.06),
    )
    heart = soft_ellipse(u, v, (a.heart[0], a.heart[1]), (a.heart[2], a.heart[3]), 0.08)
    image = 0.04 + body * a.tissue
    image -= lungs * (a.tissue - a.lung_density)
    image = image * (1 - heart) + heart * (a.tissue + 0.06)
    image += 0.22 * np.exp(-((u / 0.07) ** 2)) * body
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * ((v - 0.3 * u**2) / a.rib_gap + a.rib_phase))) ** 8
    image += 0.1 * ribs * np.clip(lungs + 0.3 * body, 0, 1)
    texture = smooth_noise(rng_for(seed, *a.texture_key), shape, max(rows, cols) / 20)
    image += 0.06 * texture * body
    if severity > 0:
        haze = np.clip(smooth_noise(rng, shape, max(rows, cols) / 24), -2, 2)
        reticular = smooth_noise(rng, shape, 0.8)
        image += lungs * severity * (0.07 + 0.03 * haze + 0.02 * reticular)
    return np.clip(image, 0.0, 1.0)


def _detector(image: np.ndarray, site: RadiographSite, rng: np.random.Generator) -> np.ndarray:
    out = site.offset + site.gain * image**site.gamma
    if site.blur > 0:
        out = ndimage.gaussian_filter(out, site.blur)
    out = out + site.noise * rng.standard_normal(out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def _stored_pixels(value: np.ndarray, site: RadiographSite) -> np.ndarray:
    """Map [0, 1] presentation values to what the site writes in (7FE0,0010)."""
    top = 2**site.bits_stored - 1
    if site.rescale is not None and site.rescale != (1.0, 0.0):
        slope, intercept = site.rescale
        physical = value * (top * slope) + intercept  # what the modality LUT gives back
        stored = (physical - intercept) / slope
    else:
        stored = value * top
    stored = np.round(stored).clip(0, top)
    if site.photometric == "MONOCHROME1":
        stored = top - stored
    return stored.astype(np.uint16)


def generate_radiographs(
    out: Path, spec: SizeSpec, *, seed: int, patient_effect: bool, finding_strength: float
) -> list[dict]:
    """Write ``out/radiographs/`` and its tables; return the ground-truth rows (one per file)."""
    task_dir = out / TASK
    rows_out: list[dict] = []
    labels: list[dict] = []
    n = spec.radiograph_patients_per_site
    jobs = [(s, site, i) for s, site in enumerate(SITES) for i in range(n)]
    for s, site, i in tqdm(jobs, desc="radiographs", unit="patient", disable=None, leave=False):
        p = s * n + i
        site_rng = rng_for(seed, TASK, "labels", site.name)
        positives = set(site_rng.permutation(n)[: round(site.prevalence * n)].tolist())
        label = CLASSES[int(i in positives)]
        identity = fake_identity(seed, site.name, INDEX_OFFSET[TASK] + p)
        prng = rng_for(seed, TASK, "patient", p)
        n_studies = int(prng.integers(1, 4))
        severity = float(prng.uniform(0.6, 1.0) if label == "positive" else prng.uniform(0.0, 0.1)) * finding_strength
        shape = tuple(round(spec.radiograph_matrix * scale) for scale in site.shape_scale)
        spacing = float(f"{site.field_of_view_mm / shape[1]:.6g}")  # as (0028,0030) DS will hold it
        patient_dir = opaque_name(seed, TASK, "patient", p)
        labels.append({"patient_id": identity.patient_id, "label": label})
        for k in range(n_studies):
            if patient_effect:
                anatomy = _anatomy(rng_for(seed, TASK, "anatomy", p), ("texture", TASK, p))
            else:
                anatomy = _anatomy(rng_for(seed, TASK, "anatomy", p, k), ("texture", TASK, p, k))
            srng = rng_for(seed, TASK, "study", p, k)
            image = _detector(_render(shape, anatomy, srng, severity, seed), site, srng)
            study_uid = make_uid(seed, TASK, "study", p, k)
            series_uid = make_uid(seed, TASK, "series", p, k)
            sop_uid = make_uid(seed, TASK, "image", p, k)
            study = {
                "study_uid": study_uid,
                "series_uid": series_uid,
                "accession": accession_number(seed, site.name, TASK, p, k),
                "date": (_STUDY_EPOCH + timedelta(days=int(srng.integers(0, 600)))).strftime("%Y%m%d"),
                "series_number": 1,
                "description": "CHEST AP",
            }
            sop_class = _SOP_CLASS[site.modality]
            ds = new_dataset(
                sop_class_uid=sop_class, sop_instance_uid=sop_uid, identity=identity, study=study,
                institution=site.institution, manufacturer=site.manufacturer, modality=site.modality,
            )
            ds.BodyPartExamined = "CHEST"
            ds.ViewPosition = "AP"
            ds.PatientOrientation = ["L", "F"]
            ds.InstanceNumber = 1
            ds.ImageType = ["ORIGINAL", "PRIMARY"]
            imager_spacing = None
            pixel_spacing = None
            if site.modality == "CR":
                pixel_spacing = [spacing, spacing]
                ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
            else:
                imager_spacing = [spacing, spacing]
                ds.ImagerPixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
                ds.PresentationIntentType = "FOR PRESENTATION"
                ds.PixelIntensityRelationship = "LOG"
                ds.PixelIntensityRelationshipSign = 1
                ds.DetectorType = "SCINTILLATOR"
                if site.magnification != 1.0:
                    pixel_spacing = [float(f"{spacing / site.magnification:.6g}")] * 2
                    ds.PixelSpacing = [f"{pixel_spacing[0]:.6g}", f"{pixel_spacing[1]:.6g}"]
                    ds.EstimatedRadiographicMagnificationFactor = site.magnification
            if site.rescale is not None:
                ds.RescaleSlope = f"{site.rescale[0]:g}"
                ds.RescaleIntercept = f"{site.rescale[1]:g}"
                ds.RescaleType = "US"
            slope, intercept = site.rescale or (1.0, 0.0)
            ds.WindowCenter = f"{intercept + slope * 2 ** (site.bits_stored - 1):g}"
            ds.WindowWidth = f"{slope * 2**site.bits_stored:g}"
            set_pixels(ds, _stored_pixels(image, site), bits_stored=site.bits_stored, photometric=site.photometric)
            study_dir = opaque_name(seed, TASK, "study", p, k)
            rel = f"{site.name}/{patient_dir}/{study_dir}/{opaque_name(seed, TASK, 'file', p, k)}.dcm"
            save_dataset(ds, task_dir / rel)
            rows_out.append({
                "task": TASK, "file": rel, "files": [rel], "patient_id": identity.patient_id, "site": site.name,
                "study_uid": study_uid, "series_uid": series_uid, "label": label,
                "patient_name": identity.patient_name, "patient_birth_date": identity.birth_date,
                "accession_number": study["accession"], "sop_instance_uid": sop_uid, "modality": site.modality,
                "sop_class_uid": str(sop_class), "rows": shape[0], "cols": shape[1],
                "photometric": site.photometric, "bits_stored": site.bits_stored,
                "pixel_spacing": pixel_spacing or "", "imager_pixel_spacing": imager_spacing or "",
                "rescale_slope": site.rescale[0] if site.rescale else "",
                "rescale_intercept": site.rescale[1] if site.rescale else "",
                "study_date": study["date"], "finding_severity": round(severity, 4),
            })
    write_task_tables(task_dir, rows_out, labels, EXTRA_COLUMNS)
    logger.info("Wrote %d radiographs of %d patients.", len(rows_out), len(jobs))
    return rows_out


EXTRA_COLUMNS = (
    "sop_instance_uid", "modality", "sop_class_uid", "rows", "cols", "photometric", "bits_stored",
    "pixel_spacing", "imager_pixel_spacing", "rescale_slope", "rescale_intercept", "study_date", "finding_severity",
)

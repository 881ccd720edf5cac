"""Whole-body-like PET/CT studies of two centres: a CT and a co-registered PET series per patient, as DICOM.

Each study holds two axial series that share one Frame of Reference UID (0020,0052): a CT on a fine
grid (HU after (0028,1052)/(0028,1053)) and a PET on its own coarser matrix, voxel size and slice
spacing, covering the CT's field. PET pixels are activity concentration in Bq/ml (Units (0054,1001)
``BQML``, Decay Correction (0054,1102) ``START``), stored as unsigned 16-bit with a Rescale Slope of
its own per slice, as scanners write them, and carry what SUVbw needs: Patient's Weight (0010,1030),
Series Time (0008,0031) and the Radiopharmaceutical Information Sequence (0054,0016) with
Radiopharmaceutical Start Time (0018,1072), Radionuclide Total Dose (0018,1074) in Bq and Radionuclide
Half Life (0018,1075) in s (F-18). The activity is ``SUV × dose × 2^(−Δt / T½) / weight[g]``, so
SUVbw computed from the tags gives back the phantom's SUV exactly up to quantisation.

Labels: a patient is ``positive`` when they have lymphoma-like lesions, ``negative`` otherwise, half
of each centre's patients; a CT slice is ``positive`` when it intersects a lesion. Every CT slice is
equally likely to cut a lesion wherever it lies along z, so nothing but the lesion tells a positive
slice. Every patient has 1–3 spheres of high uptake on PET; in a positive patient one to all of them
are lesions, and the rest (all of a negative patient's) are *physiological* hot spots (bowel-like
uptake), so the number of spots says nothing of the label. On PET alone a hot spot looks like a lesion, only
somewhat less hot (:data:`LESION_SUV`, :data:`HOTSPOT_SUV`), and it has nothing on CT. Lesions and hot
spots are bulky, of one size range (radius :data:`SPOT_RADIUS_FOV` of the field of view, 20–33 mm): a
few CT pixels across even on a 32-pixel matrix, and wider than the PET's blur. With ``ct_signal`` (the
default) lesions are also enlarged nodes on CT (:data:`LESION_HU`), so CT tells a lesion from a hot spot
and PET + CT can beat PET only; without it lesions are invisible on CT. ``finding_strength`` scales the
lesion uptake and CT contrast (0 removes both).

``patient_effect`` gives each patient a strong, label-free signature — body outline, liver position,
PET background uptake and a CT offset — shared by all their slices; without it these are drawn per
CT slice, so slices of one patient share only what carries the label.

Centres differ in scanner, CT noise, PET resolution (blur), PET noise, PET matrix and slice spacing,
injected dose and uptake time. ``northfield`` (Acme Imaging) and ``riverside`` (Borealis Medical).

Files: ``petct/<site>/<patient_dir>/<series_dir>/<name>.dcm`` (one file per slice, opaque names).
``labels.csv`` keys each study by ``study_uid``; ``slice_labels.csv`` has ``series_uid`` (the CT
series), ``slice`` (index along the CT's true array, ascending along the slice normal, i.e. feet to
head) and ``label``. Ground-truth columns beyond the common ones (``series_uid`` is the CT's):
``pet_series_uid``, ``frame_uid``, ``ct_shape``, ``ct_spacing``, ``ct_origin``, ``pet_shape``,
``pet_spacing``, ``pet_origin`` (mm, z y x for shape and spacing; origin is (0020,0032) x y z of the
first true slice), ``patient_weight_kg``, ``injected_dose_bq``, ``uptake_seconds``, ``half_life_s``,
``suv_per_bqml`` (the SUVbw factor of the tags), ``lesion_centers_mm``, ``lesion_radii_mm``,
``hotspot_centers_mm``, ``slice_labels`` and ``ct_signal``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, PositronEmissionTomographyImageStorage
from scipy import ndimage
from tqdm.auto import tqdm

from clinical.cohort.synthetic.dicom import new_dataset, save_dataset, set_pixels
from clinical.cohort.synthetic.phi import INDEX_OFFSET, accession_number, fake_identity
from clinical.cohort.synthetic.records import balanced_labels, make_uid, opaque_name, rng_for, write_task_tables
from clinical.cohort.synthetic.sizes import SizeSpec

__all__ = [
    "CLASSES", "F18_HALF_LIFE_S", "HOTSPOT_SUV", "LESION_HU", "LESION_SUV", "SITES", "SPOT_RADIUS_FOV", "PetctSite",
    "generate_petct",
]

logger = logging.getLogger(__name__)

TASK = "petct"
CLASSES = ("negative", "positive")
#: Half-life of fluorine-18 in seconds (Radionuclide Half Life (0018,1075) of FDG).
F18_HALF_LIFE_S = 6586.2
_STUDY_EPOCH = date(2021, 3, 1)
_SERIES_SECONDS = 9 * 3600 + 30 * 60  # Series Time 09:30:00 (the common study time of new_dataset)


#: Radius of lesions and hot spots as a fraction of the field of view (low, high): bulky nodes. Smaller spheres
#: (2.5–4 %, about one CT pixel at 32 pixels and under one PET pixel) left a network too little to see.
SPOT_RADIUS_FOV = (0.04, 0.06)
#: SUV above background of a lesion and of physiological uptake: on PET a lesion is only somewhat hotter.
LESION_SUV, HOTSPOT_SUV = 6.0, 5.0
#: HU a lesion adds to soft tissue on CT (``ct_signal``): an enlarged node against the fat around it. At 70 HU,
#: three to seven times the CT noise, a from-scratch ResNet-18 on a few dozen patients did not learn it.
LESION_HU = 150.0


@dataclass(frozen=True)
class PetctSite:
    """How one centre scans: CT grid and noise, PET matrix, resolution, noise and protocol."""

    name: str
    institution: str
    manufacturer: str
    field_of_view_mm: float
    ct_slice_mm: float
    ct_noise_hu: float
    pet_matrix_ratio: float  # PET columns / CT columns
    pet_slice_mm: float
    pet_fwhm_mm: float  # scanner resolution
    pet_noise: float  # relative SD of PET noise
    dose_mbq: tuple[float, float]  # injected activity range
    uptake_minutes: tuple[float, float]  # injection to series start


SITES = (
    PetctSite("northfield", "Northfield General Hospital", "Acme Imaging", 500.0, 4.0, 10.0, 0.5, 3.27, 6.0, 0.15,
              (250.0, 350.0), (55.0, 70.0)),
    PetctSite("riverside", "Riverside Children's Hospital", "Borealis Medical", 550.0, 5.0, 22.0, 0.625, 4.0, 8.0,
              0.3, (180.0, 260.0), (65.0, 90.0)),
)


@dataclass(frozen=True)
class _Grid:
    """An axial grid: shape (slices, rows, cols), spacing (mm, z y x) and the position of voxel 0 (mm, x y z)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: np.ndarray

    def centre(self) -> np.ndarray:
        """x, y, z (mm) of the grid's centre."""
        half = [(n - 1) / 2 * d for n, d in zip(self.shape, self.spacing, strict=True)]
        return self.origin + np.array(half[::-1])

    def world(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y, z (mm) of every voxel, each of shape ``shape`` (axial: rows along +y, columns along +x)."""
        k, i, j = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in self.shape), indexing="ij")
        return (self.origin[0] + j * self.spacing[2], self.origin[1] + i * self.spacing[1],
                self.origin[2] + k * self.spacing[0])


def _grids(spec_shape: tuple[int, int, int], site: PetctSite, centre: np.ndarray) -> tuple[_Grid, _Grid]:
    """The CT grid and a PET grid of its own matrix and spacing that covers the CT's field (same frame)."""
    slices, rows, cols = spec_shape
    pixel = round(site.field_of_view_mm / cols, 4)
    ct = _Grid((slices, rows, cols), (site.ct_slice_mm, pixel, pixel),
               np.round(centre - np.array([(cols - 1) / 2 * pixel, (rows - 1) / 2 * pixel,
                                           (slices - 1) / 2 * site.ct_slice_mm]), 3))
    pet_cols = max(8, round(cols * site.pet_matrix_ratio))
    pet_rows = max(8, round(rows * site.pet_matrix_ratio))
    pet_pixel = round(site.field_of_view_mm * 1.08 / pet_cols, 4)  # a slightly larger field than the CT's
    length = (slices - 1) * site.ct_slice_mm + 2 * site.pet_slice_mm
    pet_slices = int(np.ceil(length / site.pet_slice_mm)) + 1
    pet = _Grid((pet_slices, pet_rows, pet_cols), (site.pet_slice_mm, pet_pixel, pet_pixel),
                np.round(centre - np.array([(pet_cols - 1) / 2 * pet_pixel, (pet_rows - 1) / 2 * pet_pixel,
                                            (pet_slices - 1) / 2 * site.pet_slice_mm]), 3))
    return ct, pet


@dataclass(frozen=True)
class _Signature:
    """Label-free appearance per CT slice (arrays of length slices): one value repeated, or one per slice."""

    body_radii: np.ndarray  # (slices, 2) mm, x and y
    liver: np.ndarray  # (slices, 2) mm offset of the liver centre in x and y
    pet_background: np.ndarray  # SUV of soft tissue
    ct_offset: np.ndarray  # HU added to soft tissue


def _signature(seed: int, patient: int, slices: int, half_fov: float, per_slice: bool) -> _Signature:
    """Draw the signature once (the patient's) or once per CT slice."""
    rngs = ([rng_for(seed, TASK, "signature", patient, k) for k in range(slices)] if per_slice
            else [rng_for(seed, TASK, "signature", patient)])

    def draw(rng: np.random.Generator) -> tuple:
        return (rng.uniform(0.55, 0.8, size=2) * half_fov, rng.uniform(-0.2, 0.2, size=2) * half_fov,
                rng.uniform(0.5, 2.0), rng.uniform(-45.0, 45.0))

    values = [draw(rng) for rng in rngs]
    if not per_slice:
        values = values * slices
    return _Signature(np.array([v[0] for v in values]), np.array([v[1] for v in values]),
                      np.array([v[2] for v in values]), np.array([v[3] for v in values]))


def _spot_counts(rng: np.random.Generator, lesion_rng: np.random.Generator, *, positive: bool) -> tuple[int, int]:
    """Lesions and hot spots of one patient: 1–3 spots for everyone, one to all of a positive patient's lesions.

    The total is drawn before the label is looked at, so the number of spots on PET says nothing of the label
    (when positives had 1–3 lesions on top of everyone's 1–2 hot spots, counting spots nearly sufficed).
    """
    spots = int(rng.integers(1, 4))
    lesions = int(lesion_rng.integers(1, spots + 1)) if positive else 0
    return lesions, spots - lesions


def _spots(rng: np.random.Generator, count: int, ct: _Grid, site: PetctSite) -> tuple[np.ndarray, np.ndarray]:
    """Centres (mm, x y z) and radii (mm) of ``count`` spheres inside the body that each cut at least one CT slice.

    A centre's z is uniform over the slice range widened by 0.9 of the radius, not the middle of the volume:
    every CT slice is then about equally likely to cut a sphere (the end slices 5 % less), so a slice's
    place along z says nothing about its label, and hot spots and lesions share no z-range that lesions
    alone would fill. The 0.9 keeps an end slice's cut through a sphere wide enough to see.
    """
    half_fov = site.field_of_view_mm / 2
    centre = ct.centre()
    radii = rng.uniform(*SPOT_RADIUS_FOV, size=count) * site.field_of_view_mm
    first = ct.origin[2]
    last = first + (ct.shape[0] - 1) * ct.spacing[0]
    centres = np.column_stack([
        centre[0] + rng.uniform(-0.3, 0.3, size=count) * half_fov,
        centre[1] + rng.uniform(-0.25, 0.25, size=count) * half_fov,
        rng.uniform(first - 0.9 * radii, last + 0.9 * radii),
    ])
    return np.round(centres, 2), np.round(radii, 2)


def _spheres(x, y, z, centres: np.ndarray, radii: np.ndarray, edge: float) -> np.ndarray:
    """Soft indicator (0–1) of the union of spheres, on world coordinates."""
    out = np.zeros(x.shape, np.float32)
    for (cx, cy, cz), r in zip(centres, radii, strict=True):
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
        out = np.maximum(out, 1.0 / (1.0 + np.exp(-np.clip((r - d) / edge, -30, 30))))
    return out


def _paint(grid: _Grid, ct_grid: _Grid, sig: _Signature, lesions: tuple[np.ndarray, np.ndarray],
           hotspots: tuple[np.ndarray, np.ndarray], *, strength: float, ct_signal: bool) -> tuple[np.ndarray, ...]:
    """HU and SUV of the phantom on ``grid`` (before scanner noise and blur); the signature follows CT slices."""
    x, y, z = grid.world()
    # every voxel takes the signature of the CT slice nearest to it along z
    k = np.clip(np.rint((z - ct_grid.origin[2]) / ct_grid.spacing[0]), 0, ct_grid.shape[0] - 1).astype(int)
    rx, ry = sig.body_radii[k, 0], sig.body_radii[k, 1]
    centre = ct_grid.centre()
    u, v = x - centre[0], y - centre[1]
    body = ((u / rx) ** 2 + (v / ry) ** 2 < 1).astype(np.float32)
    lx, ly = sig.liver[k, 0] - 0.25 * rx, sig.liver[k, 1]
    liver = (((u - lx) / (0.35 * rx)) ** 2 + ((v - ly) / (0.3 * ry)) ** 2 < 1).astype(np.float32) * body
    edge = 0.5 * min(grid.spacing[1:])
    lesion = _spheres(x, y, z, *lesions, edge) if len(lesions[1]) else np.zeros_like(body)
    hot = _spheres(x, y, z, *hotspots, edge) if len(hotspots[1]) else np.zeros_like(body)
    hu = np.where(body > 0, 40.0 + sig.ct_offset[k], -1000.0) + liver * 25.0
    if ct_signal:
        hu = hu + LESION_HU * strength * lesion * body
    suv = (body * sig.pet_background[k] * (1.0 + 1.2 * liver) + LESION_SUV * strength * lesion * body
           + HOTSPOT_SUV * hot * body)
    return hu.astype(np.float32), suv.astype(np.float32)


def _suv_factor(weight_kg: float, dose_bq: float, uptake_s: float) -> float:
    """SUVbw per Bq/ml: weight in g over the dose decayed to the series start (Decay Correction START)."""
    return weight_kg * 1000.0 / (dose_bq * 2.0 ** (-uptake_s / F18_HALF_LIFE_S))


def _tm(seconds: float) -> str:
    """A DICOM TM (HHMMSS.FF) of seconds after midnight."""
    whole = int(seconds)
    return f"{whole // 3600:02d}{whole % 3600 // 60:02d}{whole % 60:02d}.{round((seconds - whole) * 100):02d}"


def _write_series(vol: np.ndarray, grid: _Grid, site: PetctSite, series_dir: Path, *, modality: str, seed: int,
                  key: tuple, identity, study: dict, pet: dict | None = None) -> list[str]:
    """One axial file per slice (instance numbers in true order); returns the file names in true-array order."""
    names = []
    for k in range(vol.shape[0]):
        uid = make_uid(seed, *key, "slice", k)
        sop_class = CTImageStorage if modality == "CT" else PositronEmissionTomographyImageStorage
        ds = new_dataset(sop_class_uid=sop_class, sop_instance_uid=uid, identity=identity, study=study,
                         institution=site.institution, manufacturer=site.manufacturer, modality=modality)
        ds.FrameOfReferenceUID = study["frame_uid"]
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        position = grid.origin + np.array([0.0, 0.0, k * grid.spacing[0]])
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceThickness = f"{grid.spacing[0]:.6g}"
        ds.SliceLocation = f"{position[2]:.4f}"
        ds.PixelSpacing = [f"{grid.spacing[1]:.6g}", f"{grid.spacing[2]:.6g}"]
        ds.BodyPartExamined = "WHOLEBODY"
        if modality == "CT":
            stored = np.clip(np.round(vol[k]) + 1024, 0, 4095).astype(np.uint16)
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
            ds.KVP = "120"
            set_pixels(ds, stored, bits_stored=12, photometric="MONOCHROME2")
        else:
            _pet_module(ds, pet)
            peak = float(vol[k].max())
            slope = peak / 32000.0 if peak > 0 else 1.0  # each slice its own scale, as PET scanners write
            ds.RescaleIntercept, ds.RescaleSlope = "0", f"{slope:.8g}"
            stored = np.clip(np.round(vol[k] / float(ds.RescaleSlope)), 0, 65535).astype(np.uint16)
            set_pixels(ds, stored, bits_stored=16, photometric="MONOCHROME2")
        name = f"{opaque_name(seed, *key, 'slice', k, length=16)}.dcm"
        save_dataset(ds, series_dir / name)
        names.append(name)
    return names


def _pet_module(ds: Dataset, pet: dict) -> None:
    """PET Series, PET Isotope and Patient Study elements SUVbw needs (see the module docstring)."""
    ds.SeriesTime = ds.AcquisitionTime = _tm(_SERIES_SECONDS)
    ds.Units = "BQML"
    ds.DecayCorrection = "START"
    ds.CorrectedImage = ["ATTN", "DECY"]
    ds.SeriesType = ["WHOLE BODY", "IMAGE"]
    ds.PatientWeight = f"{pet['weight_kg']:.1f}"
    drug = Dataset()
    drug.Radiopharmaceutical = "Fluorodeoxyglucose"
    drug.RadiopharmaceuticalStartTime = _tm(_SERIES_SECONDS - pet["uptake_s"])
    drug.RadionuclideTotalDose = f"{pet['dose_bq']:.6g}"
    drug.RadionuclideHalfLife = f"{F18_HALF_LIFE_S:g}"
    drug.RadionuclidePositronFraction = "0.9673"
    ds.RadiopharmaceuticalInformationSequence = [drug]


def generate_petct(
    out: Path, spec: SizeSpec, *, seed: int, patient_effect: bool, finding_strength: float, ct_signal: bool = True
) -> list[dict]:
    """Write ``out/petct/`` and its tables; return the ground-truth rows (one per study: a CT and a PET series)."""
    task_dir = out / TASK
    rows_out: list[dict] = []
    labels: list[dict] = []
    slice_rows: list[dict] = []
    n = spec.petct_patients_per_site
    # balanced within each centre: a centre is seen in every slice, so an unbalanced one would carry the label
    all_labels = [label for site in SITES for label in balanced_labels(rng_for(seed, TASK, "labels", site.name), n,
                                                                        CLASSES)]
    jobs = [(s, site, i) for s, site in enumerate(SITES) for i in range(n)]
    for s, site, i in tqdm(jobs, desc="petct", unit="patient", disable=None, leave=False):
        p = s * n + i
        label = all_labels[p]
        prng = rng_for(seed, TASK, "patient", p)
        identity = fake_identity(seed, site.name, INDEX_OFFSET[TASK] + p)
        key = (TASK, p, 0)
        ct_grid, pet_grid = _grids(spec.petct_shape, site, np.round(prng.uniform(-50, 50, size=3), 2))
        half_fov = site.field_of_view_mm / 2
        sig = _signature(seed, p, ct_grid.shape[0], half_fov, per_slice=not patient_effect)
        lrng = rng_for(seed, TASK, "lesions", p)
        n_lesions, n_hotspots = _spot_counts(prng, lrng, positive=label == "positive")
        lesions = _spots(lrng, n_lesions, ct_grid, site)
        hotspots = _spots(rng_for(seed, TASK, "hotspots", p), n_hotspots, ct_grid, site)
        weight = float(np.round(prng.uniform(50, 100), 1))
        dose = float(np.round(prng.uniform(*site.dose_mbq) * 1e6, -3))
        uptake = float(np.round(prng.uniform(*site.uptake_minutes) * 60))
        factor = _suv_factor(weight, dose, uptake)

        hu, _ = _paint(ct_grid, ct_grid, sig, lesions, hotspots, strength=finding_strength, ct_signal=ct_signal)
        noise_rng = rng_for(seed, TASK, "noise", p)
        hu = hu + site.ct_noise_hu * noise_rng.standard_normal(hu.shape).astype(np.float32)
        _, suv = _paint(pet_grid, ct_grid, sig, lesions, hotspots, strength=finding_strength, ct_signal=ct_signal)
        sigma = site.pet_fwhm_mm / 2.355 / np.array(pet_grid.spacing)
        suv = ndimage.gaussian_filter(suv, sigma)
        suv = np.clip(suv * (1 + site.pet_noise * noise_rng.standard_normal(suv.shape)), 0, None).astype(np.float32)
        bqml = suv / factor

        z_ct = ct_grid.origin[2] + np.arange(ct_grid.shape[0]) * ct_grid.spacing[0]
        positive = [bool(np.any(np.abs(z - lesions[0][:, 2]) < lesions[1])) for z in z_ct]
        slice_labels = ["positive" if v else "negative" for v in positive]

        study_uid, ct_uid, pet_uid = (make_uid(seed, *key, part) for part in ("study", "ct", "pet"))
        srng = rng_for(seed, TASK, "study", p)
        study = {
            "study_uid": study_uid, "frame_uid": make_uid(seed, *key, "frame"),
            "accession": accession_number(seed, site.name, *key),
            "date": (_STUDY_EPOCH + timedelta(days=int(srng.integers(0, 700)))).strftime("%Y%m%d"),
        }
        patient_dir = opaque_name(seed, TASK, "patient", p)
        files = []
        for modality, series_uid, vol, grid, number in (("CT", ct_uid, hu, ct_grid, 2), ("PT", pet_uid, bqml,
                                                                                           pet_grid, 3)):
            series_rel = f"{site.name}/{patient_dir}/{opaque_name(seed, *key, modality)}"
            series = {**study, "series_uid": series_uid, "series_number": number,
                      "description": "CT WB LOW DOSE" if modality == "CT" else "PET WB AC"}
            pet = {"weight_kg": weight, "dose_bq": dose, "uptake_s": uptake} if modality == "PT" else None
            names = _write_series(vol, grid, site, task_dir / series_rel, modality=modality, seed=seed,
                                  key=(*key, modality), identity=identity, study=series, pet=pet)
            files += [f"{series_rel}/{name}" for name in names]
        rows_out.append({
            "task": TASK, "file": "", "files": files, "patient_id": identity.patient_id, "site": site.name,
            "study_uid": study_uid, "series_uid": ct_uid, "label": label, "patient_name": identity.patient_name,
            "patient_birth_date": identity.birth_date, "accession_number": study["accession"],
            "pet_series_uid": pet_uid, "frame_uid": study["frame_uid"],
            "ct_shape": list(ct_grid.shape), "ct_spacing": list(ct_grid.spacing), "ct_origin": ct_grid.origin.tolist(),
            "pet_shape": list(pet_grid.shape), "pet_spacing": list(pet_grid.spacing),
            "pet_origin": pet_grid.origin.tolist(), "patient_weight_kg": weight, "injected_dose_bq": dose,
            "uptake_seconds": uptake, "half_life_s": F18_HALF_LIFE_S, "suv_per_bqml": factor,
            "lesion_centers_mm": lesions[0].tolist(), "lesion_radii_mm": lesions[1].tolist(),
            "hotspot_centers_mm": hotspots[0].tolist(), "slice_labels": slice_labels, "ct_signal": bool(ct_signal),
        })
        labels.append({"study_uid": study_uid, "label": label})
        slice_rows += [{"series_uid": ct_uid, "slice": k, "label": v} for k, v in enumerate(slice_labels)]
    write_task_tables(task_dir, rows_out, labels, EXTRA_COLUMNS)
    pd.DataFrame(slice_rows, columns=["series_uid", "slice", "label"]).to_csv(task_dir / "slice_labels.csv",
                                                                              index=False)
    logger.info("Wrote %d PET/CT studies of %d patients.", len(rows_out), len(jobs))
    return rows_out


EXTRA_COLUMNS = (
    "pet_series_uid", "frame_uid", "ct_shape", "ct_spacing", "ct_origin", "pet_shape", "pet_spacing", "pet_origin",
    "patient_weight_kg", "injected_dose_bq", "uptake_seconds", "half_life_s", "suv_per_bqml", "lesion_centers_mm",
    "lesion_radii_mm", "hotspot_centers_mm", "slice_labels", "ct_signal",
)

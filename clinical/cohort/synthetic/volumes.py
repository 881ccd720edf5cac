"""CT- and MR-like 3D studies with one of three lesion types, as DICOM series and as NIfTI.

Classes (the patient's lesion type; every study of a patient shares it):

- ``smooth``: a homogeneous sphere with a soft edge;
- ``spiculated``: a sphere with radial spikes and a grainy inside;
- ``cystic``: a ring-enhancing wall around a dark fluid core.

``finding_strength`` scales the lesion contrast (0 leaves only the patient's anatomy).

Sites: ``northfield`` exports CT as DICOM series, ``riverside`` MR as DICOM for
half its patients and NIfTI for the rest, ``eastgate`` CT as NIfTI. DICOM
series have one file per slice with random names; some are coronal or
sagittal and some number their instances from the far end (reversed order).
NIfTI files alternate ``.nii`` / ``.nii.gz`` and are stored in varied
orientations (RAS, LPS, LAS, ...) with anisotropic voxels.

The *true array* of a volume (``shape``, ``spacing`` and ``slice_means`` in
``ground_truth.csv``) is ``(slices, rows, cols)``: for DICOM, slices sorted by
their position along the normal ``row_cosine × column_cosine`` of (0020,0037)
(ascending), rows and columns as stored; for NIfTI, the RAS-canonical data
(``nibabel.as_closest_canonical``) transposed to ``(z, y, x)``. CT values are
Hounsfield units after (0028,1052)/(0028,1053); MR values are arbitrary units.

``labels.csv`` keys DICOM series by ``series_uid`` and NIfTI files by ``file``
(relative to ``volumes/``, e.g. ``nifti/eastgate/<patient_dir>/<name>.nii.gz``).
Ground-truth columns beyond the common ones: ``format`` (dicom|nifti),
``modality``, ``shape`` and ``spacing`` of the true array (mm, z y x),
``origin`` (mm; DICOM: (0020,0032) of the first true slice, NIfTI: the RAS
affine's translation before re-orientation), ``orientation`` (DICOM:
axial|coronal|sagittal; NIfTI: the stored axis codes), ``direction`` (DICOM:
row cosine, column cosine, normal), ``reversed_instances`` (DICOM: instance
numbers run against the true order), ``affine``, ``nifti_shape``,
``nifti_zooms`` and ``compressed`` (NIfTI as stored), ``n_files``,
``lesion_center`` (true-array index), ``lesion_radius_mm`` and
``slice_means`` (mean of each true slice, to check slice order).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, ornt_transform
from pydicom.uid import CTImageStorage, MRImageStorage
from tqdm.auto import tqdm

from clinical.cohort.synthetic.dicom import new_dataset, save_dataset, set_pixels
from clinical.cohort.synthetic.phi import INDEX_OFFSET, accession_number, fake_identity
from clinical.cohort.synthetic.records import balanced_labels, make_uid, opaque_name, rng_for, write_task_tables
from clinical.cohort.synthetic.sizes import SizeSpec
from clinical.cohort.synthetic.textures import smooth_noise

__all__ = ["CLASSES", "SITES", "VolumeSite", "generate_volumes"]

logger = logging.getLogger(__name__)

TASK = "volumes"
CLASSES = ("smooth", "spiculated", "cystic")

#: Direction cosines (row, column) in the DICOM patient frame (LPS) for each slice plane.
_PLANES = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
_NIFTI_AXCODES = ("RAS", "LPS", "LAS", "RPI", "PIR", "ASL")
#: DICOM series cycle through these (plane, reversed instance numbers), so any three in a row
#: include a non-axial and a reversed series whatever the seed.
_DICOM_VARIANTS = (("axial", False), ("coronal", True), ("sagittal", False), ("axial", True))
_STUDY_EPOCH = date(2022, 5, 2)


@dataclass(frozen=True)
class VolumeSite:
    """How one site scans and exports volumes."""

    name: str
    institution: str
    manufacturer: str
    modality: str  # CT or MR
    nifti_share: float  # fraction of patients exported as NIfTI instead of DICOM
    shape_delta: tuple[int, int, int]  # added to the size's (slices, rows, cols)
    field_of_view_mm: float
    slice_ratio: float  # slice spacing / in-plane spacing (anisotropy)
    noise: float  # SD in modality units


SITES = (
    VolumeSite("northfield", "Northfield General Hospital", "Acme Imaging", "CT", 0.0, (0, 0, 0), 240.0, 2.0, 12.0),
    VolumeSite(
        "riverside", "Riverside Children's Hospital", "Borealis Medical", "MR", 0.5, (-4, 0, 0), 220.0, 1.5, 15.0
    ),
    VolumeSite(
        "eastgate", "Eastgate University Medical Centre", "Cygnus Systems", "CT", 1.0, (2, -4, -4), 260.0, 2.5, 8.0
    ),
)

#: Tissue values per modality: air/background, soft tissue, organ, lesion contrast unit.
_LEVELS = {"CT": (-1000.0, 40.0, 90.0, 70.0), "MR": (0.0, 400.0, 620.0, 260.0)}


def _phantom(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], modality: str, label: str,
    anatomy_rng: np.random.Generator, texture: np.ndarray, lesion_rng: np.random.Generator, strength: float,
    noise: float,
) -> tuple[np.ndarray, list[int], float]:
    """The true array (slices, rows, cols) in modality units, the lesion centre index and its radius in mm."""
    air, tissue, organ, contrast = _LEVELS[modality]
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    half = np.array([(n - 1) / 2 * s for n, s in zip(shape, spacing, strict=True)])
    body_r = half[1:] * anatomy_rng.uniform(0.75, 0.92, size=2)
    body = (grid[1] / body_r[0]) ** 2 + (grid[2] / body_r[1]) ** 2 < 1
    organ_c = np.array([0.0, *(anatomy_rng.uniform(-0.3, 0.3, size=2) * body_r)])
    organ_r = np.array([half[0] * 1.2, *(body_r * anatomy_rng.uniform(0.3, 0.45, size=2))])
    organ_mask = (((grid - organ_c[:, None, None, None]) / organ_r[:, None, None, None]) ** 2).sum(0) < 1
    level = tissue + anatomy_rng.uniform(-0.1, 0.1) * abs(organ - tissue)
    vol = np.where(body, level, air).astype(np.float32)
    vol[organ_mask & body] = organ + anatomy_rng.uniform(-0.1, 0.1) * abs(organ - tissue)
    vol += body * texture * 0.35 * abs(organ - tissue)
    radius = float(lesion_rng.uniform(0.16, 0.22) * min(body_r))
    centre = np.array([
        lesion_rng.uniform(-0.3, 0.3) * half[0],
        *(lesion_rng.uniform(-0.4, 0.4, size=2) * (body_r - radius)),
    ])
    d = grid - centre[:, None, None, None]
    r = np.sqrt((d**2).sum(0)) + 1e-6
    edge = 0.6 * min(spacing)

    def inside(rad: np.ndarray | float) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip((rad - r) / edge, -30, 30)))

    amp = contrast * strength * float(lesion_rng.uniform(0.85, 1.15))
    if label == "smooth":
        lesion = amp * inside(radius)
    elif label == "spiculated":
        dirs = lesion_rng.standard_normal((9, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        cos = np.tensordot(dirs, d / r, axes=(1, 0))
        spikes = np.clip(cos, 0, 1).max(0) ** 30
        grain = lesion_rng.standard_normal(shape).astype(np.float32)
        lesion = amp * inside(radius * (0.7 + 0.9 * spikes)) * (1.0 + 0.5 * grain)
    else:
        lesion = amp * (1.4 * (inside(radius) - inside(0.6 * radius)) - 0.8 * inside(0.6 * radius))
    vol += lesion.astype(np.float32)
    vol += noise * lesion_rng.standard_normal(shape).astype(np.float32)
    # Quantise to what the files hold (integer HU for CT, 12-bit for MR) so ground truth matches them exactly.
    vol = np.clip(np.round(vol), -1024, 3071) if modality == "CT" else np.clip(np.round(np.abs(vol)), 0, 4095)
    index = [int(np.rint(c / s + (n - 1) / 2)) for c, s, n in zip(centre, spacing, shape, strict=True)]
    return vol.astype(np.float32), index, radius


def _write_dicom(
    vol: np.ndarray, spacing: tuple[float, float, float], site: VolumeSite, series_dir: Path, *,
    seed: int, key: tuple, identity, study: dict, plane: str, reverse: bool, origin: np.ndarray,
) -> list[str]:
    """One file per slice; returns the file names in true-array order (ascending along the normal)."""
    row_cos, col_cos = (np.array(c) for c in _PLANES[plane])
    normal = np.cross(row_cos, col_cos)
    if site.modality == "CT":
        stored = (vol + 1024).astype(np.uint16)
        sop_class = CTImageStorage
    else:
        stored = vol.astype(np.uint16)
        sop_class = MRImageStorage
    names = []
    n = vol.shape[0]
    for k in range(n):
        sop_uid = make_uid(seed, *key, "slice", k)
        ds = new_dataset(
            sop_class_uid=sop_class, sop_instance_uid=sop_uid, identity=identity, study=study,
            institution=site.institution, manufacturer=site.manufacturer, modality=site.modality,
        )
        position = origin + k * spacing[0] * normal
        ds.FrameOfReferenceUID = study["frame_uid"]
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if plane == "axial" else "OTHER"]
        ds.InstanceNumber = (n - k) if reverse else (k + 1)
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:g}" for v in (*row_cos, *col_cos)]
        ds.SliceThickness = f"{spacing[0]:.6g}"
        ds.SpacingBetweenSlices = f"{spacing[0]:.6g}"
        ds.SliceLocation = f"{float(position @ normal):.4f}"
        ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[2]:.6g}"]
        ds.BodyPartExamined = "ABDOMEN"
        if site.modality == "CT":
            ds.RescaleIntercept = "-1024"
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.KVP = "120"
            ds.WindowCenter, ds.WindowWidth = "40", "400"
        else:
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.RepetitionTime = "500"
            ds.EchoTime = "15"
            ds.MagneticFieldStrength = "1.5"
        set_pixels(ds, stored[k], bits_stored=12, photometric="MONOCHROME2")
        name = f"{opaque_name(seed, *key, 'slice', k, length=16)}.dcm"
        save_dataset(ds, series_dir / name)
        names.append(name)
    return names


def _write_nifti(
    vol: np.ndarray, spacing: tuple[float, float, float], modality: str, path: Path, axcodes: str, origin: np.ndarray
) -> nib.Nifti1Image:
    """Store the true array re-oriented to ``axcodes``; the canonical (RAS) view gives it back."""
    data = np.transpose(vol, (2, 1, 0))  # (x, y, z) in RAS
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    affine[:3, 3] = origin
    dtype = np.int16 if modality == "CT" else np.float32
    image = nib.Nifti1Image(data.astype(dtype), affine)
    image = image.as_reoriented(ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(axcodes))))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return image


def generate_volumes(
    out: Path, spec: SizeSpec, *, seed: int, patient_effect: bool, finding_strength: float
) -> list[dict]:
    """Write ``out/volumes/`` and its tables; return the ground-truth rows (one per series or NIfTI file)."""
    task_dir = out / TASK
    rows_out: list[dict] = []
    labels: list[dict] = []
    n = spec.volume_patients_per_site
    all_labels = balanced_labels(rng_for(seed, TASK, "labels"), n * len(SITES), CLASSES)
    jobs = [(s, site, i) for s, site in enumerate(SITES) for i in range(n)]
    offset = int(rng_for(seed, TASK, "variants").integers(len(_DICOM_VARIANTS) * len(_NIFTI_AXCODES)))
    written = {"dicom": offset, "nifti": offset}
    for s, site, i in tqdm(jobs, desc="volumes", unit="patient", disable=None, leave=False):
        p = s * n + i
        label = all_labels[p]
        prng = rng_for(seed, TASK, "patient", p)
        as_nifti = i >= round(n * (1 - site.nifti_share))
        n_studies = int(prng.integers(1, 3))
        shape = tuple(int(a + b) for a, b in zip(spec.volume_shape, site.shape_delta, strict=True))
        in_plane = site.field_of_view_mm / shape[2]
        spacing = (round(in_plane * site.slice_ratio, 3), round(in_plane, 3), round(in_plane, 3))
        identity = fake_identity(seed, site.name, INDEX_OFFSET[TASK] + p)
        patient_dir = opaque_name(seed, TASK, "patient", p)
        for k in range(n_studies):
            key = (TASK, p, k)
            srng = rng_for(seed, TASK, "study", p, k)
            own = (p,) if patient_effect else (p, k)
            anatomy_rng = rng_for(seed, TASK, "anatomy", *own)
            texture = smooth_noise(rng_for(seed, TASK, "texture", *own), shape, max(shape) / 8)
            vol, centre, radius = _phantom(
                shape, spacing, site.modality, label, anatomy_rng, texture, rng_for(seed, TASK, "lesion", p, k),
                finding_strength, site.noise,
            )
            origin = np.round(srng.uniform(-150, 150, size=3), 2)
            study_uid = make_uid(seed, *key, "study")
            series_uid = make_uid(seed, *key, "series")
            row = {
                "task": TASK, "patient_id": identity.patient_id, "site": site.name, "study_uid": study_uid,
                "series_uid": series_uid, "label": label, "modality": site.modality,
                "shape": list(vol.shape), "spacing": list(spacing), "lesion_center": centre,
                "lesion_radius_mm": round(radius, 3),
                "slice_means": [round(float(m), 3) for m in vol.mean(axis=(1, 2))],
            }
            if as_nifti:
                axcodes = _NIFTI_AXCODES[written["nifti"] % len(_NIFTI_AXCODES)]
                compressed = written["nifti"] % 2 == 0
                written["nifti"] += 1
                suffix = ".nii.gz" if compressed else ".nii"
                rel = f"nifti/{site.name}/{patient_dir}/{opaque_name(seed, *key, 'file')}{suffix}"
                image = _write_nifti(vol, spacing, site.modality, task_dir / rel, axcodes, origin)
                row.update({
                    "file": rel, "files": [rel], "patient_id": patient_dir, "study_uid": "", "series_uid": "",
                    "format": "nifti", "orientation": axcodes, "origin": origin.tolist(),
                    "affine": np.round(image.affine, 6).tolist(), "nifti_shape": list(image.shape),
                    "nifti_zooms": [float(z) for z in image.header.get_zooms()], "compressed": compressed,
                    "n_files": 1,
                })
                labels.append({"file": rel, "label": label})
            else:
                plane, reverse = _DICOM_VARIANTS[written["dicom"] % len(_DICOM_VARIANTS)]
                written["dicom"] += 1
                study = {
                    "study_uid": study_uid, "series_uid": series_uid, "frame_uid": make_uid(seed, *key, "frame"),
                    "accession": accession_number(seed, site.name, *key),
                    "date": (_STUDY_EPOCH + timedelta(days=int(srng.integers(0, 700)))).strftime("%Y%m%d"),
                    "series_number": int(srng.integers(2, 9)), "description": f"{site.modality} ABDOMEN",
                }
                series_rel = f"dicom/{site.name}/{opaque_name(seed, *key, 'series')}"
                names = _write_dicom(
                    vol, spacing, site, task_dir / series_rel, seed=seed, key=key, identity=identity, study=study,
                    plane=plane, reverse=reverse, origin=origin,
                )
                row_cos, col_cos = _PLANES[plane]
                row.update({
                    "file": "", "files": [f"{series_rel}/{name}" for name in names],
                    "patient_name": identity.patient_name, "patient_birth_date": identity.birth_date,
                    "accession_number": study["accession"], "format": "dicom", "orientation": plane,
                    "origin": origin.tolist(), "direction": [*row_cos, *col_cos, *np.cross(row_cos, col_cos).tolist()],
                    "reversed_instances": reverse, "n_files": len(names),
                })
                labels.append({"series_uid": series_uid, "label": label})
            rows_out.append(row)
    write_task_tables(task_dir, rows_out, labels, EXTRA_COLUMNS)
    logger.info("Wrote %d volumes of %d patients.", len(rows_out), len(jobs))
    return rows_out


EXTRA_COLUMNS = (
    "format", "modality", "shape", "spacing", "origin", "orientation", "direction", "reversed_instances", "affine",
    "nifti_shape", "nifti_zooms", "compressed", "n_files", "lesion_center", "lesion_radius_mm",
    "slice_means",
)

"""The synthetic multi-site demo cohort: real DICOM, NIfTI, TIFF and photo files, deterministic by seed.

It is what the demo, the tests and the benchmarks ingest. Several tasks,
three sites each, every file in a standard format that the usual tools open
(dcmdump, nibabel, tiffslide, PIL)::

    OUT/radiographs/<site>/<patient_dir>/<study_dir>/<name>.dcm     CR and DX, label per patient
    OUT/volumes/dicom/<site>/<series_dir>/<random_name>.dcm         CT/MR series, one file per slice
    OUT/volumes/nifti/<site>/<patient_dir>/<name>.nii | .nii.gz
    OUT/slides/<site>/<patient_dir>/<name>.tiff                     pyramidal tiled TIFF
    OUT/papyri/<site>/<papyrus_dir>/<name>.png | .jpg | .tif        photographs of glyphs
    OUT/fundus/<site>/<patient_dir>/<name>.png | .jpg               colour fundus photographs, two eyes each
    OUT/petct/<site>/<patient_dir>/<series_dir>/<name>.dcm          PET and CT series of one study, one frame
                                                                     of reference; OUT/petct/slice_labels.csv
    OUT/<task>/labels.csv, OUT/<task>/ground_truth.csv
    OUT/summary.json

Folder and file names are opaque hex and carry no PHI. ``labels.csv`` is what a
user passes to ``clinical ingest --labels``: a ``label`` column and exactly one
key per row among ``patient_id`` (radiographs: the raw PatientID),
``series_uid`` (DICOM volumes) and ``file`` (NIfTI, slides, papyri; relative
to the task folder). For non-DICOM files the patient is the parent folder and
the site the folder under the task. ``ground_truth.csv`` has one row per file
(per series for DICOM volumes) with everything a test needs; list-valued cells
are JSON. See each task module for its labels, site effects and columns.

Sizes (three sites per task; items are files, or series for DICOM volumes; CPU time of
``clinical synth`` on one core of the 2-core reference machine, imports included):

======  ===============================  ==========================  ===================  ===================  ======
size    radiographs                      volumes                     slides               papyri               CPU
======  ===============================  ==========================  ===================  ===================  ======
tiny    12 patients, 25 images ≤ 128 px  11 (6 patients) ≤ 22×48×48  14 (6), 1024×768    19 (1 of 2048 px)    ~4 s
small   60 patients, 123 images, 128 px  36 (24) ≤ 26×64×64          14 (6), 2048×1536   146 (2 large)        ~13 s
demo    180 patients, 366 images, 256    87 (60) ≤ 34×96×96          29 (12), 4096×3072  424 (4 of 2560 px)   ~60 s
======  ===============================  ==========================  ===================  ===================  ======

Fundus photographs (two per patient, sides before per-camera scaling): tiny 12 patients, 24 photographs
of 64 px; small 120 patients, 240 of 96 px; demo 300 patients, 600 of 256 px.

``finding_strength`` scales what carries the label (lung opacity, lesion
contrast, tumour texture; papyri are not affected): 0 removes it, 1 is the
demo's default (learnable, not trivial), 3 is strong. ``patient_effect``
gives each patient a strong, label-free appearance shared by all their
images, so an image-level split leaks: a model can memorise the patient.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

from clinical.cohort.synthetic.fundus import generate_fundus
from clinical.cohort.synthetic.papyri import generate_papyri
from clinical.cohort.synthetic.petct import generate_petct
from clinical.cohort.synthetic.phi import phi_values
from clinical.cohort.synthetic.radiographs import generate_radiographs
from clinical.cohort.synthetic.sizes import SIZES, SizeSpec
from clinical.cohort.synthetic.slides import generate_slides
from clinical.cohort.synthetic.volumes import generate_volumes
from clinical.errors import ConfigurationError

__all__ = ["SIZES", "TASKS", "SizeSpec", "generate_cohort", "phi_values"]

logger = logging.getLogger(__name__)

_GENERATORS = {
    "radiographs": generate_radiographs,
    "volumes": generate_volumes,
    "slides": generate_slides,
    "papyri": generate_papyri,
    "fundus": generate_fundus,
    "petct": generate_petct,
}
#: The task folders, in the order they are generated.
TASKS = tuple(_GENERATORS)


def generate_cohort(
    out: str | Path,
    *,
    size: str = "tiny",
    seed: int = 0,
    patient_effect: bool = True,
    finding_strength: float = 1.0,
    tasks: tuple[str, ...] | list[str] | None = None,
    ct_signal: bool = True,
    finding_focus: float = 1.0,
    spec: SizeSpec | None = None,
) -> dict:
    """Write the synthetic cohort under ``out`` and return its summary (also written to ``summary.json``).

    Parameters
    ----------
    out
        An empty or absent folder.
    size
        ``"tiny"`` (unit tests, seconds), ``"small"`` (tests that train) or ``"demo"``.
    seed
        Non-negative integer; the same seed gives byte-identical files.
    patient_effect
        Give each patient a strong label-free signature shared by their images.
    finding_strength
        Scale of what carries the label, ≥ 0 (0 removes it; 1 default; 3 strong).
    tasks
        A subset of :data:`TASKS` to generate (default: all).
    ct_signal
        PET/CT task only: lesions also show on CT (so PET + CT can beat PET alone); False hides them there.
    finding_focus
        Slides task only: the share of a tumour island its texture covers, in (0, 1] (1 default: the whole
        island; 0.1: one small focus, a few per cent of a slide's tiles, where attention MIL beats tile
        aggregation).
    spec
        Counts and matrix sizes to use instead of ``SIZES[size]`` (a study's own size; ``size`` still names it).

    Returns
    -------
    dict
        ``size, seed, patient_effect, finding_strength`` and, per task, counts of
        items, files, patients, items per site and items per label.

    Raises
    ------
    ConfigurationError
        For an unknown size or task, a negative or non-integer seed, a negative
        or non-finite strength, or an ``out`` folder that already holds files.
    """
    if size not in SIZES:
        raise ConfigurationError(f"size must be one of {sorted(SIZES)}; got {size!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer; got {seed!r}.")
    if not isinstance(finding_strength, (int, float)) or not math.isfinite(finding_strength) or finding_strength < 0:
        raise ConfigurationError(f"finding_strength must be a finite number >= 0; got {finding_strength!r}.")
    chosen = TASKS if tasks is None else tuple(tasks)
    unknown = sorted(set(chosen) - set(TASKS))
    if unknown or not chosen:
        raise ConfigurationError(f"tasks must be a non-empty subset of {list(TASKS)}; got {list(chosen)}.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigurationError(f"{out} already exists and is not an empty folder; choose a new output folder.")
    out.mkdir(parents=True, exist_ok=True)
    spec = spec or SIZES[size]
    summary: dict = {
        "size": size, "seed": seed, "patient_effect": bool(patient_effect),
        "finding_strength": float(finding_strength), "ct_signal": bool(ct_signal),
        "finding_focus": float(finding_focus), "tasks": {},
    }
    for task in TASKS:
        if task not in chosen:
            continue
        rows = _GENERATORS[task](
            out, spec, seed=seed, patient_effect=bool(patient_effect), finding_strength=float(finding_strength),
            **({"ct_signal": bool(ct_signal)} if task == "petct" else {}),
            **({"finding_focus": float(finding_focus)} if task == "slides" else {}),
        )
        summary["tasks"][task] = {
            "items": len(rows),
            "files": sum(len(row["files"]) for row in rows),
            "patients": len({(row["site"], row["patient_id"]) for row in rows}),
            "sites": dict(sorted(Counter(row["site"] for row in rows).items())),
            "labels": dict(sorted(Counter(row["label"] for row in rows).items())),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("Wrote a %s synthetic cohort (seed %d) with tasks %s.", size, seed, ", ".join(summary["tasks"]))
    return summary

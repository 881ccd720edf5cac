"""A toy cohort written straight to disk (manifest + ``.npy`` arrays) for the data and training tests.

Class ``positive`` items carry a bright disc at a random place, ``negative`` items
none; both have the same noise. Tiny (32×32) so a small CNN learns it in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clinical.cohort.manifest import write_manifest


def write_toy_cohort(
    cohort: Path, *, patients: int = 24, per_patient: int = 2, size: int = 32, seed: int = 0, kind: str = "image"
) -> pd.DataFrame:
    """Write a two-class cohort under ``cohort`` and return its manifest."""
    rng = np.random.default_rng(seed)
    (cohort / "arrays").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for p in range(patients):
        label = "positive" if p % 2 else "negative"
        for k in range(per_patient):
            image = rng.normal(0.0, 0.3, (1, size, size)).astype(np.float32)
            if label == "positive":
                cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
                image[0][(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2] += 1.0
            item_id = f"item{p:03d}{k}"
            path = f"arrays/{item_id}.npy"
            np.save(cohort / path, image)
            rows.append(
                {
                    "item_id": item_id,
                    "patient_key": f"pk{p:03d}",
                    "study_key": f"st{p:03d}",
                    "series_key": f"se{p:03d}{k}",
                    "site": "north" if p % 3 else "south",
                    "modality": "CR",
                    "kind": kind,
                    "label": label,
                    "path": path,
                    "source": [f"src/{item_id}.dcm"],
                    "shape": list(image.shape),
                    "spacing": [0.2, 0.2],
                    "source_digest": f"{p:03d}{k}",
                }
            )
    manifest = pd.DataFrame(rows)
    write_manifest(manifest, cohort)
    return manifest


def toy_split(manifest: pd.DataFrame, *, folds: int = 2) -> pd.DataFrame:
    """A patient-level split: per fold, one block of patients is test, the next val, the rest train."""
    patients = sorted(manifest["patient_key"].unique())
    blocks = [patients[i::folds + 1] for i in range(folds + 1)]
    rows = []
    for fold in range(folds):
        role_of = {p: "test" for p in blocks[fold]} | {p: "val" for p in blocks[(fold + 1) % (folds + 1)]}
        for item_id, patient in zip(manifest["item_id"], manifest["patient_key"], strict=True):
            role = role_of.get(patient, "train")
            rows.append({"item_id": item_id, "patient_key": patient, "fold": fold, "role": role})
    return pd.DataFrame(rows)

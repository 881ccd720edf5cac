"""A toy cohort written straight to disk (manifest + ``.npy`` arrays), with no source files and no ingest.

For tests of the data and training layers and for throughput benchmarks, which need
items of a given shape and a learnable label but none of the decoders (a GPU machine
may have torch and MONAI and nothing else). Class ``positive`` items carry a bright
disc (a ball in volumes) at a random place, ``negative`` items none; both have the
same noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clinical.cohort.manifest import write_manifest

__all__ = ["write_toy_cohort"]


def write_toy_cohort(
    cohort: Path,
    *,
    patients: int = 24,
    per_patient: int = 2,
    size: int = 32,
    seed: int = 0,
    kind: str = "image",
    channels: int = 1,
) -> pd.DataFrame:
    """Write a two-class cohort of ``kind`` items, ``size`` pixels (voxels) on every axis, and return its manifest."""
    cohort = Path(cohort)
    rng = np.random.default_rng(seed)
    (cohort / "arrays").mkdir(parents=True, exist_ok=True)
    dims = 3 if kind == "volume" else 2
    grid = np.indices((size,) * dims)
    rows = []
    for p in range(patients):
        label = "positive" if p % 2 else "negative"
        for k in range(per_patient):
            image = rng.normal(0.0, 0.3, (channels, *(size,) * dims)).astype(np.float32)
            if label == "positive":
                centre = rng.integers(size // 4, 3 * size // 4, dims)
                distance = sum((axis - c) ** 2 for axis, c in zip(grid, centre, strict=True))
                image[:, distance < (size // 6) ** 2] += 1.0
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
                    "modality": "MR" if dims == 3 else "CR",
                    "kind": kind,
                    "label": label,
                    "path": path,
                    "source": [f"src/{item_id}.dcm"],
                    "shape": list(image.shape),
                    "spacing": [0.2] * dims,
                    "source_digest": f"{p:03d}{k}",
                }
            )
    manifest = pd.DataFrame(rows)
    write_manifest(manifest, cohort)
    return manifest

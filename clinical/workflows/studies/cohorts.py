"""Where a study's patients come from: the synthetic analogue (generated and ingested once), or the user's cohort."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from clinical.cohort import read_manifest
from clinical.cohort.synthetic import SIZES, generate_cohort
from clinical.errors import ConfigurationError
from clinical.ingest import ingest
from clinical.workflows.cohort import split_cohort

__all__ = ["study_cohort", "study_split"]

logger = logging.getLogger(__name__)

#: The pseudonymisation key of synthetic analogues: their patients are invented, so a fixed key is harmless
#: and makes the cohort digest the same on every machine.
SYNTHETIC_KEY = "synthetic-study-key"


def study_cohort(
    root: str | Path,
    task: str,
    *,
    cohort: str | Path | None = None,
    size: str = "tiny",
    seed: int = 0,
    spec: dict[str, Any] | None = None,
    generator: dict[str, Any] | None = None,
    ingest_options: dict[str, Any] | None = None,
    name: str = "cohort",
) -> tuple[Path, Path | None]:
    """The study's cohort folder, and the raw synthetic task folder (``None`` for the user's cohort).

    With ``cohort`` (an ingested cohort folder) that cohort is used as it is. Otherwise the synthetic task is
    written under ``root/synthetic-<name>`` from the size ``size`` with the fields of ``spec`` replaced, then
    ingested into ``root/<name>``; both steps are skipped when their output is already there, so a rerun
    of a study trains again without generating again.
    """
    if cohort is not None:
        cohort = Path(cohort)
        if not (cohort / "manifest.parquet").is_file():
            raise ConfigurationError(f"{cohort} is not an ingested cohort (no manifest.parquet); run clinical ingest.")
        return cohort, None
    if size not in SIZES:
        raise ConfigurationError(f"size must be one of {sorted(SIZES)}; got {size!r}.")
    root = Path(root)
    raw, cohort_dir = root / f"synthetic-{name}", root / name
    size_spec = dataclasses.replace(SIZES[size], **(spec or {}))
    if not (raw / "summary.json").is_file():
        generate_cohort(raw, size=size, seed=seed, tasks=(task,), spec=size_spec, **(generator or {}))
    if not (cohort_dir / "manifest.parquet").is_file():
        task_dir = raw / task
        ingest(task_dir, cohort_dir, labels=task_dir / "labels.csv", key=SYNTHETIC_KEY, workers=0, progress=False,
               **(ingest_options or {}))
    logger.info("Study cohort %s: %d items (%s).", cohort_dir, len(read_manifest(cohort_dir)),
                json.loads((raw / "summary.json").read_text())["tasks"][task])
    return cohort_dir, raw / task


def study_split(cohort_dir: str | Path, path: str | Path, *, folds: int, seed: int = 0, **options: Any) -> Path:
    """A patient-level split of the study's cohort (kept when already written for the same cohort)."""
    path = Path(path)
    if not path.is_file():
        split_cohort(cohort_dir, path, folds=folds, seed=seed, **options)
    return path

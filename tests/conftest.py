"""Shared fixtures: the synthetic cohort and its ingested tasks, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clinical.cohort.synthetic import generate_cohort
from clinical.ingest import ingest

# No usage telemetry from the servers and clients the tests start (the Makefile sets the same for `make`).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")

#: A fixed pseudonym key for tests, so patient keys are reproducible across fixtures.
TEST_KEY = "test-pseudonym-key"


@pytest.fixture(scope="session")
def small_synthetic_radiographs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The radiographs of the `small` synthetic cohort, seed 0, with the patient effect (source files)."""
    root = tmp_path_factory.mktemp("synthetic-small")
    generate_cohort(root, size="small", seed=0, tasks=("radiographs",))
    return root


@pytest.fixture(scope="session")
def small_radiographs(small_synthetic_radiographs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small cohort's radiographs, ingested: a cohort folder with manifest.parquet."""
    cohort = tmp_path_factory.mktemp("cohort-radiographs")
    task = small_synthetic_radiographs / "radiographs"
    ingest([task], cohort, labels=task / "labels.csv", key=TEST_KEY, workers=0, progress=False)
    return cohort

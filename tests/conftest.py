"""Shared fixtures: the synthetic cohort and its ingested tasks, built once per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from clinical.cohort.synthetic import generate_cohort
from clinical.ingest import ingest

# No usage telemetry from the servers and clients the tests start (the Makefile sets the same for `make`).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
# The pseudonym key and the private path maps of the test cohorts stay out of the user's ~/.config/clinical.
os.environ.setdefault("CLINICAL_CONFIG_DIR", tempfile.mkdtemp(prefix="clinical-test-config-"))

@contextmanager
def mlflow_tracking(root: Path) -> Iterator:
    """A real `mlflow server` on 127.0.0.1 under ``root``, made the tracking URI while it runs."""
    import mlflow

    from clinical.tracking import LocalMlflowServer

    with LocalMlflowServer(root) as running:
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = running.uri
        mlflow.set_tracking_uri(running.uri)
        try:
            yield running
        finally:
            mlflow.set_tracking_uri(previous or "")
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="module")
def module_tmp(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Path]]:
    """``mktemp`` for one test module's shared fixtures, whose folders go when the module's tests are done.

    The study and training fixtures write gigabytes of checkpoints and MLflow artifacts; kept until the session
    ends, as ``tmp_path_factory`` keeps them, every module's together fill a CI machine's disk. A module with a
    failed test keeps its folders, to look into.
    """
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


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

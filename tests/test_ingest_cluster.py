"""Sharded ingest on a real local Ray cluster (a head and a worker node on 127.0.0.1) against a plain ingest."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from clinical.cohort.synthetic import generate_cohort
from clinical.ingest import ingest
from clinical.ingest.shards import SHARD_SIZE

KEY = "test-pseudonym-key"
#: Set on the cluster's workers by the fault-injecting setup hook: the first decode there kills its worker.
MARKER = "CLINICAL_TEST_KILL_MARKER"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head node and one worker node, one CPU each, on 127.0.0.1; stopped after the module.

    Ray rewrites a 127.0.0.1 address to the host's outward address unless told that the cluster is
    loopback only (its setting for single-machine clusters), here and in the processes it starts.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        nodes = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1",
        })
        try:
            nodes.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            nodes.wait_for_nodes()
            yield nodes
        finally:
            if ray.is_initialized():
                ray.shutdown()
            nodes.shutdown()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Radiographs and CT volumes of the tiny synthetic cohort."""
    root = tmp_path_factory.mktemp("synthetic-tiny")
    generate_cohort(root, size="tiny", seed=0, tasks=("radiographs", "volumes"))
    return root


@pytest.fixture(scope="module")
def plain(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same files ingested in one process."""
    cohort = tmp_path_factory.mktemp("plain")
    ingest(tree, cohort, key=KEY, workers=0, progress=False)
    return cohort


def _digest(cohort: Path) -> str:
    return json.loads((cohort / "cohort.json").read_text())["digest"]


def test_sharded_ingest_gives_the_plain_cohort(cluster: Cluster, tree: Path, plain: Path, tmp_path: Path) -> None:
    report = ingest(tree, tmp_path, key=KEY, ray_address=cluster.address, progress=False)
    assert not ray.is_initialized()  # the connection ingest opened is closed again
    assert report.units_run > SHARD_SIZE  # several shards, on both nodes' CPUs
    assert _digest(tmp_path) == _digest(plain)
    ours, theirs = pd.read_parquet(tmp_path / "manifest.parquet"), pd.read_parquet(plain / "manifest.parquet")
    assert ours["item_id"].tolist() == theirs["item_id"].tolist()
    assert report.found == report.ingested + report.rejected + report.skipped


def _kill_first_decode() -> None:
    """Worker setup hook: the first unit decoded on the cluster SIGKILLs its worker (marker file), later ones run."""
    import clinical.ingest.engine as engine

    marker = Path(os.environ[MARKER])
    decode = engine.decode

    def dying_decode(unit, options):
        try:
            marker.open("x").close()
        except FileExistsError:
            return decode(unit, options)
        os.kill(os.getpid(), signal.SIGKILL)

    engine.decode = dying_decode


def test_a_worker_killed_mid_shard_is_retried_without_duplicates(
    cluster: Cluster, tree: Path, plain: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "killed"
    cohort = tmp_path / "cohort"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook travels; this module is not installed
    ray.init(address=cluster.address, log_to_driver=False, runtime_env={
        "worker_process_setup_hook": _kill_first_decode, "env_vars": {MARKER: str(marker)},
    })
    try:
        report = ingest(tree, cohort, key=KEY, ray_address=cluster.address, progress=False)
    finally:
        ray.shutdown()
    assert marker.exists()  # a worker did die mid-shard
    manifest = pd.read_parquet(cohort / "manifest.parquet")
    assert manifest["item_id"].is_unique
    assert report.rejections_by_code.get("worker-died", 0) == 0  # the shard was retried, not rejected
    assert _digest(cohort) == _digest(plain)

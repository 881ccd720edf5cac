"""A real local Ray cluster (a head and a worker node on 127.0.0.1): sharded ingest against a plain ingest, and
cross-validation folds as cluster tasks against the same folds in one process."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from clinical.cohort.synthetic import generate_cohort
from clinical.ingest import ingest
from clinical.ingest.shards import SHARD_SIZE
from clinical.training import TrainConfig
from clinical.workflows import cross_validate, split_cohort

KEY = "test-pseudonym-key"
#: Set on the cluster's workers by the fault-injecting setup hooks: the first decode (or fit) there kills its worker.
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
def tree(module_tmp) -> Path:
    """Radiographs and CT volumes of the tiny synthetic cohort."""
    root = module_tmp("synthetic-tiny")
    generate_cohort(root, size="tiny", seed=0, tasks=("radiographs", "volumes"))
    return root


@pytest.fixture(scope="module")
def plain(tree: Path, module_tmp) -> Path:
    """The same files ingested in one process."""
    cohort = module_tmp("plain")
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
    import clinical.ingest.worker as worker

    marker = Path(os.environ[MARKER])
    decode = worker.decode

    def dying_decode(unit, options):
        try:
            marker.open("x").close()
        except FileExistsError:
            return decode(unit, options)
        os.kill(os.getpid(), signal.SIGKILL)

    worker.decode = dying_decode


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


def _kill_first_fit() -> None:
    """Worker setup hook: the first fold trained on the cluster SIGKILLs its worker (marker file), later ones run."""
    import clinical.workflows.crossval as crossval

    marker = Path(os.environ[MARKER])
    fit = crossval.fit

    def dying_fit(*args, **kwargs):
        try:
            marker.open("x").close()
        except FileExistsError:
            return fit(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    crossval.fit = dying_fit


def test_folds_as_cluster_tasks_give_the_folds_of_one_process_even_when_a_worker_dies(
    cluster: Cluster, tree: Path, tmp_path: Path
) -> None:
    task = tree / "radiographs"
    cohort = tmp_path / "cohort"
    ingest([task], cohort, labels=task / "labels.csv", key=KEY, workers=0, progress=False)
    split_cohort(cohort, tmp_path / "split.parquet", folds=2, seed=0)
    config = TrainConfig.build(model="resnet18", image_size=(32, 32), epochs=1, batch_size=8, seed=0,
                               early_stopping_patience=None)
    common = {"cohort_dir": cohort, "split_path": tmp_path / "split.parquet", "n_boot": 50}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a one-CPU Ray task runs
    try:
        plain = cross_validate(config, out=tmp_path / "plain", **common)
    finally:
        torch.set_num_threads(threads)

    marker = tmp_path / "killed"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address=cluster.address, log_to_driver=False, runtime_env={
        "worker_process_setup_hook": _kill_first_fit, "env_vars": {MARKER: str(marker)},
    })
    try:
        on_cluster = cross_validate(config, out=tmp_path / "cluster", ray_address=cluster.address, **common)
    finally:
        ray.shutdown()
    assert marker.exists()  # one fold's worker did die, and the fold was trained again
    assert [r.fold for r in on_cluster.results] == [r.fold for r in plain.results] == [0, 1]
    assert all(Path(run.out).parent == tmp_path / "cluster" for run in on_cluster.fold_runs)
    ours = on_cluster.pooled.sort_values("item_id", ignore_index=True)
    theirs = plain.pooled.sort_values("item_id", ignore_index=True)
    assert ours["item_id"].tolist() == theirs["item_id"].tolist()
    probabilities = [c for c in ours.columns if c.startswith("prob")]
    assert probabilities
    np.testing.assert_allclose(ours[probabilities].to_numpy(float), theirs[probabilities].to_numpy(float), atol=1e-5)


def test_a_study_that_cannot_cross_validate_on_a_cluster_refuses_one(tmp_path: Path) -> None:
    from clinical.errors import ConfigurationError
    from clinical.workflows.studies import run_study

    with pytest.raises(ConfigurationError, match="cannot run on a cluster"):
        run_study("kimianet", tmp_path, ray_address="127.0.0.1:1")

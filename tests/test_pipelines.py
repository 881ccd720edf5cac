"""End to end: a real `prefect server`, a process work pool and worker, and a real `mlflow server`, on 127.0.0.1.

A deployment of ``cohort_to_champion`` is triggered through the Prefect API,
the worker runs it, and the champion appears in the MLflow registry; a second
run reuses the ingest and split results from the cache.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from clinical.tracking import CHAMPION, LocalMlflowServer, alias_version
from clinical.tracking.server import free_port, wait_until_up

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "clinical-test-pool"


@pytest.fixture(scope="module")
def mlflow_server(module_tmp):
    with LocalMlflowServer(module_tmp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def prefect_env(module_tmp, mlflow_server: LocalMlflowServer):
    """A Prefect server and a process worker; yields the environment the worker runs flows with."""
    home = module_tmp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_TRACKING_URI": mlflow_server.uri,
           "PREFECT_LOGGING_LEVEL": "INFO"}
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=open(home / "server.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    worker = None
    try:
        wait_until_up(f"http://127.0.0.1:{port}/api", timeout=300)
        subprocess.run([str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process"], env=env, check=True,
                       capture_output=True, timeout=120)
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
                                  env=env, cwd=ROOT, stdout=open(home / "worker.log", "wb"),  # noqa: SIM115
                                  stderr=subprocess.STDOUT)
        yield env
    finally:
        for process in (worker, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=60)


def test_a_deployment_run_registers_a_champion_and_a_rerun_hits_the_cache(
    prefect_env: dict, mlflow_server: LocalMlflowServer, small_synthetic_radiographs: Path, tmp_path: Path
):
    task = small_synthetic_radiographs / "radiographs"
    settings = {
        "sources": [str(task)],
        "labels": str(task / "labels.csv"),
        "workdir": str(tmp_path / "work"),
        "ingest_workers": 0,
        "folds": 2,
        "audit_inflation": False,
        "pretrain_epochs": 1,
        "pretrain_batch_size": 32,
        "train": {"model": "resnet18", "image_size": [32, 32], "epochs": 2, "unfreeze_every": 1, "batch_size": 32},
        "experiment": "e2e",
        "model_name": "e2e-radiographs",
        "n_boot": 200,
    }
    with temporary_settings(updates={PREFECT_API_URL: prefect_env["PREFECT_API_URL"]}):
        deployment = flow.from_source(source=str(ROOT), entrypoint="pipelines/flows.py:cohort_to_champion").deploy(
            name="e2e", work_pool_name=POOL, build=False, push=False,
            job_variables={"env": {"MLFLOW_TRACKING_URI": mlflow_server.uri}},
        )
        assert deployment
        first = run_deployment("cohort-to-champion/e2e", parameters={"settings": settings}, timeout=1500)
        assert first.state.is_completed(), first.state
        assert alias_version("e2e-radiographs", CHAMPION, client=MlflowClient(mlflow_server.uri)) == "1"

        second = run_deployment("cohort-to-champion/e2e", parameters={"settings": settings}, timeout=1500)
        assert second.state.is_completed(), second.state
        states = _task_states(second.id)
    assert states["ingest"] == {"Cached"}
    assert states["split"] == {"Cached"}
    assert states["train fold"] == {"Cached"}
    assert alias_version("e2e-radiographs", CHAMPION, client=MlflowClient(mlflow_server.uri)) == "1"


def test_a_study_deployment_writes_its_table_under_one_mlflow_study_run(
    prefect_env: dict, mlflow_server: LocalMlflowServer, tmp_path: Path
):
    out = tmp_path / "bpd"
    with temporary_settings(updates={PREFECT_API_URL: prefect_env["PREFECT_API_URL"]}):
        flow.from_source(source=str(ROOT), entrypoint="pipelines/studies.py:study_flow").deploy(
            name="bpd-test", work_pool_name=POOL, build=False, push=False,
            job_variables={"env": {"MLFLOW_TRACKING_URI": mlflow_server.uri}},
        )
        run = run_deployment("study/bpd-test", timeout=1500, parameters={
            "name": "bpd", "out": str(out), "size": "tiny", "experiment": "studies-e2e"})
        assert run.state.is_completed(), run.state
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("studies-e2e").experiment_id
    runs = client.search_runs([experiment])
    study = [r for r in runs if r.data.tags.get("clinical.study") == "bpd"]
    assert len(study) == 1 and study[0].info.status == "FINISHED"
    study_id = study[0].info.run_id
    arms = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study_id]
    assert sorted(r.info.run_name for r in arms) == sorted(pd.read_csv(out / "table.csv")["arm"])
    folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {a.info.run_id for a in arms}]
    assert len(folds) == 3 * len(arms)  # every arm's three folds nest under that arm
    assert {a.path for a in client.list_artifacts(study_id, "study")} >= {"study/table.md", "study/summary.png"}
    reference = "SSL_in-domain__progressive__CutMix.auroc_pooled"
    assert study[0].data.metrics[reference] == pytest.approx(pd.read_csv(out / "table.csv")["auroc_pooled"][0])


def test_the_mil_flow_scores_every_method_per_slide_on_the_worker_and_logs_the_run(
    prefect_env: dict, mlflow_server: LocalMlflowServer, tmp_path: Path
):
    import dataclasses

    from clinical.cohort import read_manifest
    from clinical.cohort.synthetic.sizes import SIZES
    from clinical.cohort.synthetic.slides import generate_slides
    from clinical.ingest import ingest
    from clinical.splits import split_manifest, write_split
    from clinical.workflows.slides import TILE_AGGREGATIONS

    generate_slides(tmp_path / "raw", dataclasses.replace(SIZES["tiny"], slide_patients_per_site=4), seed=0,
                    patient_effect=False, finding_strength=2.0)
    ingest(tmp_path / "raw" / "slides", tmp_path / "cohort", labels=tmp_path / "raw" / "slides" / "labels.csv",
           key="k", workers=0, progress=False, tile_size=64, max_tiles_per_slide=8)
    write_split(split_manifest(read_manifest(tmp_path / "cohort"), folds=2, seed=0), tmp_path / "split.parquet")
    with temporary_settings(updates={PREFECT_API_URL: prefect_env["PREFECT_API_URL"]}):
        flow.from_source(source=str(ROOT), entrypoint="pipelines/slides.py:mil_flow").deploy(
            name="mil-test", work_pool_name=POOL, build=False, push=False,
            job_variables={"env": {"MLFLOW_TRACKING_URI": mlflow_server.uri}},
        )
        run = run_deployment("slide MIL/mil-test", timeout=1200, parameters={
            "cohort": str(tmp_path / "cohort"), "split": str(tmp_path / "split.parquet"), "out": str(tmp_path / "mil"),
            "folds": [1], "backbone": "resnet18", "image_size": 32, "steps": 30, "n_boot": 50,
            "experiment": "mil-e2e"})
        assert run.state.is_completed(), run.state
        states = _task_states(run.id)
    assert states["slide MIL"] == {"Completed"}
    table = pd.read_csv(tmp_path / "mil" / "fold-1" / "metrics_with_ci.csv")
    aurocs = table[table["metric"] == "auroc"]
    assert set(aurocs["method"]) == {"mil", *(f"tiles-{how}" for how in TILE_AGGREGATIONS)}
    assert ((aurocs["low"] <= aurocs["value"]) & (aurocs["value"] <= aurocs["high"])).all()
    client = MlflowClient(mlflow_server.uri)
    runs = client.search_runs([client.get_experiment_by_name("mil-e2e").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert {f"slide_{m.replace('-', '_')}_auroc" for m in aurocs["method"]} <= set(runs[0].data.metrics)


def _task_states(flow_run_id: UUID) -> dict[str, set[str]]:
    """State names of each task (by task name) in a flow run and its subflow runs."""

    async def read() -> dict[str, set[str]]:
        async with get_client() as client:
            runs = {flow_run_id}
            for _ in range(3):  # subflows are task runs of their parent with a child flow run
                found = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(runs))))
                runs |= {t.state.state_details.child_flow_run_id for t in found} - {None}
            states: dict[str, set[str]] = {}
            for t in await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(runs)))):
                if t.state.state_details.child_flow_run_id is None:  # a subflow's stand-in, not a task
                    states.setdefault(t.name.rsplit("-", 1)[0], set()).add(t.state.name)
            return states

    return asyncio.run(read())



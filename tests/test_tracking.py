"""MLflow tracking against a real `mlflow server` on 127.0.0.1: runs, the pyfunc model, the registry, serving."""

from __future__ import annotations

import base64
import gc
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import mlflow_tracking
from mlflow.tracking import MlflowClient

from clinical.cohort import read_manifest
from clinical.cohort.synthetic.phi import phi_values
from clinical.ingest import source_paths
from clinical.splits import read_split, split_manifest, write_split
from clinical.tracking import (
    CHALLENGER,
    CHAMPION,
    LocalMlflowServer,
    MlflowCallback,
    MlflowTracker,
    TrackingUnavailableError,
    alias_version,
    apply_gate,
    decide_promotion,
    predict_registered,
    register_run_model,
    replay_outbox,
    save_classifier,
)
from clinical.tracking.server import free_port, wait_until_up
from clinical.tracking.versions import load_pyfunc
from clinical.training import BaseCallback, TrainConfig, fit, load_result
from clinical.workflows import train_fold

pytestmark = pytest.mark.servers

CONFIG = dict(model="resnet18", image_size=(48, 48), epochs=3, batch_size=16, unfreeze_every=1, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def server(module_tmp):
    with mlflow_tracking(module_tmp("mlflow-server")) as running:
        yield running


@pytest.fixture(scope="module")
def split_path(small_radiographs: Path, module_tmp) -> Path:
    path = module_tmp("split") / "split.parquet"
    write_split(split_manifest(read_manifest(small_radiographs), folds=3, seed=0), path)
    return path


@pytest.fixture(scope="module")
def fold_run(server, small_radiographs: Path, split_path: Path, module_tmp):
    out = module_tmp("fold0")
    run = train_fold(TrainConfig.build(**CONFIG), cohort_dir=small_radiographs, split_path=split_path, fold=0,
                     out=out, tracker=MlflowTracker("tracking-test"))
    return run


@pytest.fixture(scope="module")
def champion(fold_run) -> str:
    version, alias = register_run_model(fold_run.run_id, "radiograph-test")
    assert alias == CHAMPION
    return version


def test_a_run_logs_recipe_epochs_freezing_digests_plots_and_model(fold_run, split_path: Path):
    client = MlflowClient()
    run = client.get_run(fold_run.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["config.model"] == "resnet18"
    assert run.data.params["config.schedule"] == "progressive"
    history = client.get_metric_history(fold_run.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1, 2]
    groups = [m.value for m in client.get_metric_history(fold_run.run_id, "trainable_groups")]
    assert groups == sorted(groups) and groups[0] == 1 and groups[-1] > 1  # head only, then unfreezing
    assert "best_val_auroc" in run.data.metrics
    _, meta = read_split(split_path)
    assert run.data.tags["clinical.split_digest"] == meta["digest"]
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert inputs["split"] == meta["digest"][:32]
    assert inputs["cohort"] == run.data.tags["clinical.cohort_digest"][:32]
    artifacts = {a.path for a in client.list_artifacts(fold_run.run_id, "plots")}
    assert {"plots/roc.png", "plots/pr.png", "plots/calibration.png", "plots/confusion.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(fold_run.run_id, "model")} >= {"model/MLmodel"}


def test_saving_and_loading_a_model_leave_no_copy_of_it_in_the_temporary_folder(
    champion, fold_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A scheduled job saves or loads a model every run: a copy of the weights left behind each time fills a disk."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    save_classifier(load_result(fold_run.out), tmp_path / "model")
    assert list(scratch.iterdir()) == []
    model = load_pyfunc(f"models:/radiograph-test@{CHAMPION}")
    assert len(list(scratch.iterdir())) == 1  # the model's code is imported from its folder while it lives
    del model
    gc.collect()
    assert list(scratch.iterdir()) == []


def test_a_fresh_process_predicts_from_dicom_bytes_what_training_predicted(
    champion, fold_run, small_radiographs: Path, small_synthetic_radiographs: Path, split_path: Path, tmp_path: Path
):
    in_process = pd.read_parquet(Path(fold_run.out) / "predictions_test.parquet")
    registered = predict_registered(f"models:/radiograph-test@{CHAMPION}", cohort_dir=small_radiographs,
                                    split_path=split_path, fold=0)
    np.testing.assert_allclose(registered["prob_1"].to_numpy(), in_process["prob_1"].to_numpy(), atol=1e-6)

    manifest = read_manifest(small_radiographs).set_index("item_id")
    paths = source_paths(small_radiographs)  # manifest sources are pseudonyms; the private map has the files
    files = [small_synthetic_radiographs / "radiographs" / paths[manifest.loc[i, "source"][0]]
             for i in in_process["item_id"]]
    payload = pd.DataFrame({"file": [base64.b64encode(f.read_bytes()).decode() for f in files]})
    payload.to_parquet(tmp_path / "payload.parquet")
    script = textwrap.dedent(f"""
        import mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/radiograph-test@{CHAMPION}")
        payload = pd.read_parquet({str(tmp_path / "payload.parquet")!r})
        model.predict(payload).to_parquet({str(tmp_path / "out.parquet")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ}, timeout=300)
    fresh = pd.read_parquet(tmp_path / "out.parquet")
    assert list(fresh.columns) == ["negative", "positive"]
    np.testing.assert_allclose(fresh["positive"].to_numpy(), in_process["prob_1"].to_numpy(), atol=1e-5)

    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/radiograph-test@{CHAMPION}",
         "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
        env=_with_venv_on_path(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/invocations"
        wait_until_up(f"http://127.0.0.1:{port}", path="/ping", timeout=300)
        body = {"dataframe_split": {"columns": ["file"], "data": payload.to_numpy().tolist()}}
        status, answer = _post(url, body)
        assert status == 200
        served = pd.DataFrame(answer["predictions"])
        np.testing.assert_allclose(served["positive"].to_numpy(), in_process["prob_1"].to_numpy(), atol=1e-5)
        for bad in (
            {"dataframe_split": {"columns": ["file"], "data": [["not base64!"]]}},
            {"dataframe_split": {"columns": ["file"], "data": [[base64.b64encode(b"plain text").decode()]]}},
            {"dataframe_split": {"columns": ["image"], "data": [["x"]]}},
            {"nonsense": 1},
        ):
            status, answer = _post(url, bad)
            assert 400 <= status < 500, (bad, status, answer)
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_the_gate_keeps_the_champion_unless_the_challenger_is_better(champion, fold_run, server, tmp_path: Path):
    client = MlflowClient()
    assert register_run_model(fold_run.run_id, "radiograph-test") == (champion, CHAMPION)  # idempotent
    copy = client.create_run(client.get_run(fold_run.run_id).info.experiment_id).info.run_id
    client.log_artifacts(copy, str(Path(fold_run.out) / "model"), artifact_path="model")
    version, alias = register_run_model(copy, "radiograph-test")
    assert alias == CHALLENGER and alias_version("radiograph-test", CHAMPION) == champion
    predictions = pd.read_parquet(Path(fold_run.out) / "predictions_test.parquet")
    classes = ["negative", "positive"]
    same = decide_promotion(predictions, predictions, classes, level="item")
    assert not same.promote
    assert apply_gate("radiograph-test", version, same) == CHALLENGER
    assert alias_version("radiograph-test", CHAMPION) == champion
    assert client.get_model_version("radiograph-test", version).tags["gate.promoted"] == "false"
    # a tie passes only a non-inferiority margin: the whole interval of the difference must clear it
    lenient = decide_promotion(predictions, predictions, classes, level="item", margin=-0.01)
    assert lenient.promote
    assert apply_gate("radiograph-test", version, lenient) == CHAMPION
    assert alias_version("radiograph-test", CHAMPION) == version
    assert alias_version("radiograph-test", CHALLENGER) is None


def test_no_phi_in_the_mlflow_store(champion, server, small_synthetic_radiographs: Path):
    values = {v for v in phi_values(small_synthetic_radiographs) if len(v) >= 4}
    assert values
    store = server.root
    hits = []
    for path in store.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [(path.name, v) for v in values if v.encode() in data]
    assert not hits


def test_the_run_refuses_to_start_when_the_server_is_down(small_radiographs: Path, split_path: Path, tmp_path: Path):
    split, _ = read_split(split_path)
    callback = MlflowCallback("x", tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TrackingUnavailableError, match="does not answer"):
        fit(TrainConfig.build(**CONFIG), manifest=read_manifest(small_radiographs), cohort_dir=small_radiographs,
            split=split, fold=0, out=tmp_path / "run", callbacks=(callback,))
    assert not (tmp_path / "run" / "checkpoints").exists()


class _Outage(BaseCallback):
    """Stops the MLflow server after one epoch and brings it back after another (or never)."""

    def __init__(self, server: LocalMlflowServer, *, back_after: int | None) -> None:
        self.server, self.back_after = server, back_after

    def on_epoch_end(self, epoch: int, metrics: dict, state: dict) -> None:
        if epoch == 0:
            self.server.stop()
        if epoch == self.back_after:
            self.server.start()


@pytest.mark.parametrize("back_after", [1, None])
def test_a_server_outage_mid_training_loses_nothing(
    small_radiographs: Path, split_path: Path, tmp_path: Path, back_after: int | None
):
    with LocalMlflowServer(tmp_path / "flaky") as flaky:
        split, _ = read_split(split_path)
        callback = MlflowCallback("outage", tracking_uri=flaky.uri, flush_timeout=0.0)
        result = fit(TrainConfig.build(**CONFIG), manifest=read_manifest(small_radiographs),
                     cohort_dir=small_radiographs, split=split, fold=0, out=tmp_path / "run",
                     callbacks=(callback, _Outage(flaky, back_after=back_after)))
        assert result.epochs_run == CONFIG["epochs"]  # training finished although logging failed
        spool = tmp_path / "run" / "mlflow_outbox.json"
        if back_after is None:
            assert spool.is_file() and json.loads(spool.read_text())["pending"]
            flaky.start()
            assert replay_outbox(spool, client=MlflowClient(flaky.uri)) > 0
        assert not spool.exists()
        client = MlflowClient(flaky.uri)
        assert [m.step for m in client.get_metric_history(callback.run_id, "train_loss")] == [0, 1, 2]
        assert client.get_run(callback.run_id).info.status == "FINISHED"


def _with_venv_on_path() -> dict[str, str]:
    """`mlflow models serve` starts uvicorn by name, so the venv's bin must be on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


"""The use cases: one cross-validation whether tracked or not, and the CLI's recipe flags made from the config."""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from conftest import mlflow_tracking
from evaluation_helpers import clustered_binary
from mlflow.tracking import MlflowClient
from test_training_helpers import TINY

from clinical.cli import build_parser, main
from clinical.cli.recipe import add_config_arguments
from clinical.cli.train import config_from_args
from clinical.cohort import read_manifest
from clinical.ingest import source_paths
from clinical.splits import gate_patients, read_split
from clinical.tracking import CHAMPION, MlflowTracker, decide_promotion
from clinical.tracking.server import free_port, wait_until_up
from clinical.training import TrainConfig, load_result
from clinical.workflows import cross_validate, read_cross_validation, register_model, split_cohort

RECIPE = dict(model=TINY, image_size=(32, 32), epochs=2, unfreeze_every=1, batch_size=16, lr=3e-3, seed=0,
              early_stopping_patience=None)


@pytest.fixture(scope="module")
def server(module_tmp):
    with mlflow_tracking(module_tmp("mlflow-workflows")) as running:
        yield running


@pytest.fixture(scope="module")
def split_path(small_radiographs: Path, module_tmp) -> Path:
    path = module_tmp("split") / "split.parquet"
    split_cohort(small_radiographs, path, folds=3, seed=0)
    return path


@pytest.mark.servers
def test_tracked_and_untracked_cross_validation_write_the_same_pooled_table(
    server, small_radiographs: Path, split_path: Path, tmp_path: Path
):
    config = TrainConfig.build(**RECIPE)
    folds = [0, 1]
    plain = cross_validate(config, cohort_dir=small_radiographs, split_path=split_path, out=tmp_path / "plain",
                           folds=folds, n_boot=200)
    tracked = cross_validate(config, cohort_dir=small_radiographs, split_path=split_path, out=tmp_path / "tracked",
                             folds=folds, n_boot=200, tracker=MlflowTracker("workflows-test"))

    assert plain.parent_run_id is None and all(run.run_id is None for run in plain.fold_runs)
    pdt.assert_frame_equal(plain.table, tracked.table)
    pdt.assert_frame_equal(plain.pooled, tracked.pooled)
    assert plain.summary == tracked.summary
    # Every patient of the two folds' test parts is predicted once, by the model that did not train on them.
    assert plain.pooled.groupby("patient_key")["item_id"].count().min() >= 1
    assert not plain.pooled.duplicated("item_id").any()
    for out in (tmp_path / "plain", tmp_path / "tracked"):
        names = {p.relative_to(out / "cv").as_posix() for p in (out / "cv").rglob("*") if p.is_file()}
        assert {"metrics_with_ci.csv", "predictions_pooled_test.parquet", "cv_summary.json", "cv_summary.txt",
                "cross_validation.json", "plots/roc.png", "plots/calibration.png"} <= names

    client = MlflowClient()
    parent = client.get_run(tracked.parent_run_id)
    assert parent.info.status == "FINISHED"
    auroc = plain.table.set_index("metric").loc["auroc", "value"]
    assert parent.data.metrics["pooled_auroc"] == pytest.approx(auroc)
    assert parent.data.metrics["cv_auroc_mean"] == pytest.approx(plain.summary["auroc"]["mean"])
    logged = {a.path for a in client.list_artifacts(tracked.parent_run_id, "cv")}
    assert "cv/metrics_with_ci.csv" in logged
    assert {a.path for a in client.list_artifacts(tracked.parent_run_id, "plots")} >= {"plots/roc.png"}
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{tracked.parent_run_id}'")
    assert sorted(run.info.run_id for run in children) == sorted(run.run_id for run in tracked.fold_runs)

    again = read_cross_validation(tmp_path / "tracked")  # a later stage reads files, not objects
    pdt.assert_frame_equal(again.table, tracked.table)
    assert again.fold_runs == tracked.fold_runs


def test_every_train_config_field_has_a_flag_of_the_same_name():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig)
    flags = {action.dest: action.option_strings for action in parser._actions if action.dest != "help"}
    assert set(flags) == set(TrainConfig.model_fields)
    for name, options in flags.items():
        assert options == [f"--{name.replace('_', '-')}"] or f"--{name.replace('_', '-')}" in options


def test_train_flags_build_the_recipe_they_name(tmp_path: Path):
    args = build_parser().parse_args([
        "train", "cohort", "--split", "s.parquet", "--out", str(tmp_path),
        "--image-size", "32", "--cutmix-alpha", "1.0", "--early-stopping-patience", "none",
        "--group-granularity", "block", "--max-trainable-groups", "3", "--monitor-level", "study",
        "--num-workers", "2", "--channels-last", "--unfreeze-patience", "2", "--amp", "bf16",
    ])
    config = config_from_args(args)
    assert config == TrainConfig.build(image_size=(32,), cutmix_alpha=1.0, early_stopping_patience=None,
                                       group_granularity="block", max_trainable_groups=3, monitor_level="study",
                                       num_workers=2, channels_last=True, unfreeze_patience=2, amp="bf16")
    assert config.image_size == (32, 32)  # one value means a square, normalised once in the config
    assert config_from_args(build_parser().parse_args(
        ["train", "c", "--split", "s", "--out", "o"])) == TrainConfig.build()  # no flag: the config's defaults

    saved = tmp_path / "config.json"
    config.save(saved)
    override = config_from_args(build_parser().parse_args(["train", "c", "--split", "s", "--out", "o", "--config",
                                                           str(saved), "--unfreeze-every", "4", "--no-channels-last"]))
    assert override.unfreeze_every == 4 and override.unfreeze_patience is None and not override.channels_last
    assert override.group_granularity == "block"  # the rest comes from --config


@pytest.mark.servers
@pytest.mark.slow
def test_a_model_trained_with_one_image_size_value_registers_loads_and_serves(
    server, small_radiographs: Path, small_synthetic_radiographs: Path, split_path: Path, tmp_path: Path
):
    name = "image-size-test"
    code = main(["train", str(small_radiographs), "--split", str(split_path), "--out", str(tmp_path / "runs"),
                 "--fold", "0", "--model", "resnet18", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
                 "--experiment", "workflows-test", "--register", name])
    assert code == 0
    manifest = read_manifest(small_radiographs)
    paths = source_paths(small_radiographs)  # manifest sources are pseudonyms; the private map has the files
    files = [small_synthetic_radiographs / "radiographs" / paths[s[0]] for s in manifest["source"].head(3)]
    payload = pd.DataFrame({"file": [base64.b64encode(f.read_bytes()).decode() for f in files]})
    payload.to_parquet(tmp_path / "payload.parquet")
    script = textwrap.dedent(f"""
        import mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/{name}@{CHAMPION}")
        payload = pd.read_parquet({str(tmp_path / "payload.parquet")!r})
        model.predict(payload).to_parquet({str(tmp_path / "out.parquet")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ}, timeout=300)
    fresh = pd.read_parquet(tmp_path / "out.parquet")
    assert fresh.shape == (3, 2)
    np.testing.assert_allclose(fresh.sum(axis=1).to_numpy(), 1.0, atol=1e-5)

    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@{CHAMPION}", "--env-manager",
         "local", "--host", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", path="/ping", timeout=300)
        body = {"dataframe_split": {"columns": ["file"], "data": payload.to_numpy().tolist()}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200
            served = pd.DataFrame(json.loads(response.read())["predictions"])
        np.testing.assert_allclose(served.to_numpy(), fresh.to_numpy(), atol=1e-5)
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_the_gate_promotes_only_when_the_whole_interval_clears_the_margin_and_calibration_holds():
    rng = np.random.default_rng(3)
    champion = clustered_binary(rng, n_patients=120, shift=1.0)
    classes = ["negative", "positive"]
    same = decide_promotion(champion, champion, classes)
    assert not same.promote and "lower bound" in same.reason  # a tie is not an improvement (it was at margin 0)
    better = champion.copy()
    truth = better["label"].to_numpy() == 1
    better["prob_1"] = np.where(truth, 0.5 + 0.5 * better["prob_1"], 0.5 * better["prob_1"])  # same calibration sense
    better["prob_0"] = 1 - better["prob_1"]
    decision = decide_promotion(champion, better, classes, calibration_tolerance=None)
    assert decision.comparison.low > 0 and decision.promote
    assert "on 120 held-out patients" in decision.reason
    # Calibration: the same ranking (a monotone transform of a calibrated model) but far too sure of itself.
    p = rng.uniform(0.05, 0.95, 400)
    calibrated = pd.DataFrame({"item_id": [f"i{k}" for k in range(400)], "patient_key": [f"p{k}" for k in range(400)],
                               "site": "A", "label": (rng.random(400) < p).astype(int), "prob_1": p})
    calibrated["prob_0"] = 1 - p
    overconfident = calibrated.assign(prob_1=1 / (1 + np.exp(-8 * np.log(p / (1 - p)))))
    overconfident["prob_0"] = 1 - overconfident["prob_1"]
    assert decide_promotion(calibrated, overconfident, classes, margin=-0.05, calibration_tolerance=None).promote
    worse = decide_promotion(calibrated, overconfident, classes, margin=-0.05, calibration_tolerance=0.02)
    assert not worse.promote and "beyond tolerance" in worse.reason
    assert worse.calibration["challenger_ece"] > worse.calibration["champion_ece"] + 0.02


@pytest.mark.servers
def test_the_registered_model_is_a_refit_and_the_gate_scores_only_locked_away_patients(
    server, small_radiographs: Path, tmp_path: Path
):
    split_path, other_split = tmp_path / "gated.parquet", tmp_path / "other-gate.parquet"
    split_cohort(small_radiographs, split_path, folds=3, seed=0, gate_size=0.2)
    split_cohort(small_radiographs, other_split, folds=3, seed=5, gate_size=0.2)
    split, _ = read_split(split_path)
    gate = set(gate_patients(split))
    assert len(gate) >= 10
    assert not gate & set(split.loc[split["role"].isin(["train", "val", "test"]), "patient_key"])

    def tracked(recipe: dict, path: Path, out: str):
        return cross_validate(TrainConfig.build(**recipe), cohort_dir=small_radiographs, split_path=path,
                              out=tmp_path / out, folds=[0, 1], n_boot=100, final="refit",
                              tracker=MlflowTracker("workflows-gate"))

    first = tracked(RECIPE, split_path, "first")
    refit = load_result(first.final.out)
    manifest = read_manifest(small_radiographs)
    development = manifest[manifest["label"].notna() & ~manifest["patient_key"].isin(gate)]
    assert first.final_how == "refit" and refit.config.select == "last" and refit.test_predictions is None
    assert refit.epochs_run == refit.config.epochs == round(np.median([r.best_epoch + 1 for r in first.results]))
    assert refit.best_epoch == refit.epochs_run - 1  # the last epoch is kept
    client = MlflowClient()
    assert client.get_run(first.final.run_id).data.params["data.n_train"] == str(len(development))

    name = "gate-test"
    champion = register_model(first, name, cohort_dir=small_radiographs, split_path=split_path)
    assert champion.alias == CHAMPION and champion.final_model == "refit" and champion.run_id == first.final.run_id
    tags = client.get_model_version(name, champion.version).tags
    assert tags["clinical.final_model"] == "refit" and tags["pooled_auroc"].startswith("0.")

    second = tracked({**RECIPE, "seed": 1}, split_path, "second")
    challenger = register_model(second, name, cohort_dir=small_radiographs, split_path=split_path)
    assert challenger.decision is not None and challenger.decision["n_patients"] == len(gate)
    assert f"on {len(gate)} gate patients" in challenger.decision["reason"]

    elsewhere = tracked({**RECIPE, "seed": 2}, other_split, "other")
    refused = register_model(elsewhere, name, cohort_dir=small_radiographs, split_path=other_split)
    assert refused.alias == "challenger" and "not trained with this split's gate set" in refused.decision["reason"]

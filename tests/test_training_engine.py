"""The engine end to end on a toy cohort: learning, callbacks, checkpoints, exact resume, refusals, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_data_helpers import write_toy_cohort
from test_training_helpers import TINY, Crash, CrashAfter

from clinical.cli import main
from clinical.errors import ConfigurationError, LeakageError
from clinical.evaluation import validate_predictions
from clinical.models import create_model
from clinical.splits import split_manifest, write_split
from clinical.training import BaseCallback, Callback, TrainConfig, fit, load_checkpoint


@pytest.fixture(scope="module")
def toy(module_tmp) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    root = module_tmp("toy")
    manifest = write_toy_cohort(root / "cohort", patients=24)
    return root / "cohort", manifest, split_manifest(manifest, folds=3, seed=0)


def _config(**overrides) -> TrainConfig:
    values = {"model": TINY, "image_size": (16, 16), "epochs": 4, "unfreeze_every": 1, "batch_size": 8, "lr": 1e-2,
              "warmup_epochs": 0.5, "early_stopping_patience": None} | overrides
    return TrainConfig.build(**values)


class Recorder(BaseCallback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_fit_start(self, config, info):
        self.events.append(("start", info))

    def on_epoch_end(self, epoch, metrics, state):
        self.events.append(("epoch", epoch, metrics, state))

    def on_checkpoint(self, path, best):
        self.events.append(("checkpoint", Path(path).name, best))

    def on_fit_end(self, result):
        self.events.append(("end", result))


def test_progressive_fit_learns_reports_and_writes_its_run(toy, tmp_path):
    cohort, manifest, split = toy
    recorder = Recorder()
    assert isinstance(recorder, Callback)
    config = _config(epochs=6, class_balance="weighted-loss", label_smoothing=0.1, cutmix_alpha=1.0)
    result = fit(config, manifest=manifest, cohort_dir=cohort, split=split, fold=0, out=tmp_path, callbacks=[recorder])

    assert result.test_metrics["auroc"] > 0.75 and result.best_score > 0.75
    kinds = [e[0] for e in recorder.events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 6
    info = recorder.events[0][1]
    assert info["groups"] == ["stem", "stage1", "stage2", "head"] and info["n_train"] > 0 and info["n_val"] > 0
    epochs = [e for e in recorder.events if e[0] == "epoch"]
    assert [e[3]["trainable_groups"] for e in epochs[:4]] == [
        ["head"], ["head", "stage2"], ["head", "stage2", "stage1"], ["head", "stage2", "stage1", "stem"]]
    assert epochs[0][3]["frozen_groups"] == ["stem", "stage1", "stage2"]
    assert epochs[2][3]["group_lrs"] == pytest.approx({"head": 1e-2, "stage2": 5e-3, "stage1": 2.5e-3})
    assert set(epochs[2][2]) >= {"train_loss", "val_loss", "val_auroc", "lr/head", "lr/stage2", "lr/stage1"}
    assert ("checkpoint", "last.pt", False) in recorder.events and ("checkpoint", "best.pt", True) in recorder.events

    for name in ("config.json", "result.json", "predictions_val.parquet", "predictions_test.parquet"):
        assert (tmp_path / name).is_file()
    assert TrainConfig.build(**json.loads((tmp_path / "config.json").read_text())) == config
    best = load_checkpoint(result.best_checkpoint)
    assert best["epoch"] == result.best_epoch and best["classes"] == ["negative", "positive"]
    validate_predictions(result.val_predictions, result.classes)
    assert set(result.test_predictions["item_id"]) == set(split.query("fold == 0 and role == 'test'")["item_id"])


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(toy, tmp_path):
    cohort, manifest, split = toy
    config = _config(cutmix_alpha=1.0, mixup_alpha=0.4, mix_prob=0.8)
    whole = fit(config, manifest=manifest, cohort_dir=cohort, split=split, fold=1, out=tmp_path / "whole")
    with pytest.raises(Crash):
        fit(config, manifest=manifest, cohort_dir=cohort, split=split, fold=1, out=tmp_path / "cut",
            callbacks=[CrashAfter(1)])
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = fit(config, manifest=manifest, cohort_dir=cohort, split=split, fold=1, out=tmp_path / "cut",
                  resume=tmp_path / "cut" / "checkpoints" / "last.pt")

    a = load_checkpoint(whole.last_checkpoint)
    b = load_checkpoint(resumed.last_checkpoint)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["train_loss"] for h in whole.history] == [h["train_loss"] for h in resumed.history]
    assert resumed.best_epoch == whole.best_epoch
    pd.testing.assert_frame_equal(whole.test_predictions, resumed.test_predictions)

    with pytest.raises(ConfigurationError, match="another config"):
        fit(_config(lr=0.5), manifest=manifest, cohort_dir=cohort, split=split, fold=1, out=tmp_path / "cut",
            resume=tmp_path / "cut" / "checkpoints" / "last.pt")


def test_a_linear_probe_leaves_the_backbone_and_its_statistics_untouched(toy, tmp_path):
    cohort, manifest, split = toy
    config = _config(schedule="linear-probe", epochs=2)
    result = fit(config, manifest=manifest, cohort_dir=cohort, split=split, fold=2, out=tmp_path)
    torch.manual_seed(config.seed)
    initial = create_model(TINY, spatial_dims=2, in_channels=1, num_classes=2).state_dict()
    trained = load_checkpoint(result.last_checkpoint)["model"]
    backbone = [k for k in initial if k.startswith("net.")]
    assert any("running_mean" in k for k in backbone)
    assert all(torch.equal(initial[k], trained[k]) for k in backbone)
    assert not torch.equal(initial["head.weight"], trained["head.weight"])


def test_leaky_splits_and_empty_parts_are_refused(toy, tmp_path):
    cohort, manifest, split = toy
    leaky = split.copy()
    first = leaky[(leaky["fold"] == 0) & (leaky["role"] == "train")].index[0]
    leaky.loc[first, "role"] = "val"  # one item of a training patient moves to validation
    with pytest.raises(LeakageError):
        fit(_config(), manifest=manifest, cohort_dir=cohort, split=leaky, fold=0, out=tmp_path)
    no_val = split.assign(role=split["role"].replace({"val": "train"}))
    with pytest.raises(ConfigurationError, match="val part"):
        fit(_config(), manifest=manifest, cohort_dir=cohort, split=no_val, fold=0, out=tmp_path)
    with pytest.raises(ConfigurationError, match="fp16"):
        fit(_config(amp="fp16", device="auto"), manifest=manifest, cohort_dir=cohort, split=split, fold=0,
            out=tmp_path)


def test_a_one_value_image_size_is_one_value_per_axis_from_the_config_on(tmp_path):
    """``--image-size 224`` becomes (224, 224) in the config, so every reader (presets, serving) sees a full size."""
    assert _config(image_size=(16,)).image_size == (16, 16)
    assert TrainConfig.build(kind="volume", image_size=[8]).image_size == (8, 8, 8)
    _config(image_size=(16,)).save(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["image_size"] == [16, 16]
    with pytest.raises(ConfigurationError, match=r"image_size.*2D items"):
        _config(image_size=(16, 16, 16))
    with pytest.raises(ConfigurationError, match=r"image_size.*positive"):
        _config(image_size=(0,))


def test_the_train_command_cross_validates_and_trains_one_fold(toy, tmp_path, capsys):
    cohort, _, split = toy
    write_split(split, tmp_path / "split.parquet")
    common = ["train", str(cohort), "--split", str(tmp_path / "split.parquet"), "--model", TINY,
              "--image-size", "16", "16", "--batch-size", "8", "--schedule", "full"]
    assert main([*common, "--epochs", "2", "--class-balance", "sampler", "--out", str(tmp_path / "cv")]) == 0
    summary = json.loads((tmp_path / "cv" / "cv" / "cv_summary.json").read_text())
    assert summary["auroc"]["n"] == 3 and 0.0 <= summary["auroc"]["mean"] <= 1.0
    assert sorted(p.name for p in (tmp_path / "cv").glob("fold-*")) == ["fold-0", "fold-1", "fold-2"]
    assert "mean ± SD over folds" in capsys.readouterr().out

    assert main([*common, "--epochs", "1", "--fold", "2", "--out", str(tmp_path / "one")]) == 0
    assert json.loads((tmp_path / "one" / "fold-2" / "result.json").read_text())["fold"] == 2
    assert main([*common, "--epochs", "0", "--out", str(tmp_path / "bad")]) == 2

"""The engine's accelerator paths: AMP with exact resume, channels-last and compile, the device-resident cache.

The tests marked ``cuda`` need a CUDA device and are skipped without one (the one legitimate skip: CI has
no GPU; ``benchmarks/gpu/run.sh`` runs them on a GPU machine). The device-resident cache also runs on the
CPU (its thread loader and ``ToDeviced`` with the CPU as device), where it must give the plain loader's batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import ThreadDataLoader
from test_data_helpers import write_toy_cohort
from test_training_helpers import TINY, Crash, CrashAfter

from clinical.data import ManifestDataset, make_loader, preset, seed_epoch
from clinical.errors import ConfigurationError
from clinical.models import create_model
from clinical.splits import split_manifest
from clinical.training import TrainConfig, fit, load_checkpoint, predict

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def toy(module_tmp) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    root = module_tmp("toy-cuda")
    manifest = write_toy_cohort(root / "cohort", patients=24)
    return root / "cohort", manifest, split_manifest(manifest, folds=3, seed=0)


@pytest.fixture
def deterministic():
    """cuDNN's deterministic kernels, so two runs of the same steps give the same bits."""
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def _config(**overrides) -> TrainConfig:
    values = {"model": TINY, "image_size": (16, 16), "epochs": 4, "unfreeze_every": 1, "batch_size": 8, "lr": 1e-2,
              "warmup_epochs": 0.5, "early_stopping_patience": None} | overrides
    return TrainConfig.build(**values)


def _fit(config: TrainConfig, toy, out: Path, **kwargs):
    cohort, manifest, split = toy
    return fit(config, manifest=manifest, cohort_dir=cohort, split=split, fold=0, out=out, **kwargs)


def test_the_device_cache_trains_reproducibly_and_as_well_on_the_cpu(toy, tmp_path):
    # Not bit-equal to the plain loader inside fit: the progress bar advances a plain DataLoader's generator
    # once (its iterator is built eagerly), the thread loader's lazily, so the two draw other seeded orders.
    plain = _fit(_config(epochs=6), toy, tmp_path / "plain")
    runs = [_fit(_config(epochs=6, cache_on_device=True), toy, tmp_path / f"device{k}") for k in range(2)]
    pd.testing.assert_frame_equal(runs[0].test_predictions, runs[1].test_predictions)
    assert runs[0].test_metrics["auroc"] > 0.75 and plain.test_metrics["auroc"] > 0.75


def test_the_device_cache_gives_the_plain_loaders_batches(toy):
    cohort, manifest, _ = toy
    batches = []
    for device in (None, "cpu"):
        dataset = ManifestDataset(manifest, cohort, transform=preset("image", train=True, size=16, device=device))
        loader = make_loader(dataset, batch_size=8, train=True, seed=3)
        seed_epoch(loader, seed=3, epoch=1)
        batches.append([(b["item_id"], b["image"]) for b in loader])
    for (ids_a, images_a), (ids_b, images_b) in zip(*batches, strict=True):
        assert ids_a == ids_b and torch.equal(images_a, images_b)


def test_the_device_cache_is_filled_once_and_batched_by_a_thread(toy, monkeypatch):
    cohort, manifest, _ = toy
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dataset = ManifestDataset(manifest, cohort, transform=preset("image", train=True, size=16, device=device),
                              cache_bytes=1 << 26)
    reads = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))  # counts real reads
    dataset.preload()
    loader = make_loader(dataset, batch_size=8, train=True)
    assert dataset.on_device and isinstance(loader, ThreadDataLoader)
    for _ in range(2):
        batches = list(loader)
    assert len(reads) == len(dataset)  # the preload's, none in either epoch
    assert batches[0]["image"].device.type == device
    with pytest.raises(ConfigurationError, match="num_workers=0"):
        make_loader(dataset, batch_size=8, train=True, num_workers=2)
    with pytest.raises(ConfigurationError, match="cache_on_device"):
        _config(cache_on_device=True, num_workers=2)


@cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda_learns_and_resumes_exactly(toy, tmp_path, amp, deterministic):
    config = _config(device="cuda", amp=amp, cutmix_alpha=1.0, epochs=6)
    whole = _fit(config, toy, tmp_path / "whole")
    assert whole.test_metrics["auroc"] > 0.75  # as the CPU engine test asks of the same cohort
    with pytest.raises(Crash):
        _fit(config, toy, tmp_path / "cut", callbacks=[CrashAfter(2)])
    resumed = _fit(config, toy, tmp_path / "cut", resume=tmp_path / "cut" / "checkpoints" / "last.pt")
    a, b = load_checkpoint(whole.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["train_loss"] for h in whole.history] == [h["train_loss"] for h in resumed.history]
    if amp == "fp16":
        assert a["step"]["scaler"]["scale"] == b["step"]["scaler"]["scale"]


@cuda
def test_channels_last_and_compile_predict_as_eager(toy):
    cohort, manifest, _ = toy
    torch.manual_seed(0)
    model = create_model("resnet18", spatial_dims=2, in_channels=1, num_classes=2).cuda()
    dataset = ManifestDataset(manifest, cohort, transform=preset("image", train=False, size=32))
    eager = predict(model, dataset, device="cuda")
    probs = [c for c in eager if c.startswith("prob_")]
    channels_last = predict(model.to(memory_format=torch.channels_last), dataset, device="cuda", channels_last=True)
    compiled = predict(torch.compile(model), dataset, device="cuda", channels_last=True)
    for other in (channels_last, compiled):
        np.testing.assert_allclose(other[probs].to_numpy(), eager[probs].to_numpy(), atol=1e-4)


@cuda
def test_a_fit_with_channels_last_compile_and_the_device_cache_learns(toy, tmp_path):
    config = _config(model="resnet18", image_size=(32, 32), device="cuda", amp="bf16", channels_last=True,
                     compile=True, cache_on_device=True, epochs=6)
    result = _fit(config, toy, tmp_path)
    assert result.test_metrics["auroc"] > 0.75

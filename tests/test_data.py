"""clinical.data: the manifest dataset, presets, caching and reproducible loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_data_helpers import write_toy_cohort

from clinical.data import (
    UNLABELLED,
    ManifestDataset,
    balanced_weights,
    class_names,
    make_loader,
    preset,
    seed_epoch,
    split_deterministic,
)
from clinical.errors import ConfigurationError, ManifestError


@pytest.fixture(scope="module")
def cohort(module_tmp) -> tuple[Path, pd.DataFrame]:
    root = module_tmp("cohort")
    return root, write_toy_cohort(root, patients=8)


def test_items_carry_image_label_and_keys(cohort):
    root, manifest = cohort
    dataset = ManifestDataset(manifest, root, transform=preset("image", train=False, size=16))
    item = dataset[0]
    assert dataset.classes == ["negative", "positive"]
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float32
    assert type(item["image"]) is torch.Tensor  # MONAI metadata dropped
    row = manifest.set_index("item_id").loc[item["item_id"]]
    assert item["label"] == dataset.classes.index(row["label"])
    assert item["patient_key"] == row["patient_key"] and item["site"] == row["site"]
    assert abs(float(item["image"].mean())) < 1e-4  # z-scored


def test_items_subset_keeps_order_and_unlabelled_is_minus_one(cohort):
    root, manifest = cohort
    manifest = manifest.copy()
    manifest.loc[0, "label"] = pd.NA
    wanted = list(manifest["item_id"][[3, 0, 5]])
    dataset = ManifestDataset(manifest, root, items=wanted)
    assert dataset.item_ids == wanted
    assert dataset.labels[1] == UNLABELLED
    assert list(dataset.frame().columns) == ["item_id", "patient_key", "study_key", "series_key", "site", "label"]


def test_bad_inputs_raise_domain_errors(cohort, tmp_path):
    root, manifest = cohort
    with pytest.raises(ManifestError, match="not in the manifest"):
        ManifestDataset(manifest, root, items=["nope"])
    with pytest.raises(ManifestError, match="not among the classes"):
        ManifestDataset(manifest, root, classes=["negative"])
    mixed = manifest.copy()
    mixed.loc[0, "kind"] = "tile"
    with pytest.raises(ManifestError, match="mix kinds"):
        ManifestDataset(mixed, root)
    with pytest.raises(ManifestError, match="missing under the cohort folder"):
        ManifestDataset(manifest, tmp_path)[0]
    with pytest.raises(ManifestError, match="no labelled rows"):
        class_names(manifest.assign(label=pd.NA))
    with pytest.raises(ConfigurationError, match="Unknown item kind"):
        preset("xray", train=True)
    with pytest.raises(ConfigurationError, match="3D items"):
        preset("volume", train=False, size=(8, 8))


@pytest.mark.parametrize(("kind", "shape", "size"), [
    ("image", (1, 20, 24), 16), ("tile", (3, 20, 20), 16), ("photo", (3, 30, 20), 16), ("volume", (1, 10, 12, 14), 8),
])
def test_presets_give_the_target_size_and_only_train_is_random(kind, shape, size):
    array = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    train, evaluation = preset(kind, train=True, size=size), preset(kind, train=False, size=size)
    dims = len(shape) - 1
    out = evaluation({"image": array})["image"]
    assert out.shape == (shape[0], *([size] * dims))
    assert torch.equal(out, evaluation({"image": array})["image"])
    train.set_random_state(0)
    draws = [train({"image": array})["image"] for _ in range(4)]
    assert all(d.shape == out.shape for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_ingest_intensity_keeps_the_cohort_scale_where_the_z_score_makes_two_uptakes_alike():
    # two PET slices as ingest caches them (SUVbw / 20 × 65535): the same lesion shape at SUV 8 and at SUV 3
    shape = np.zeros((1, 16, 16), np.float32)
    shape[0, 6:10, 6:10] = 1.0
    hot, faint = (np.float32(suv / 20 * 65535) * shape for suv in (8.0, 3.0))
    z_score, fixed = preset("image", train=False, size=16), preset("image", train=False, size=16, intensity="ingest")
    assert torch.allclose(z_score({"image": hot.copy()})["image"], z_score({"image": faint.copy()})["image"],
                          atol=1e-5)
    assert fixed({"image": hot.copy()})["image"].max().item() == pytest.approx(0.4, abs=1e-4)
    assert fixed({"image": faint.copy()})["image"].max().item() == pytest.approx(0.15, abs=1e-4)
    train = preset("image", train=True, size=16, intensity="ingest")
    train.set_random_state(0)
    draws = torch.stack([train({"image": hot.copy()})["image"].max() for _ in range(50)])
    assert (draws - 0.4).abs().max() < 0.1  # the jitter is calibration-sized: SUV 8 never reads as SUV 3
    with pytest.raises(ConfigurationError, match="intensity"):
        preset("tile", train=False, size=16, intensity="ingest")
    with pytest.raises(ConfigurationError, match="intensity"):
        preset("image", train=False, size=16, intensity="raw")


def test_cache_rereads_nothing_after_the_first_epoch(cohort, monkeypatch):
    root, manifest = cohort
    dataset = ManifestDataset(manifest, root, transform=preset("image", train=True, size=16), cache_bytes=1 << 20)
    head, tail = split_deterministic(dataset.transform)
    assert head is not None and tail is not None
    dataset.preload()
    calls = []
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(a))
    for i in range(len(dataset)):
        dataset[i]
    assert calls == []


def test_cache_cap_is_respected(cohort, caplog):
    root, manifest = cohort
    one_item = 16 * 16 * 4
    dataset = ManifestDataset(manifest, root, transform=preset("image", train=False, size=16), cache_bytes=3 * one_item)
    dataset.preload()
    assert len(dataset._cache) == 3 and dataset._cache.used_bytes <= 3 * one_item
    assert "cache is full" in caplog.text


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_epoch_depends_only_on_seed_and_epoch(cohort, num_workers):
    root, manifest = cohort

    def epoch_batches(epoch: int) -> list[torch.Tensor]:
        dataset = ManifestDataset(manifest, root, transform=preset("image", train=True, size=16))
        loader = make_loader(dataset, batch_size=4, train=True, seed=7, num_workers=num_workers)
        seed_epoch(loader, seed=7, epoch=epoch)
        return [batch["image"] for batch in loader]

    first, again, other = epoch_batches(3), epoch_batches(3), epoch_batches(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_balanced_sampler_draws_classes_equally(cohort):
    root, manifest = cohort
    skewed = manifest[(manifest["label"] == "positive") | (manifest.index < 2)]
    dataset = ManifestDataset(skewed, root, classes=["negative", "positive"])
    weights = balanced_weights(dataset.labels)
    per_class = [float(weights[dataset.labels == c].sum()) for c in (0, 1)]
    assert per_class[0] == pytest.approx(per_class[1])
    loader = make_loader(dataset, batch_size=len(dataset), train=True, balanced=True, seed=1)
    drawn = np.concatenate([b["label"].numpy() for _ in range(30) for b in loader])
    assert 0.35 < drawn.mean() < 0.65
    with pytest.raises(ConfigurationError, match="several processes"):
        make_loader(dataset, batch_size=2, train=True, balanced=True, world_size=2)


def test_training_never_yields_a_batch_of_one_item(cohort):
    """BatchNorm cannot train on one item, so a training epoch drops a last batch of one; evaluation keeps it."""
    root, manifest = cohort
    dataset = ManifestDataset(manifest, root, transform=preset("image", train=True, size=16))
    batch_size = len(dataset) - 1
    train = make_loader(dataset, batch_size=batch_size, train=True, seed=0)
    assert [len(batch["label"]) for batch in train] == [batch_size]
    evaluation = make_loader(dataset, batch_size=batch_size, train=False)
    assert [len(batch["label"]) for batch in evaluation] == [batch_size, 1]

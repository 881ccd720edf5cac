"""Federated training on Flower's simulation engine: three synthetic sites, partial exchange, a NaN site rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clinical.cohort.manifest import read_manifest
from clinical.federated.local import split_by_site
from clinical.federated.settings import RunSettings
from clinical.federated.simulation import simulate
from clinical.splits import write_split
from clinical.training import TrainConfig

CLASSES = ("negative", "positive")


def recipe(**overrides) -> TrainConfig:
    """A small recipe: resnet18 at 32 px, one local epoch per round, head first then stage4."""
    values = {"model": "resnet18", "image_size": (32, 32), "epochs": 1, "batch_size": 16, "lr": 1e-3,
              "unfreeze_every": 1, "max_trainable_groups": 2, "warmup_epochs": 0.0, "cache_bytes": 1 << 26}
    return TrainConfig.build(**(values | overrides))


@pytest.fixture(scope="module")
def federation_data(small_radiographs: Path, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    manifest = read_manifest(small_radiographs)
    split_path = tmp_path_factory.mktemp("federated-split") / "split.parquet"
    write_split(split_by_site(manifest, folds=5, seed=0), split_path)
    return small_radiographs, split_path, sorted(manifest["site"].unique())


def test_simulated_fedprox_exchanges_top_groups_and_rejects_a_nan_site(federation_data, tmp_path):
    cohort, split_path, sites = federation_data
    settings = RunSettings(train_config=recipe(), classes=CLASSES, num_rounds=2, strategy="fedprox",
                           proximal_mu=0.01, min_nodes=3)
    summary = simulate(settings, cohort_dir=cohort, split_path=split_path, sites=sites, out=tmp_path,
                       faults={sites[2]: "nan"})
    first, second = summary["rounds"]
    assert first["trainable_groups"] == ["head"] and second["trainable_groups"] == ["stage4", "head"]
    # only the head travels in round 1: far below a fifth of the model
    assert first["bytes_per_site_fraction"] <= 0.2
    assert 0.7 < second["bytes_per_site_fraction"] < 0.8
    for record in (first, second):
        assert len(record["accepted"]) == 2
        (reason,) = record["rejected"].values()
        assert "NaN" in reason
        assert "val-auroc" in record["evaluate_metrics"]
    state = torch.load(tmp_path / "global.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

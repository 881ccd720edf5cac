"""Federated training on Flower's simulation engine: three synthetic sites, partial exchange, a NaN site rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clinical.cohort.manifest import read_manifest
from clinical.federated.settings import RunSettings
from clinical.federated.simulation import simulate
from clinical.splits import split_by_site, write_split
from clinical.training import TrainConfig

CLASSES = ("negative", "positive")


def recipe(**overrides) -> TrainConfig:
    """A small recipe: resnet18 at 32 px, one local epoch per round, head first then stage4."""
    values = {"model": "resnet18", "image_size": (32, 32), "epochs": 1, "batch_size": 16, "lr": 1e-3,
              "unfreeze_every": 1, "max_trainable_groups": 2, "warmup_epochs": 0.0, "cache_bytes": 1 << 26}
    return TrainConfig.build(**(values | overrides))


def top_block_recipe(**overrides) -> TrainConfig:
    """resnet50 at block granularity: the head first, then the head and the last bottleneck (19 % of the model)."""
    return recipe(**({"model": "resnet50", "group_granularity": "block"} | overrides))


@pytest.fixture(scope="module")
def federation_data(small_radiographs: Path, module_tmp) -> tuple[Path, Path, list[str]]:
    manifest = read_manifest(small_radiographs)
    split_path = module_tmp("federated-split") / "split.parquet"
    write_split(split_by_site(manifest, folds=5, seed=0), split_path)
    return small_radiographs, split_path, sorted(manifest["site"].unique())


def test_simulated_fedprox_exchanges_top_groups_and_rejects_a_nan_site(federation_data, tmp_path):
    cohort, split_path, sites = federation_data
    settings = RunSettings(train_config=top_block_recipe(), classes=CLASSES, num_rounds=2, strategy="fedprox",
                           proximal_mu=0.01, min_nodes=3)
    summary = simulate(settings, cohort_dir=cohort, split_path=split_path, sites=sites, out=tmp_path,
                       faults={sites[2]: "nan"})
    rounds = summary["rounds"]
    assert [r["trainable_groups"] for r in rounds] == [["head"], ["stage4.2", "head"]]
    # the curve over rounds: the head alone, then the head and the last bottleneck, each within a fifth
    curve = [r["bytes_per_site_fraction"] for r in rounds]
    assert curve[0] < 0.001 and 0.15 < curve[1] <= 0.2
    for record in rounds:
        assert len(record["accepted"]) == 2
        (reason,) = record["rejected"].values()
        assert "NaN" in reason
        assert "val-auroc" in record["evaluate_metrics"]
    state = torch.load(tmp_path / "global.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # the server keeps the round with the best aggregated validation AUROC
    scores = [r["evaluate_metrics"]["val-auroc"] for r in rounds]
    assert summary["best_round"] == 1 + scores.index(max(scores))
    best = torch.load(tmp_path / "best_round.pt", weights_only=True)
    assert best.keys() == state.keys()

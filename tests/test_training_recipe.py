"""The recipe on the synthetic radiographs: a domain backbone fine-tuned with progressive freezing.

A tiny CNN is pretrained (supervised) on a separate synthetic radiograph cohort
with a stronger finding, then fine-tuned on the small cohort (60 patients) by
progressive freezing and by full fine-tuning, 3-fold cross-validated at
patient level. The full-size comparison (ResNet-18, three schedules) is in
``benchmarks/bench_training.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import TEST_KEY
from test_training_helpers import TINY

from clinical.cohort.manifest import read_manifest
from clinical.cohort.synthetic import generate_cohort
from clinical.evaluation import score
from clinical.ingest import ingest
from clinical.models import create_model, save_backbone
from clinical.splits import split_manifest, write_split
from clinical.training import TrainConfig, fit, load_checkpoint
from clinical.workflows import cross_validate

SIZE = (32, 32)


@pytest.fixture(scope="module")
def domain_backbone(module_tmp) -> Path:
    root = module_tmp("source")
    generate_cohort(root / "raw", size="small", seed=7, finding_strength=3.0, patient_effect=False,
                    tasks=("radiographs",))
    task = root / "raw" / "radiographs"
    ingest([task], root / "cohort", labels=task / "labels.csv", key=TEST_KEY, workers=0, progress=False)
    manifest = read_manifest(root / "cohort")
    config = TrainConfig.build(model=TINY, image_size=SIZE, schedule="full", epochs=4, batch_size=16, lr=1e-2,
                               layer_decay=1.0, early_stopping_patience=None)
    result = fit(config, manifest=manifest, cohort_dir=root / "cohort", split=split_manifest(manifest, folds=4, seed=0),
                 fold=0, out=root / "run")
    model = create_model(TINY, spatial_dims=2, in_channels=1, num_classes=2)
    model.load_state_dict(load_checkpoint(result.best_checkpoint)["model"])
    return save_backbone(model, root / "backbone.pt")


def test_progressive_freezing_learns_and_keeps_up_with_full_fine_tuning(small_radiographs, domain_backbone, tmp_path):
    manifest = read_manifest(small_radiographs)
    split = split_manifest(manifest, folds=3, seed=0)
    write_split(split, tmp_path / "split.parquet")
    pooled, per_fold = {}, {}
    for schedule in ("progressive", "full"):
        config = TrainConfig.build(model=TINY, pretrained=str(domain_backbone), image_size=SIZE, schedule=schedule,
                                   epochs=5, unfreeze_every=1, batch_size=16, lr=3e-3, layer_decay=0.5,
                                   early_stopping_patience=None)
        cv = cross_validate(config, cohort_dir=small_radiographs, split_path=tmp_path / "split.parquet",
                            out=tmp_path / schedule, n_boot=100)
        assert all(r.config.pretrained for r in cv.results)
        # Every patient is tested in exactly one fold: the pooled out-of-fold AUROC over all 60
        # patients is a steadier yardstick than the mean of three 20-patient AUROCs.
        frame = pd.concat([r.test_predictions for r in cv.results], ignore_index=True)
        pooled[schedule] = score(frame, cv.results[0].classes, level="patient")["auroc"]
        per_fold[schedule] = cv.summary["auroc"]
    print(f"patient-level test AUROC, pooled out-of-fold: {pooled}; per fold: {per_fold}")
    assert pooled["progressive"] >= 0.65, pooled  # clearly above chance (0.5) for 60 patients
    assert pooled["progressive"] >= pooled["full"] - 0.1, pooled

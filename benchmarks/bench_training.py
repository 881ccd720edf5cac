"""Training: the engine's step throughput against a hand-written loop, and the fine-tuning recipe.

``throughput``
    Items per second in the training part of an epoch: ``clinical.training.fit``
    (full fine-tuning, no mixing, AMP off) against a minimal PyTorch loop
    (AdamW, cross-entropy) on the same model, the same dataset objects and the
    same loader, in the same process. Best of two runs each, interleaved.
``recipe``
    The BPD-study recipe on the synthetic radiographs: a ResNet-18 pretrained
    (supervised) on a separate synthetic radiograph cohort with a stronger
    finding (the "domain backbone"), then fine-tuned on a small cohort
    (60 patients) by progressive freezing, full fine-tuning and linear probing;
    patient-level test AUROC over 3 cross-validation folds, mean ± SD.

Run ``python -m benchmarks.bench_training [throughput|recipe]`` (default: both).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.hand_loop import hand_loop
from benchmarks.report import emit
from clinical.cohort.manifest import read_manifest
from clinical.cohort.synthetic import generate_cohort
from clinical.data import class_names
from clinical.ingest import ingest
from clinical.models import create_model, save_backbone
from clinical.splits import fold_items, split_manifest, write_split
from clinical.training import TrainConfig, fit, load_checkpoint
from clinical.workflows import cross_validate

SIZE = 64  # pixels; radiographs of the small cohort are ≤ 128 px


def _cohort(root: Path, *, size: str, seed: int, strength: float) -> tuple[Path, object]:
    generate_cohort(root / "raw", size=size, seed=seed, finding_strength=strength, tasks=("radiographs",))
    task = root / "raw" / "radiographs"
    ingest([task], root / "cohort", labels=task / "labels.csv", workers=0, progress=False)
    return root / "cohort", read_manifest(root / "cohort")


def bench_throughput(work: Path) -> dict:
    cohort, manifest = _cohort(work / "small", size="small", seed=0, strength=1.0)
    split = split_manifest(manifest, folds=3, seed=0)
    config = TrainConfig.build(model="resnet18", image_size=(SIZE, SIZE), schedule="full", epochs=3, batch_size=32,
                               lr=1e-3, warmup_epochs=0, early_stopping_patience=None)
    classes = class_names(manifest)
    train_items = fold_items(split, 0)["train"]
    ours, baseline = [], []
    for repeat in range(2):
        baseline.append(hand_loop(config, manifest, cohort, train_items, classes)["items_per_second"])
        result = fit(config, manifest=manifest, cohort_dir=cohort, split=split, fold=0, out=work / f"run-{repeat}")
        ours.append(float(np.mean([h["train_items_per_second"] for h in result.history[1:]])))
    return emit("training_step_throughput", ours=max(ours), baseline=max(baseline), unit="items/s",
                higher_is_better=True, model="resnet18", image_size=SIZE, batch_size=config.batch_size,
                train_items=len(train_items), runs_ours=ours, runs_baseline=baseline)


def pretrain_backbone(work: Path, *, size: int = SIZE) -> tuple[Path, float]:
    """The domain backbone: ResNet-18 trained from scratch (supervised) on a separate synthetic radiograph
    cohort with a stronger finding, at ``size`` pixels; returns the weights file and its patient-level
    test AUROC there."""
    source, manifest = _cohort(work / "source", size="demo", seed=2, strength=2.0)
    config = TrainConfig.build(model="resnet18", image_size=(size, size), schedule="full", epochs=8, batch_size=32,
                               lr=3e-3, layer_decay=1.0, warmup_epochs=1, early_stopping_patience=None)
    result = fit(config, manifest=manifest, cohort_dir=source, split=split_manifest(manifest, folds=5, seed=0),
                 fold=0, out=work / "pretrain")
    backbone = create_model("resnet18", spatial_dims=2, in_channels=1, num_classes=2)
    backbone.load_state_dict(load_checkpoint(result.best_checkpoint)["model"])
    weights = save_backbone(backbone, work / "domain-resnet18.pt", meta={"source": "synthetic radiographs, seed 2"})
    return weights, result.test_metrics["auroc"]


def fine_tune(work: Path, weights: Path, schedule: str) -> dict:
    """Cross-validate one schedule on the small target cohort (seed 1, 60 patients, 3 folds)."""
    target = work / "target" / "cohort"
    if not target.is_dir():
        _cohort(work / "target", size="small", seed=1, strength=1.0)
    manifest = read_manifest(target)
    config = TrainConfig.build(model="resnet18", pretrained=str(weights), image_size=(SIZE, SIZE), schedule=schedule,
                               epochs=10, unfreeze_every=2, batch_size=16, lr=1e-3, layer_decay=0.5,
                               warmup_epochs=0.5, cutmix_alpha=1.0, mix_prob=0.5, early_stopping_patience=None)
    split_path = work / "target" / "split.parquet"
    write_split(split_manifest(manifest, folds=3, seed=0), split_path)
    cv = cross_validate(config, cohort_dir=target, split_path=split_path, out=work / schedule)
    results, summary = cv.results, cv.summary
    return {
        "auroc_mean": summary["auroc"]["mean"], "auroc_sd": summary["auroc"]["sd"],
        "auroc_folds": [r.test_metrics["auroc"] for r in results],
        "balanced_accuracy_mean": summary["balanced_accuracy"]["mean"],
        "balanced_accuracy_sd": summary["balanced_accuracy"]["sd"],
        "patients": int(manifest["patient_key"].nunique()),
    }


def bench_recipe(work: Path) -> dict:
    started = time.perf_counter()
    weights, source_auroc = pretrain_backbone(work)
    figures = {s: fine_tune(work, weights, s) for s in ("progressive", "full", "linear-probe")}
    return emit("recipe_progressive_vs_full_auroc", ours=figures["progressive"]["auroc_mean"],
                baseline=figures["full"]["auroc_mean"], unit="patient-level test AUROC, mean over 3 folds",
                higher_is_better=True, schedules=figures, source_test_auroc=source_auroc, image_size=SIZE,
                seconds=time.perf_counter() - started)


def main(which: list[str]) -> int:
    chosen = which or ["throughput", "recipe"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            {"throughput": bench_throughput, "recipe": bench_recipe}[name](Path(tmp) / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The training engine on an accelerator, against baselines run in the same process.

``engine_vs_hand``
    ``clinical.training.fit`` (bf16 AMP, channels-last, the device cache) against the
    hand-written loop with the same settings (``benchmarks.hand_loop``) on the same GPU and
    data; goal ≥ 0.95×.
``amp``
    The engine in bf16 + channels-last against the engine in fp32; goal ≥ 2×.
``resnet50`` / ``r2plus1d``
    Training images (volumes) per second of ResNet-50 at 224 px and R(2+1)D-18 on
    16×112×112 volumes, bf16, with the hand loop's figure beside it; ``data_wait_fraction``
    is the share of the hand loop's step time spent waiting for a batch (near 0: the
    data pipeline keeps the GPU busy).

Items are a toy cohort written straight to disk (``clinical.cohort.toy``): throughput needs
shapes, not anatomy, and the GPU machine need not have the ingest's decoders.

Run ``python -m benchmarks.bench_gpu [--cpu-check] [NAME ...]``; ``--cpu-check`` runs every
benchmark at a tiny size on the CPU, to check the script before a GPU run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.hand_loop import hand_loop
from benchmarks.report import emit
from clinical.cohort.toy import write_toy_cohort
from clinical.data import class_names
from clinical.splits import fold_items, split_manifest
from clinical.training import TrainConfig, fit

#: The fast recipe: bf16 autocast, channels-last, items cached (and augmented) on the device.
FAST = {"amp": "bf16", "channels_last": True, "cache_on_device": True}

#: Per benchmark: model, kind, stored size, training size, items, batch size (GPU; the CPU check shrinks them).
CASES = {
    "engine_vs_hand": ("resnet18", "image", 64, (224, 224), 1536, 128),
    "resnet50": ("resnet50", "image", 64, (224, 224), 1536, 128),
    "r2plus1d": ("r2plus1d_18", "volume", 32, (16, 112, 112), 384, 16),
}


def _setup(work: Path, case: str, cpu_check: bool, **recipe) -> tuple:
    model, kind, stored, size, items, batch = CASES[case]
    if cpu_check:
        stored, items, batch = 16, 48, 8
        size = (16, 32, 32) if kind == "volume" else (32, 32)
    cohort = work / case
    manifest = write_toy_cohort(cohort, patients=items // 4, per_patient=4, size=stored, kind=kind)
    split = split_manifest(manifest, folds=3, val_size=0.1, seed=0)
    config = TrainConfig.build(model=model, kind=kind, image_size=size, schedule="full", epochs=2 if cpu_check else 4,
                               batch_size=batch, lr=1e-3, warmup_epochs=0, early_stopping_patience=None,
                               device="cpu" if cpu_check else "cuda", **recipe)
    return cohort, manifest, split, config


def _engine(config: TrainConfig, cohort: Path, manifest, split, out: Path) -> float:
    """Training items per second of ``fit``, over the epochs after the first (which fills the cache)."""
    result = fit(config, manifest=manifest, cohort_dir=cohort, split=split, fold=0, out=out)
    return float(np.mean([h["train_items_per_second"] for h in result.history[1:]]))


def bench_engine_vs_hand(work: Path, cpu_check: bool) -> dict:
    cohort, manifest, split, config = _setup(work, "engine_vs_hand", cpu_check, **FAST)
    items = fold_items(split, 0)["train"]
    baseline = hand_loop(config, manifest, cohort, items, class_names(manifest))
    ours = _engine(config, cohort, manifest, split, work / "engine")
    return emit("gpu_engine_vs_hand_loop", ours=ours, baseline=baseline["items_per_second"], unit="items/s",
                higher_is_better=True, goal=0.95, model=config.model, image_size=list(config.image_size),
                batch_size=config.batch_size, data_wait_fraction=baseline["data_wait_fraction"], device=config.device)


def bench_amp(work: Path, cpu_check: bool) -> dict:
    cohort, manifest, split, fast = _setup(work, "engine_vs_hand", cpu_check, **FAST)
    fp32 = fast.model_copy(update={"amp": "off", "channels_last": False})
    ours = _engine(fast, cohort, manifest, split, work / "bf16")
    baseline = _engine(fp32, cohort, manifest, split, work / "fp32")
    return emit("gpu_engine_bf16_vs_fp32", ours=ours, baseline=baseline, unit="items/s", higher_is_better=True,
                goal=2.0, model=fast.model, image_size=list(fast.image_size), device=fast.device)


def _model_throughput(work: Path, case: str, cpu_check: bool) -> dict:
    cohort, manifest, split, config = _setup(work, case, cpu_check, **FAST)
    items = fold_items(split, 0)["train"]
    baseline = hand_loop(config, manifest, cohort, items, class_names(manifest))
    ours = _engine(config, cohort, manifest, split, work / "engine")
    return emit(f"gpu_{case}_throughput", ours=ours, baseline=baseline["items_per_second"],
                unit="volumes/s" if config.kind == "volume" else "images/s", higher_is_better=True,
                model=config.model, image_size=list(config.image_size), batch_size=config.batch_size,
                data_wait_fraction=baseline["data_wait_fraction"], device=config.device)


BENCHMARKS = {
    "engine_vs_hand": bench_engine_vs_hand,
    "amp": bench_amp,
    "resnet50": lambda work, cpu_check: _model_throughput(work, "resnet50", cpu_check),
    "r2plus1d": lambda work, cpu_check: _model_throughput(work, "r2plus1d", cpu_check),
}


def main(argv: list[str]) -> int:
    cpu_check = "--cpu-check" in argv
    names = [a for a in argv if a != "--cpu-check"] or list(BENCHMARKS)
    if not cpu_check and not torch.cuda.is_available():
        print("bench_gpu needs a CUDA device; run it with --cpu-check to check it on the CPU.", file=sys.stderr)
        return 0 if not argv else 2
    if not cpu_check:
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            BENCHMARKS[name](Path(tmp) / name, cpu_check)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

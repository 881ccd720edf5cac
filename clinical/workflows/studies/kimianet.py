"""KimiaNet: a DenseNet-121 trained on tiles from weak (slide) labels, judged as a feature extractor.

Every tile carries its slide's label although the finding covers a few of its tissue islands. A tile network
fine-tuned on those labels (``kind="tile"``) is then frozen and judged by what its features give
(:func:`clinical.workflows.train_slide_mil`): slide-level AUROC of tile aggregation (a logistic regression
on tile features, its probabilities pooled per slide by mean, max and top-3 mean) and of attention MIL,
and slide search (majority-vote accuracy at k). The arms differ in the feature extractor only:

- **DenseNet-121 fine-tuned on weak labels** (the KimiaNet analogue, reference);
- **DenseNet-121 untrained** (random weights: the "original DenseNet" here, since no ImageNet weights are
  downloaded, this is the floor that fine-tuning must rise above);
- **ResNet-18 fine-tuned the same way** (a smaller conv net).

Each outer fold fine-tunes its own tile network on the fold's development patients (train and val), so
no feature extractor has seen the test patients it is scored on; MIL and the tile classifier are fitted on
the same development patients. Per-fold slide AUROCs feed the corrected t-test over folds; the pooled
out-of-fold slide predictions give patient-bootstrap CIs. In retrieval the fold's test slides query the
archive of every labelled slide (own patient left out), so that a fine-tuned network is never asked about
a slide whose label it learnt.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinical.cohort import read_manifest
from clinical.data import class_names
from clinical.evaluation import compare_folds, evaluate
from clinical.evaluation.retrieval import pool_bags, retrieval_accuracy
from clinical.splits import OUTER, read_split
from clinical.tracking import MlflowTracker
from clinical.training import TrainConfig, load_result
from clinical.training.embeddings import embed_tiles
from clinical.workflows.crossval import train_fold
from clinical.workflows.slides import TILE_AGGREGATIONS, SlideMIL, train_slide_mil
from clinical.workflows.studies.arms import ArmResult, StudyResult, finish_study
from clinical.workflows.studies.cohorts import study_cohort, study_split

__all__ = ["SIZES", "TITLE", "run"]

logger = logging.getLogger(__name__)

TITLE = "KimiaNet: tile networks from weak slide labels as feature extractors (slide AUROC, retrieval)"
REFERENCE = "DenseNet-121 fine-tuned (weak labels)"
RANDOM = "DenseNet-121 untrained"
SMALLER = "ResNet-18 fine-tuned (weak labels)"
#: Slide-level methods: attention MIL, then the tile classifier pooled per slide each way.
METHODS = ("mil", *TILE_AGGREGATIONS)
METRICS = tuple(f"{method}_auroc" for method in METHODS)
K = (1, 3, 5)
EXTRA = (*(f"retrieval_at_{k}" for k in K), "tile_net_auroc")

#: Where the study's slides sit for MIL: the finding over whole islands is on many tiles, where tile aggregation
#: is as good as MIL; MIL's regime is a focal finding on a few per cent of them (``finding_focus``, README).
REGIME = ("finding over whole tumour islands (finding_focus=1, 20-40 % of a positive slide's tiles): tile "
          "aggregation is expected to match attention MIL; MIL's margin needs a focal finding (finding_focus=0.1)")

#: Cohort counts, tiles, folds and training budget of each size.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"spec": {"slide_patients_per_site": 4, "slide_size": 1024}, "folds": 2,
             "ingest": {"tile_size": 32, "max_tiles_per_slide": 4}, "image_size": 32, "epochs": 1,
             "batch_size": 32, "mil_steps": 60, "n_boot": 100, "figures": 0},
    "full": {"spec": {"slide_patients_per_site": 6, "slide_size": 2048}, "folds": 3,
             "ingest": {"tile_size": 64, "max_tiles_per_slide": 8}, "image_size": 32, "epochs": 1,
             "batch_size": 32, "mil_steps": 300, "n_boot": 1000, "figures": 2},
}


def tile_recipe(model: str, settings: dict[str, Any], *, seed: int) -> TrainConfig:
    """Fine-tuning on tiles with the slide's label on each: model choice on slide (``series``) AUROC."""
    size = settings["image_size"]
    return TrainConfig.build(model=model, kind="tile", in_channels=3, image_size=(size, size), schedule="full",
                             epochs=settings["epochs"], batch_size=settings["batch_size"], lr=1e-3,
                             monitor_level="series", aggregate="mean", early_stopping_patience=None, seed=seed)


def run(out: Path, *, size: str, cohort: str | Path | None, seed: int, tracker: MlflowTracker | None,
        finding_strength: float = 1.0, finding_focus: float = 1.0) -> StudyResult:
    """Run the three arms on every outer fold. ``cohort``: an ingested cohort of whole-slide tiles with slide
    labels (``clinical ingest --tile-size``); ``finding_focus`` < 1 makes the synthetic finding focal (MIL's
    regime, see :data:`REGIME`)."""
    settings = SIZES[size]
    cohort_dir, _ = study_cohort(out, "slides", cohort=cohort, size="tiny", seed=seed, spec=settings["spec"],
                                 generator={"finding_strength": finding_strength, "finding_focus": finding_focus},
                                 ingest_options=settings["ingest"])
    split = study_split(cohort_dir, out / "split.parquet", folds=settings["folds"], seed=seed)
    arms = {REFERENCE: "densenet121", RANDOM: "densenet121", SMALLER: "resnet18"}
    results = []
    for i, (name, model) in enumerate(arms.items()):
        recipe = None if name == RANDOM else tile_recipe(model, settings, seed=seed)
        results.append(run_feature_arm(name, model, recipe, cohort_dir=cohort_dir, split_path=split,
                                       out=out / "arms" / f"arm-{i}", settings=settings, seed=seed, tracker=tracker))
    findings = {"mil_vs_aggregation": {arm.name: mil_margin(arm) for arm in results},
                "folds": settings["folds"], "finding_strength": finding_strength,
                "finding_focus": finding_focus, "regime": REGIME,
                "retrieval": "test slides of a fold query every labelled slide, own patient left out; mean over folds"}
    return finish_study("kimianet", results, out=out, metrics=METRICS, reference=REFERENCE, title=TITLE,
                        tracker=tracker, extra=EXTRA, findings=findings)


def run_feature_arm(name: str, model: str, recipe: TrainConfig | None, *, cohort_dir: Path, split_path: Path,
                    out: Path, settings: dict[str, Any], seed: int, tracker: MlflowTracker | None) -> ArmResult:
    """One feature extractor over every outer fold: fine-tune it (unless ``recipe`` is None), then MIL and
    tile aggregation on its features; per-fold and pooled slide AUROC, and test-slide retrieval."""
    split, _ = read_split(split_path)
    manifest = read_manifest(cohort_dir)
    classes = class_names(manifest)
    folds = sorted(split.loc[split["inner"] == OUTER, "fold"].unique())
    slide_frames: list[pd.DataFrame] = []
    tile_frames: list[pd.DataFrame] = []
    fold_scores: dict[str, list[float]] = {metric: [] for metric in METRICS}
    retrieval: dict[int, list[float]] = {k: [] for k in K}
    tile_net, n_train, n_test = [], [], []
    for fold in folds:
        fold_tracker = tracker.open(recipe or tile_recipe(model, settings, seed=seed),
                                    tags={"clinical.study_arm": name, "clinical.fold": str(fold)},
                                    run_name=f"{name} fold {fold}") if tracker is not None else None
        weights = None
        if recipe is not None:
            fit = train_fold(recipe, cohort_dir=cohort_dir, split_path=split_path, fold=int(fold),
                             out=out / f"tile-net-{fold}", tracker=fold_tracker, run_name=f"{name} tile net")
            weights = Path(fit.out) / "checkpoints" / "best.pt"
            tile_net.append(_test_auroc(Path(fit.out)))
        mil = train_slide_mil(cohort_dir, split_path, out=out / f"mil-{fold}", backbone=model, pretrained=weights,
                              image_size=settings["image_size"], fold=int(fold), steps=settings["mil_steps"],
                              n_boot=settings["n_boot"], k=K, n_figures=settings["figures"], seed=seed,
                              tracker=fold_tracker)
        for metric in METRICS:
            fold_scores[metric].append(_value(mil, metric))
        slide_frames.append(mil.predictions)
        tile_frames.append(mil.tile_predictions)
        for k, value in retrieval_on_test(manifest, cohort_dir, mil.predictions, backbone=model, pretrained=weights,
                                       image_size=settings["image_size"], seed=seed).items():
            retrieval[k].append(value)
        rows = split[(split["fold"] == fold) & (split["inner"] == OUTER)]
        n_train.append(int(rows.loc[rows["role"].isin(["train", "val"]), "patient_key"].nunique()))
        n_test.append(int(rows.loc[rows["role"] == "test", "patient_key"].nunique()))
    pooled = pooled_table(pd.concat(slide_frames, ignore_index=True), pd.concat(tile_frames, ignore_index=True),
                          classes, n_boot=settings["n_boot"], seed=seed)
    extra = {f"retrieval_at_{k}": float(np.mean(values)) for k, values in retrieval.items()}
    extra["tile_net_auroc"] = float(np.mean(tile_net)) if tile_net else math.nan
    return ArmResult(name=name, fold_scores=fold_scores, pooled=pooled, n_train=n_train, n_test=n_test,
                     extra=extra, out=str(out))


def pooled_table(slides: pd.DataFrame, tiles: pd.DataFrame, classes: list[str], *, n_boot: int,
                 seed: int) -> pd.DataFrame:
    """Every fold's test slides together, each predicted by the fold that never saw it: ``<method>_<metric>``
    rows with patient-bootstrap CIs (MIL per slide; the tile classifier pooled per slide each way)."""
    tables = []
    with warnings.catch_warnings():  # small cohorts warn about their wide intervals; the table shows them
        warnings.simplefilter("ignore", UserWarning)
        for method in METHODS:
            frame, how = (slides, "mean") if method == "mil" else (tiles, method)
            table = evaluate(frame, classes, level="series", n_boot=n_boot, seed=seed, aggregate=how).to_table()
            tables.append(table.assign(metric=f"{method}_" + table["metric"]))
    return pd.concat(tables, ignore_index=True)


def retrieval_on_test(manifest: pd.DataFrame, cohort_dir: Path, test_slides: pd.DataFrame, *, backbone: str,
                      pretrained: Path | None, image_size: int, seed: int) -> dict[int, float]:
    """Majority-vote accuracy at k of the fold's test slides searching every labelled slide (mean-pooled tile
    embeddings from the cache :func:`train_slide_mil` filled), each query's own patient left out."""
    embeddings = embed_tiles(manifest, cohort_dir, backbone=backbone, pretrained=pretrained, image_size=image_size,
                             cache_dir=cohort_dir / "embeddings", seed=seed)
    bags = embeddings.bags()
    slides = embeddings.frame.groupby("series_key", sort=True)[["patient_key", "label"]].first().loc[list(bags)]
    slides = slides[slides["label"].notna()]
    labels = slides["label"].map({name: i for i, name in enumerate(class_names(manifest))})
    vectors = pool_bags(embeddings.features, [bags[key] for key in slides.index])
    return retrieval_accuracy(vectors, labels, slides["patient_key"], k=K,
                              queries=slides.index.isin(test_slides["series_key"]))


def mil_margin(arm: ArmResult) -> dict[str, Any]:
    """MIL minus the best tile aggregation: pooled AUROC difference and the corrected t-test over folds."""
    pooled = arm.pooled.set_index("metric")["value"]
    best = max(TILE_AGGREGATIONS, key=lambda how: pooled.get(f"{how}_auroc", -math.inf))
    margin: dict[str, Any] = {"best_aggregation": best,
                              "pooled_difference": float(pooled["mil_auroc"] - pooled[f"{best}_auroc"])}
    a, b = arm.fold_scores["mil_auroc"], arm.fold_scores[f"{best}_auroc"]
    if len(a) > 1 and np.all(np.isfinite(a + b)):
        test = compare_folds(a, b, n_train=arm.n_train, n_test=arm.n_test)
        margin |= {"fold_difference": test.difference, "low": test.low, "high": test.high, "p": test.p_value}
    margin["mil_wins"] = bool(margin["pooled_difference"] > 0)
    return margin


def _value(mil: SlideMIL, metric: str) -> float:
    method, name = metric.split("_", 1)
    method = method if method == "mil" else f"tiles-{method}"
    rows = mil.table[(mil.table["method"] == method) & (mil.table["metric"] == name)]
    return float(rows["value"].iloc[0]) if not rows.empty else math.nan


def _test_auroc(fold_out: Path) -> float:
    """The fine-tuned tile network's own slide-level test AUROC (mean of its tile probabilities)."""
    return float(load_result(fold_out).test_metrics.get("auroc", math.nan))

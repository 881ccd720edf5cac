"""Whole slides from weak labels: tile embeddings once, then attention MIL and tile aggregation, compared.

The use case of the KimiaNet study: every tile of a slide carries the slide's label, though the finding
covers a few of them. Both ways from tiles to a slide start from the same cached embeddings
(:func:`clinical.training.embeddings.embed_tiles`):

- **attention MIL** (:class:`clinical.models.mil.AttentionMIL`) trained on slide labels;
- **tile aggregation**: a logistic regression on tile embeddings with the slide's label on each tile,
  its tile probabilities combined per slide by mean, max and top-3 mean
  (:func:`clinical.evaluation.aggregate`).

Both are scored on the split's test patients at slide (``series``) level with patient-bootstrap CIs, the
embeddings are judged for search by majority-vote accuracy at k, and the attention over the test slides
the MIL model is surest of is drawn over their tiles. With a ``tracker`` the same files go to one MLflow
run (``mil/`` and ``plots/mil/``), its metrics ``slide_<method>_<metric>`` with ``_low``/``_high`` and
``retrieval_accuracy_at_<k>``.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from clinical.cohort import read_cohort_meta, read_manifest
from clinical.data import class_names
from clinical.errors import ManifestError
from clinical.evaluation import Report, evaluate, save_figure
from clinical.evaluation.attention import plot_attention
from clinical.evaluation.predictions import prob_columns
from clinical.evaluation.retrieval import pool_bags, retrieval_accuracy
from clinical.splits import read_split
from clinical.tracking import MlflowTracker, start_parent_run
from clinical.training.embeddings import embed_tiles
from clinical.training.mil import fit_mil, mil_attention, predict_mil

__all__ = ["TILE_AGGREGATIONS", "SlideMIL", "train_slide_mil"]

logger = logging.getLogger(__name__)

#: How tile probabilities become a slide's in the comparison.
TILE_AGGREGATIONS = ("mean", "max", "top3")
_KEYS = ["series_key", "patient_key", "study_key", "site"]


@dataclass(frozen=True)
class SlideMIL:
    """What :func:`train_slide_mil` measured and wrote.

    ``table`` has one row per method and metric (``method, metric, value, low, high, level, aggregate,
    ci_method``); ``reports`` the same as :class:`~clinical.evaluation.Report` objects keyed by method
    (``"mil"``, ``"tiles-mean"``, ...); ``retrieval`` majority-vote accuracy by k; ``predictions`` one row per
    test slide for MIL; ``tile_predictions`` one row per test tile.
    """

    table: pd.DataFrame
    reports: dict[str, Report]
    retrieval: dict[int, float]
    predictions: pd.DataFrame
    tile_predictions: pd.DataFrame
    embeddings_digest: str
    figures: list[Path]
    out: Path
    run_id: str | None = None


def train_slide_mil(
    cohort_dir: str | Path,
    split_path: str | Path,
    *,
    out: str | Path,
    backbone: str = "densenet121",
    pretrained: str | Path | None = None,
    image_size: int = 224,
    cache_dir: str | Path | None = None,
    fold: int = 0,
    steps: int = 300,
    lr: float = 0.03,
    n_boot: int = 1000,
    k: tuple[int, ...] = (1, 3, 5),
    n_figures: int = 2,
    seed: int = 0,
    device: str = "cpu",
    tracker: MlflowTracker | None = None,
) -> SlideMIL:
    """Embed the cohort's tiles (cached), fit MIL and a tile classifier on ``fold``'s development patients
    (train and val roles), score both on its test patients per slide, and write ``out``.

    Writes ``metrics_with_ci.csv``, ``retrieval.json``, ``slide_predictions.parquet``,
    ``tile_predictions.parquet`` and ``plots/attention_<i>.png``. The embeddings go to ``cache_dir``
    (``<cohort>/embeddings`` by default) and are reused by every later call with the same cohort,
    backbone, weights and size. With ``tracker`` they are also logged to a new MLflow run in its
    experiment (or to its ``parent_run_id`` when set), tagged with the cohort, split and embedding digests.

    Raises
    ------
    ManifestError
        The split has no such fold, or its development or test part has slides of one class only.
    """
    cohort_dir, out = Path(cohort_dir), Path(out)
    manifest = read_manifest(cohort_dir)
    split, _ = read_split(split_path)
    roles = split[split["fold"] == fold].set_index("item_id")["role"]
    if roles.empty:
        raise ManifestError(f"the split {Path(split_path).name} has no fold {fold}.")
    classes = class_names(manifest)
    embeddings = embed_tiles(manifest, cohort_dir, backbone=backbone, pretrained=pretrained, image_size=image_size,
                             cache_dir=cache_dir or cohort_dir / "embeddings", device=device, seed=seed)
    tiles = embeddings.frame.assign(y=lambda f: f["label"].map({name: i for i, name in enumerate(classes)}),
                                    role=lambda f: f["item_id"].map(roles))
    bags = embeddings.bags()
    slides = tiles.groupby("series_key", sort=True).first().loc[list(bags)].reset_index()
    test = (slides["role"] == "test").to_numpy()
    development = slides["role"].isin(["train", "val"]).to_numpy() & slides["y"].notna().to_numpy()
    for name, part in (("development", development), ("test", test)):
        if slides.loc[part, "y"].nunique() < 2:
            raise ManifestError(f"fold {fold}'s {name} slides hold fewer than two classes; split with more patients.")
    rows = list(bags.values())
    train_tiles = tiles["role"].isin(["train", "val"]).to_numpy() & tiles["y"].notna().to_numpy()
    test_tiles = (tiles["role"] == "test").to_numpy()
    # both methods see the embeddings standardised on the development tiles
    features = StandardScaler().fit(embeddings.features[train_tiles]).transform(embeddings.features)

    mil = fit_mil([features[rows[i]] for i in np.flatnonzero(development)],
                  slides.loc[development, "y"].astype(int).tolist(), num_classes=len(classes), steps=steps, lr=lr,
                  seed=seed, device=device)
    test_slides = slides[test].reset_index(drop=True)
    test_bags = [features[rows[i]] for i in np.flatnonzero(test)]
    predictions = _with_probs(test_slides[_KEYS].assign(label=test_slides["y"].astype("Int64")),
                              predict_mil(mil, test_bags))

    classifier = LogisticRegression(C=0.1, max_iter=2000)
    classifier.fit(features[train_tiles], tiles.loc[train_tiles, "y"].astype(int))
    tile_predictions = _with_probs(
        tiles.loc[test_tiles, ["item_id", *_KEYS]].assign(label=tiles.loc[test_tiles, "y"].astype("Int64")),
        classifier.predict_proba(features[test_tiles]))

    reports = {"mil": _evaluate(predictions, classes, n_boot=n_boot, seed=seed, how="mean")}
    for how in TILE_AGGREGATIONS:
        reports[f"tiles-{how}"] = _evaluate(tile_predictions, classes, n_boot=n_boot, seed=seed, how=how)
    table = pd.concat([report.to_table().assign(method=name) for name, report in reports.items()], ignore_index=True)
    table = table[["method", *[c for c in table.columns if c != "method"]]]
    table.loc[table["method"] == "mil", "aggregate"] = "attention"  # MIL pools the tiles itself

    known = slides["y"].notna().to_numpy()
    retrieval = retrieval_accuracy(pool_bags(features, [rows[i] for i in np.flatnonzero(known)]),
                                   slides.loc[known, "y"].astype(int), slides.loc[known, "patient_key"], k=k)

    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "metrics_with_ci.csv", index=False)
    predictions.to_parquet(out / "slide_predictions.parquet", index=False)
    tile_predictions.to_parquet(out / "tile_predictions.parquet", index=False)
    (out / "retrieval.json").write_text(json.dumps(
        {"metric": "majority-vote accuracy at k, own patient left out", "backbone": backbone,
         "embeddings": embeddings.digest, "accuracy_at_k": {str(key): v for key, v in retrieval.items()}}, indent=2))
    figures = _attention_figures(mil, test_slides, test_bags, tiles, bags, predictions, cohort_dir, out / "plots",
                                 n_figures=n_figures)
    auroc = {name: report["auroc"][0] for name, report in reports.items()}
    logger.info("slide-level AUROC on %d test slides: %s; retrieval accuracy@k %s", len(test_slides),
                ", ".join(f"{name} {value:.3f}" for name, value in auroc.items()), retrieval)
    run_id = _log(tracker, out, table, retrieval, tags={
        "clinical.cohort_digest": read_cohort_meta(cohort_dir)["digest"],
        "clinical.split_digest": read_split(split_path)[1]["digest"], "clinical.embeddings_digest": embeddings.digest,
        "clinical.model": backbone, "clinical.fold": str(fold)})
    return SlideMIL(table, reports, retrieval, predictions, tile_predictions, embeddings.digest, figures, out, run_id)


def _log(tracker: MlflowTracker | None, out: Path, table: pd.DataFrame, retrieval: dict[int, float], *,
         tags: dict[str, str]) -> str | None:
    """Send the files under ``out`` and the slide-level metrics to the tracker's run (a new one unless it has one)."""
    if tracker is None:
        return None
    if tracker.parent_run_id is None:
        run = start_parent_run(tracker.experiment, run_name=f"{tags['clinical.model']}-mil", tags=tags,
                               tracking_uri=tracker.tracking_uri)
        tracker = replace(tracker, parent_run_id=run)
    metrics = {f"slide_{row.method.replace('-', '_')}_{row.metric}{suffix}": float(value)
               for row in table.itertuples() for suffix, value in (("", row.value), ("_low", row.low),
                                                                   ("_high", row.high))
               if pd.notna(value) and math.isfinite(float(value))}
    metrics |= {f"retrieval_accuracy_at_{k}": value for k, value in retrieval.items()}
    tracker.log_evaluation(out, metrics=metrics, artifact_path="mil")
    return tracker.parent_run_id


def _with_probs(frame: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    frame = frame.reset_index(drop=True).copy()
    frame[prob_columns(probs.shape[1])] = probs
    return frame


def _evaluate(frame: pd.DataFrame, classes: list[str], *, n_boot: int, seed: int, how: str) -> Report:
    with warnings.catch_warnings():  # small test sets are the rule here; the report says how many patients
        warnings.simplefilter("ignore", UserWarning)
        return evaluate(frame, classes, level="series", n_boot=n_boot, seed=seed, aggregate=how)


def _attention_figures(mil, test_slides: pd.DataFrame, test_bags: list[np.ndarray], tiles: pd.DataFrame,
                       bags: dict[str, np.ndarray], predictions: pd.DataFrame, cohort_dir: Path, folder: Path, *,
                       n_figures: int) -> list[Path]:
    """The attention over the tiles of the test slides MIL finds most positive."""
    positive = predictions.filter(like="prob_").columns[-1]
    made = []
    for rank, index in enumerate(np.argsort(-predictions[positive].to_numpy())[:n_figures]):
        rows = tiles.iloc[bags[test_slides.loc[index, "series_key"]]]
        arrays = [np.load(cohort_dir / path, allow_pickle=False) for path in rows["path"]]
        level = int(rows["tile_level"].iloc[0]) if "tile_level" in rows.columns else 0
        figure = plot_attention(arrays, list(zip(rows["tile_x"], rows["tile_y"], strict=True)),
                                mil_attention(mil, test_bags[index]), tile_size=int(arrays[0].shape[-1]) * 2**level,
                                title=f"attention (slide P = {predictions.loc[index, positive]:.2f})")
        made.append(save_figure(figure, folder / f"attention_{rank}.png"))
    return made

"""Whole slides from weak labels: attention MIL, the embedding cache, slide retrieval and the `mil` command."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import mlflow_tracking
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score
from test_data_helpers import write_toy_cohort
from test_training_helpers import TINY

from clinical.cli import main
from clinical.cohort import read_cohort_meta, read_manifest
from clinical.cohort.synthetic.sizes import SIZES
from clinical.cohort.synthetic.slides import generate_slides
from clinical.errors import ConfigurationError, ManifestError
from clinical.evaluation.retrieval import retrieval_accuracy
from clinical.ingest import ingest, read_file
from clinical.models.mil import AttentionMIL
from clinical.splits import split_manifest, write_split
from clinical.tracking import save_classifier
from clinical.training import TrainConfig, load_result
from clinical.training.embeddings import embed_tiles
from clinical.training.mil import fit_mil, mil_attention, pad_bags, predict_mil
from clinical.workflows import train_fold, train_slide_mil
from clinical.workflows.slides import TILE_AGGREGATIONS


@pytest.fixture(scope="module")
def slides(module_tmp) -> Path:
    """Synthetic slides (``raw/slides``), their ingested tiles (``cohort``) and a two-fold ``split.parquet``."""
    root = module_tmp("slides")
    spec = dataclasses.replace(SIZES["tiny"], slide_patients_per_site=4)
    generate_slides(root / "raw", spec, seed=0, patient_effect=False, finding_strength=2.0)
    ingest(root / "raw" / "slides", root / "cohort", labels=root / "raw" / "slides" / "labels.csv",
           key="k", workers=0, progress=False, tile_size=64, max_tiles_per_slide=12)
    write_split(split_manifest(read_manifest(root / "cohort"), folds=2, seed=0), root / "split.parquet")
    return root


def test_attention_pools_real_tiles_only_and_checks_the_shape():
    model = AttentionMIL(4).eval()
    bags, mask = pad_bags([np.ones((3, 4), np.float32), np.ones((1, 4), np.float32)])
    weights = model.attention(bags, mask)
    assert weights.shape == (2, 3)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    assert weights[1, 1:].abs().max() == 0  # padding gets no weight
    assert model(bags, mask).shape == (2, 2)
    assert mil_attention(model, np.ones((5, 4), np.float32)).shape == (5,)
    with pytest.raises(ConfigurationError, match="bags \\[B, N tiles, 4 features\\]"):
        model(torch.zeros(2, 3, 5))


def _planted_bags(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], list[int]]:
    """``n`` bags of 16 tiles × 32 noise features; every other bag positive: 2 tiles shifted by 3 on feature 0."""
    bags, labels = [], []
    for i in range(n):
        bag = rng.normal(size=(16, 32)).astype(np.float32)
        if i % 2:
            bag[:2, 0] += 3.0
        bags.append(bag)
        labels.append(i % 2)
    return bags, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_mil_finds_a_finding_on_two_tiles_of_sixteen_from_forty_slide_labels(seed):
    rng = np.random.default_rng(100 + seed)
    train, test = _planted_bags(rng, 40), _planted_bags(rng, 100)
    model = fit_mil(*train, seed=seed)
    auroc = roc_auc_score(test[1], predict_mil(model, test[0])[:, 1])
    # measured 0.75, 0.78, 0.79 for seeds 0-2 (0.74-0.91 over six); Adam, the earlier optimiser, gave 0.42-0.61
    assert auroc >= 0.70
    # the planted tiles draw the attention: measured 0.42-0.75 of it on average over positive bags (uniform: 0.125)
    share = np.mean([mil_attention(model, bag)[:2].sum() for bag, label in zip(*test, strict=True) if label])
    assert share > 0.3


def test_retrieval_votes_among_other_patients_slides():
    vectors = np.array([[1, 0], [1, 0.01], [1, -0.1], [0, 1], [0.1, 1], [0.05, 1]], dtype=float)
    labels = [0, 1, 0, 1, 1, 1]
    # slides 0 and 1 are one patient: without leaving it out, slide 0's nearest would be its twin (label 1)
    patients = ["a", "a", "b", "c", "d", "e"]
    accuracy = retrieval_accuracy(vectors, labels, patients, k=(1, 3))
    assert accuracy[1] == pytest.approx(5 / 6)  # only slide 1 (label 1 among label-0 neighbours) is wrong
    assert retrieval_accuracy(vectors, labels, list("abcdef"), k=(1,))[1] == pytest.approx(4 / 6)
    with pytest.raises(ConfigurationError, match="two patients"):
        retrieval_accuracy(vectors, labels, ["a"] * 6)


def test_tile_embeddings_are_computed_once_per_backbone_weights_and_cohort(tmp_path):
    manifest = write_toy_cohort(tmp_path / "cohort", patients=4, per_patient=2, size=16, kind="tile", channels=3)
    cache = tmp_path / "cache"
    first = embed_tiles(manifest, tmp_path / "cohort", backbone=TINY, image_size=16, cache_dir=cache)
    assert first.features.shape == (8, 16) and first.frame["item_id"].is_unique
    (tmp_path / "cohort" / manifest["path"].iloc[0]).unlink()  # a cache hit reads no tile
    again = embed_tiles(manifest, tmp_path / "cohort", backbone=TINY, image_size=16, cache_dir=cache)
    assert again.digest == first.digest and np.array_equal(again.features, first.features)
    assert len(list(cache.glob("*.npz"))) == 1
    with pytest.raises(ManifestError, match="missing"):  # another seed is another backbone: embedded anew
        embed_tiles(manifest, tmp_path / "cohort", backbone=TINY, image_size=16, cache_dir=cache, seed=1)


def test_the_mil_command_scores_both_ways_per_slide_with_patient_cis_and_logs_the_run(slides, tmp_path, capsys):
    with mlflow_tracking(tmp_path / "mlflow"):
        code = main(["mil", str(slides / "cohort"), "--split", str(slides / "split.parquet"), "--out",
                     str(tmp_path / "out"), "--backbone", TINY, "--size", "64", "--steps", "30", "--n-boot", "50",
                     "--cache-dir", str(tmp_path / "cache"), "--experiment", "slides-mil"])
        assert code == 0
        printed = capsys.readouterr().out
        assert "Retrieval, majority-vote accuracy at k" in printed
        client = MlflowClient()
        run = client.get_run(printed.rsplit("MLflow run ", 1)[1].strip())
        logged = {f.path for f in client.list_artifacts(run.info.run_id, "mil")}
        plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots/mil")}
    assert run.info.status == "FINISHED"
    assert run.data.tags["clinical.split_digest"] and run.data.tags["clinical.embeddings_digest"]
    metrics = run.data.metrics
    for method in ("mil", "tiles_mean", "tiles_max", "tiles_top3"):
        assert metrics[f"slide_{method}_auroc_low"] <= metrics[f"slide_{method}_auroc"] \
            <= metrics[f"slide_{method}_auroc_high"]
    assert {f"retrieval_accuracy_at_{k}" for k in (1, 3, 5)} <= set(metrics)
    assert {"mil/metrics_with_ci.csv", "mil/retrieval.json", "mil/slide_predictions.parquet"} <= logged
    assert plots == {"plots/mil/attention_0.png", "plots/mil/attention_1.png"}
    table = pd.read_csv(tmp_path / "out" / "metrics_with_ci.csv")
    assert set(table["method"]) == {"mil", "tiles-mean", "tiles-max", "tiles-top3"}
    assert set(table["level"]) == {"series"}
    assert set(table.loc[table["method"] == "tiles-max", "aggregate"]) == {"max"}
    auroc = table[table["metric"] == "auroc"]
    assert ((auroc["low"] <= auroc["value"]) & (auroc["value"] <= auroc["high"])).all()
    slides = pd.read_parquet(tmp_path / "out" / "slide_predictions.parquet")
    assert slides["series_key"].is_unique and slides["patient_key"].nunique() < len(slides)
    assert set(json.loads((tmp_path / "out" / "retrieval.json").read_text())["accuracy_at_k"]) == {"1", "3", "5"}
    assert len(list((tmp_path / "out" / "plots").glob("attention_*.png"))) == 2
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def _b64(data: bytes | np.ndarray) -> str:
    if isinstance(data, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, data, allow_pickle=False)
        data = buffer.getvalue()
    return base64.b64encode(data).decode()


def test_the_served_tile_model_answers_one_probability_per_whole_slide_file(slides, tmp_path, monkeypatch):
    config = TrainConfig.build(model=TINY, kind="tile", in_channels=3, image_size=(64, 64), epochs=1, batch_size=16,
                               seed=0, aggregate="mean")
    run = train_fold(config, cohort_dir=slides / "cohort", split_path=slides / "split.parquet", fold=0,
                     out=tmp_path / "fold")
    options = read_cohort_meta(slides / "cohort")["options"]
    model = mlflow.pyfunc.load_model(str(save_classifier(load_result(run.out), tmp_path / "model",
                                                         ingest_options=options)))
    files = sorted((slides / "raw" / "slides").rglob("*.tif*"))[:2]
    answer = model.predict(pd.DataFrame({"file": [_b64(f.read_bytes()) for f in files]}))
    assert len(answer) == 2 and list(answer.columns[-1:]) == ["n_tiles"]
    np.testing.assert_allclose(answer.iloc[:, :2].sum(axis=1), 1.0)
    # the slide's answer is the mean over the tiles ingest cuts from it, each sent alone
    tiles = [item.array for item in read_file(files[0], options=options)]
    assert answer["n_tiles"].iloc[0] == len(tiles) == 12
    alone = model.predict(pd.DataFrame({"file": [_b64(tile) for tile in tiles]}))
    assert (alone["n_tiles"] == 1).all()
    np.testing.assert_allclose(answer.iloc[0, :2].to_numpy(float), alone.iloc[:, :2].mean().to_numpy(float), atol=1e-6)
    monkeypatch.setenv("CLINICAL_SERVE_MAX_TILES", "5")
    request = pd.DataFrame({"file": [_b64(files[0].read_bytes())]})
    capped = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(request)
    assert capped["n_tiles"].iloc[0] == 5


def _focal_fold_aurocs(root: Path, seed: int) -> dict[str, list[float]]:
    """Slide-level test AUROC of every method on both folds of one focal-finding cohort (data and fit seed ``seed``)."""
    spec = dataclasses.replace(SIZES["tiny"], slide_patients_per_site=8)
    generate_slides(root / "raw", spec, seed=seed, patient_effect=False, finding_strength=1.0, finding_focus=0.1)
    ingest(root / "raw" / "slides", root / "cohort", labels=root / "raw" / "slides" / "labels.csv",
           key="k", workers=0, progress=False, tile_size=64, max_tiles_per_slide=None)
    write_split(split_manifest(read_manifest(root / "cohort"), folds=2, seed=seed), root / "split.parquet")
    scores: dict[str, list[float]] = {}
    for fold in (0, 1):
        result = train_slide_mil(root / "cohort", root / "split.parquet", out=root / f"out-{fold}", backbone=TINY,
                                 image_size=64, fold=fold, n_boot=20, n_figures=0, seed=seed)
        for row in result.table[result.table["metric"] == "auroc"].itertuples():
            scores.setdefault(row.method, []).append(float(row.value))
    return scores


def test_attention_mil_beats_tile_aggregation_when_the_finding_is_a_small_focus(tmp_path):
    """Few witnesses: the tumour texture on a tenth of one or two islands, a few per cent of ~27 tiles a slide.

    Every tile of a positive slide is labelled positive, so the tile classifier learns from labels that are
    wrong for most of them, and its top-k or max picks chance-high tiles on negative slides; attention MIL
    is fitted on slide labels and learns which tiles to pool. Measured over three cohorts (seeds 0-2, two
    folds each, 24 patients, ~60 slides, ~27 tiles of 64 px a slide): mean fold AUROC MIL 0.691 against
    tiles-max 0.601, top-3 0.568, mean 0.531 (the best aggregation beaten by 0.090). Per fold MIL is ahead
    in only 3 of 6 against max or top-3 (it loses both folds of seed 0 and fold 0 of seed 1), so the mean
    over the six folds is asserted, with a margin below the measured one. With the finding over whole
    islands (``finding_focus=1``) MIL, max and top-3 reach 0.98-1.0 and top-3 ties MIL.
    """
    folds: dict[str, list[float]] = {}
    for seed in (0, 1, 2):
        for method, values in _focal_fold_aurocs(tmp_path / f"cohort-{seed}", seed).items():
            folds.setdefault(method, []).extend(values)
    mean = {method: float(np.mean(values)) for method, values in folds.items()}
    best = max(mean[f"tiles-{how}"] for how in TILE_AGGREGATIONS)
    assert mean["mil"] - best >= 0.05, mean

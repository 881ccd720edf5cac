"""Centre-aware training: a learned site embedding that trains, round-trips, serves, and answers an unseen site."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from test_data_helpers import write_toy_cohort
from test_training_helpers import TINY

from clinical.data import ManifestDataset, preset
from clinical.errors import ConfigurationError
from clinical.evaluation import per_site
from clinical.models import create_model
from clinical.splits import split_manifest
from clinical.tracking.pyfunc import build_classifier
from clinical.training import TrainConfig, fit, load_checkpoint
from clinical.training.inference import predict


@pytest.fixture(scope="module")
def trained(module_tmp) -> tuple[Path, pd.DataFrame, object]:
    root = module_tmp("centre")
    manifest = write_toy_cohort(root / "cohort", patients=18)
    split = split_manifest(manifest, folds=3, seed=0)
    config = TrainConfig.build(model=TINY, image_size=(16, 16), epochs=2, unfreeze_every=1, batch_size=8, lr=1e-2,
                               warmup_epochs=0.5, early_stopping_patience=None, centre="embedding")
    result = fit(config, manifest=manifest, cohort_dir=root / "cohort", split=split, fold=0, out=root / "run")
    return root / "cohort", manifest, result


def _dataset(manifest: pd.DataFrame, cohort: Path, items: list[str]) -> ManifestDataset:
    return ManifestDataset(manifest, cohort, items=items, classes=["negative", "positive"],
                           transform=preset("image", train=False, size=(16, 16)))


def _rebuilt(checkpoint: dict) -> torch.nn.Module:
    model = create_model(TINY, in_channels=1, num_classes=2)
    model.use_sites(checkpoint["sites"])
    model.load_state_dict(checkpoint["model"])
    return model


def test_the_site_vocabulary_and_embedding_are_saved_and_reload_to_the_same_predictions(trained):
    cohort, manifest, result = trained
    checkpoint = load_checkpoint(result.best_checkpoint)
    assert checkpoint["sites"] == ["north", "south"]
    assert checkpoint["model"]["site_embedding.weight"].shape == (3, 8)  # the unknown row, then one per site
    val_items = result.val_predictions["item_id"].tolist()
    again = predict(_rebuilt(checkpoint), _dataset(manifest, cohort, val_items))
    assert again[["prob_0", "prob_1"]].to_numpy() == pytest.approx(result.val_predictions[["prob_0", "prob_1"]]
                                                                   .to_numpy(), abs=1e-5)
    table = per_site(pd.concat([result.val_predictions, result.test_predictions]), result.classes, n_boot=20)
    assert {"north", "south"} <= set(table["site"])


def test_an_unseen_site_gets_the_unknown_embedding_in_prediction_and_in_the_served_model(trained):
    cohort, manifest, result = trained
    checkpoint = load_checkpoint(result.best_checkpoint)
    model = _rebuilt(checkpoint).eval()
    items = result.val_predictions["item_id"].tolist()
    elsewhere = manifest.assign(site="elsewhere")  # a centre the model never saw
    unseen = predict(model, _dataset(elsewhere, cohort, items))
    known = predict(model, _dataset(manifest, cohort, items))
    images = torch.stack([_dataset(manifest, cohort, items)[i]["image"] for i in range(len(items))])
    with torch.no_grad():
        no_site = torch.softmax(model(images), dim=1).numpy()  # no site given: the unknown row as well
    assert unseen[["prob_0", "prob_1"]].to_numpy() == pytest.approx(no_site, abs=1e-5)
    assert known[["prob_0", "prob_1"]].to_numpy() != pytest.approx(no_site, abs=1e-5)  # the site is used

    spec = {"model": TINY, "spatial_dims": 2, "in_channels": 1, "classes": result.classes,
            "sites": checkpoint["sites"]}
    with torch.no_grad():
        served = torch.softmax(build_classifier(spec, checkpoint["model"])(images), dim=1).numpy()
    assert served == pytest.approx(no_site, abs=1e-5)


def test_a_centre_agnostic_model_keeps_no_sites_and_bad_vocabularies_are_refused():
    model = create_model(TINY, in_channels=1, num_classes=2)
    assert model.sites == () and model.site_embedding is None
    assert [g.name for g in model.layer_groups()][-1] == "head"
    for sites in ([], ["a", "a"]):
        with pytest.raises(ConfigurationError, match="distinct training sites"):
            model.use_sites(sites)
    model.use_sites(["a", "b"])
    head = model.layer_groups()[-1]
    assert {id(p) for p in head.parameters()} >= {id(model.site_embedding.weight)}  # trains with the head

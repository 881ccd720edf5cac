"""Registered classifiers read back from the registry: the network, its spec, its predictions on a cohort."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch

from clinical.cohort import read_manifest
from clinical.data import ManifestDataset
from clinical.splits import fold_items, read_split
from clinical.tracking.pyfunc import build_classifier, spec_preset
from clinical.training import predict

__all__ = ["load_registered", "predict_registered"]


def load_registered(uri: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network and its spec (classes, kind, size) of a registered classifier, ready for ``predict``."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        spec = json.loads(next(local.rglob("classifier.json")).read_text())
        state = torch.load(next(local.rglob("weights.pt")), map_location="cpu", weights_only=True)
    return build_classifier(spec, state), spec


def predict_registered(
    uri: str, *, cohort_dir: str | Path, split_path: str | Path, fold: int, role: str = "test"
) -> pd.DataFrame:
    """Predictions of a registered classifier on one role of one fold (the predictions frame)."""
    model, spec = load_registered(uri)
    manifest = read_manifest(cohort_dir)
    split, _ = read_split(split_path)
    items = fold_items(split, fold)[role]
    labelled = set(manifest.loc[manifest["label"].notna() & (manifest["kind"] == spec["kind"]), "item_id"])
    dataset = ManifestDataset(manifest, cohort_dir, items=[i for i in items if i in labelled], classes=spec["classes"],
                              transform=spec_preset(spec, train=False))
    return predict(model, dataset)

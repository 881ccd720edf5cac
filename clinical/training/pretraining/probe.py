"""Linear probe: how much a frozen backbone's features already know about a cohort's labels.

The standard way to judge self-supervised features (SimCLR, BYOL and their
successors all report it): freeze the backbone, fit a logistic regression on its
pooled features, and score it out of fold. The folds are grouped by patient, so
features that merely recognise a patient (or a papyrus) earn nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from clinical.cohort import read_manifest
from clinical.data import ManifestDataset, class_names, preset
from clinical.errors import ConfigurationError
from clinical.models.classifier import ClassifierModel
from clinical.training.pretraining.pretrain import items_of_kind

__all__ = ["linear_probe"]


@torch.no_grad()
def _features(model: ClassifierModel, dataset: ManifestDataset, device: str) -> np.ndarray:
    model.eval().to(device)
    batches = DataLoader(dataset, batch_size=64)
    return torch.cat([model.forward_features(batch["image"].to(device)).cpu() for batch in batches]).numpy()


def linear_probe(
    model: ClassifierModel,
    cohort: str | Path,
    *,
    kind: str | None = None,
    size: int | Sequence[int] | None = None,
    folds: int = 5,
    repeats: int = 3,
    regularisation: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
) -> float:
    """Out-of-fold AUROC of a logistic regression on ``model``'s frozen features of the labelled items.

    Parameters
    ----------
    model
        The backbone to judge (its head is ignored).
    cohort
        A cohort folder; only labelled items of ``kind`` are used.
    kind, size
        Which items, and the size they are resized to (as in :func:`pretrain`).
    folds, repeats
        Patient-grouped, stratified folds, repeated with different shuffles and averaged.
    regularisation
        Inverse L2 strength ``C`` of the logistic regression on standardised features.

    Returns
    -------
    float
        Item-level AUROC; the macro one-vs-rest average when there are more than two classes.

    Raises
    ------
    ConfigurationError
        When fewer than ``folds`` patients or fewer than two classes are labelled.
    """
    manifest, kind = items_of_kind(read_manifest(cohort), kind)
    manifest = manifest[manifest["label"].notna()].reset_index(drop=True)
    classes = class_names(manifest)
    patients = manifest["patient_key"].to_numpy()
    if len(classes) < 2 or len(set(patients)) < folds:
        raise ConfigurationError(
            f"A {folds}-fold probe needs two classes and {folds} patients; the labelled {kind} items have "
            f"{len(classes)} class(es) and {len(set(patients))} patient(s)."
        )
    dataset = ManifestDataset(manifest, cohort, classes=classes, transform=preset(kind, train=False, size=size))
    features = _features(model, dataset, device)
    labels = manifest["label"].map({name: index for index, name in enumerate(classes)}).to_numpy()
    scores = np.zeros((len(labels), len(classes)))
    for repeat in range(repeats):
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed + repeat)
        for train, test in splitter.split(features, labels, patients):
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=regularisation, max_iter=2000))
            probe.fit(features[train], labels[train])
            # a class absent from this training fold gets no probability column
            scores[np.ix_(test, probe[-1].classes_)] += probe.predict_proba(features[test]) / repeats
    if len(classes) == 2:
        return float(roc_auc_score(labels, scores[:, 1]))
    return float(roc_auc_score(labels, scores, multi_class="ovr", labels=list(range(len(classes)))))

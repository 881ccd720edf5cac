"""Synthetic predictions frames for the evaluation tests (clustered: several items per patient)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import softmax


def clustered_binary(
    rng: np.random.Generator,
    *,
    n_patients: int = 60,
    items_per_patient: int = 5,
    shift: float = 1.0,
    patient_sd: float = 1.0,
    item_sd: float = 0.3,
    prevalence: float = 0.4,
    sites: tuple[str, ...] = ("A", "B"),
) -> pd.DataFrame:
    """Items with a score ``shift * y + u_patient + e_item`` turned into probabilities by a logistic link.

    The item-level AUROC in the population is ``Phi(shift / sqrt(2 (patient_sd**2 + item_sd**2)))``:
    every positive/negative pair of items comes from two different (independent) patients.
    """
    y = (rng.random(n_patients) < prevalence).astype(int)
    y[:2] = [0, 1]  # both classes always present
    u = rng.normal(0.0, patient_sd, n_patients)
    patient = np.repeat(np.arange(n_patients), items_per_patient)
    score = shift * y[patient] + u[patient] + rng.normal(0.0, item_sd, patient.size)
    p1 = 1.0 / (1.0 + np.exp(-(score - shift / 2)))
    return pd.DataFrame(
        {
            "item_id": [f"item{i}" for i in range(patient.size)],
            "patient_key": [f"pat{k}" for k in patient],
            "study_key": [f"study{k}" for k in patient],
            "site": np.asarray(sites)[patient % len(sites)],
            "label": y[patient],
            "prob_0": 1.0 - p1,
            "prob_1": p1,
        }
    )


def multiclass_items(
    rng: np.random.Generator, *, n: int = 200, n_classes: int = 3, signal: float = 1.5
) -> pd.DataFrame:
    """Independent items (one per patient) with ``n_classes`` exclusive classes."""
    y = np.arange(n) % n_classes
    logits = rng.normal(0.0, 1.0, (n, n_classes))
    logits[np.arange(n), y] += signal
    probs = softmax(logits, axis=1)
    frame = pd.DataFrame(
        {
            "item_id": [f"item{i}" for i in range(n)],
            "patient_key": [f"pat{i}" for i in range(n)],
            "study_key": [f"study{i}" for i in range(n)],
            "site": np.where(np.arange(n) % 2 == 0, "A", "B"),
            "label": y,
        }
    )
    for k in range(n_classes):
        frame[f"prob_{k}"] = probs[:, k]
    return frame

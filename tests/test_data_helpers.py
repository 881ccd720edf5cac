"""The toy cohort (``clinical.cohort.toy``: tiny 32×32 arrays a small CNN learns in seconds) and a toy split."""

from __future__ import annotations

import pandas as pd

from clinical.cohort.toy import write_toy_cohort

__all__ = ["toy_split", "write_toy_cohort"]


def toy_split(manifest: pd.DataFrame, *, folds: int = 2) -> pd.DataFrame:
    """A patient-level split: per fold, one block of patients is test, the next val, the rest train."""
    patients = sorted(manifest["patient_key"].unique())
    blocks = [patients[i::folds + 1] for i in range(folds + 1)]
    rows = []
    for fold in range(folds):
        role_of = {p: "test" for p in blocks[fold]} | {p: "val" for p in blocks[(fold + 1) % (folds + 1)]}
        for item_id, patient in zip(manifest["item_id"], manifest["patient_key"], strict=True):
            role = role_of.get(patient, "train")
            rows.append({"item_id": item_id, "patient_key": patient, "fold": fold, "role": role})
    return pd.DataFrame(rows)

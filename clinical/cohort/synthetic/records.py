"""Deterministic randomness, opaque names, UIDs and the two CSV tables every task writes.

Everything the generator draws comes from :func:`rng_for`, keyed by the seed and
by *what* is drawn (task, site, patient index, ...), never by the order of
drawing: adding a task or a patient leaves the others byte-identical.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.uid import generate_uid

__all__ = [
    "GROUND_TRUTH_COLUMNS",
    "balanced_labels",
    "make_uid",
    "opaque_name",
    "rng_for",
    "write_task_tables",
]

#: Columns every ``ground_truth.csv`` starts with; tasks append their own.
#: List-valued cells (``files``, shapes, boxes, ...) are JSON text.
GROUND_TRUTH_COLUMNS = (
    "task",
    "file",
    "files",
    "patient_id",
    "site",
    "study_uid",
    "series_uid",
    "label",
    "patient_name",
    "patient_birth_date",
    "accession_number",
)


def _key_bytes(seed: int, keys: Sequence[object]) -> bytes:
    return hashlib.sha256(json.dumps([int(seed), *map(str, keys)]).encode()).digest()


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (e.g. ``"radiographs", "north", 3``)."""
    return np.random.default_rng(int.from_bytes(_key_bytes(seed, keys)[:16], "little"))


def opaque_name(seed: int, *keys: object, length: int = 12) -> str:
    """A random-looking hex name for a folder or file; it carries no PHI and no order."""
    return _key_bytes(seed, ("name", *keys)).hex()[:length]


def make_uid(seed: int, *keys: object) -> str:
    """A valid DICOM UID (pydicom's prefix), reproducible from ``seed`` and ``keys``."""
    return str(generate_uid(entropy_srcs=[str(int(seed)), *map(str, keys)]))


def balanced_labels(rng: np.random.Generator, n: int, classes: Sequence[str]) -> list[str]:
    """``n`` labels cycling through ``classes`` in a random order, so every class appears when ``n >= len(classes)``."""
    offset = int(rng.integers(len(classes)))
    labels = [classes[(i + offset) % len(classes)] for i in range(n)]
    return [labels[i] for i in rng.permutation(n)]


def write_task_tables(
    task_dir: Path, ground_truth: list[dict], labels: list[dict], extra_columns: Sequence[str]
) -> pd.DataFrame:
    """Write ``labels.csv`` and ``ground_truth.csv`` in ``task_dir``; return the ground truth table.

    ``labels.csv`` has the column ``label`` and exactly one key per row among
    ``patient_id``, ``study_uid``, ``series_uid`` and ``file`` (the others empty).
    """
    columns = [*GROUND_TRUTH_COLUMNS, *extra_columns]
    table = pd.DataFrame(ground_truth)
    for column in columns:
        if column not in table.columns:
            table[column] = ""
    table = table[columns]
    for column in table.columns:
        if table[column].map(lambda v: isinstance(v, (list, tuple, dict))).any():
            table[column] = table[column].map(lambda v: json.dumps(v) if isinstance(v, (list, tuple, dict)) else v)
    table = table.sort_values(["site", "patient_id", "file", "series_uid"], ignore_index=True)
    table.to_csv(task_dir / "ground_truth.csv", index=False)
    label_columns = ["patient_id", "study_uid", "series_uid", "file", "label"]
    label_table = pd.DataFrame([{c: row.get(c, "") for c in label_columns} for row in labels], columns=label_columns)
    label_table = label_table.drop_duplicates().sort_values(["patient_id", "series_uid", "file"], ignore_index=True)
    label_table.to_csv(task_dir / "labels.csv", index=False)
    return table

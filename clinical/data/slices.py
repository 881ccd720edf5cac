"""Volumes as their axial slices: a manifest view in which every slice of a volume is an item.

``slice_items(manifest)`` turns each volume row (``(C, D, H, W)``, multi-channel or not) into
``D`` rows of kind ``image`` that read slice ``d`` of the same cached array (the ``slice``
column; :class:`~clinical.data.ManifestDataset` reads only that slice). Each row keeps its
volume's ``patient_key``, ``study_key``, ``series_key`` and ``site``, so any split of the view
made by :func:`clinical.splits.split_manifest` stays patient-level and the leakage check still
sees the patients. With a slice-label table ``(series_key, slice) → label``
(:func:`clinical.ingest.read_slice_labels` hashes one from raw Series Instance UIDs) each slice
takes its own label; otherwise every slice takes its volume's.

:func:`independent_slices` is the other arm of the PET/CT study: every slice made its own
patient, study and series, which is what a slice-level split does. Use it only to measure
how much such a split overestimates (it defeats the leakage check on purpose).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clinical.errors import ManifestError

__all__ = ["SLICE_LABEL_COLUMNS", "independent_slices", "slice_items"]

#: Columns of a slice-label table.
SLICE_LABEL_COLUMNS = ("series_key", "slice", "label")


def slice_items(manifest: pd.DataFrame, *, slice_labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """The volume rows of ``manifest`` as one row per axial slice (other kinds are left out).

    Item ids are ``<volume item_id>-<slice:04d>``; ``volume_id`` names the volume; ``shape`` and
    ``spacing`` lose the slice axis. Slices of a series absent from ``slice_labels`` are unlabelled.

    Raises
    ------
    ManifestError
        When ``slice_labels`` lacks the columns :data:`SLICE_LABEL_COLUMNS`, or names a slice
        beyond its volume's depth (the table belongs to another ingest, or to resampled volumes).
    """
    volumes = manifest[manifest["kind"] == "volume"]
    if volumes.empty:
        raise ManifestError("The manifest has no volume items to cut into slices; ingest volumes first.")
    depth = volumes["shape"].map(lambda s: int(s[1]))
    rows = volumes.loc[volumes.index.repeat(depth)].reset_index(drop=True)
    rows["slice"] = np.concatenate([np.arange(n) for n in depth]).astype(np.int64)
    rows["volume_id"] = rows["item_id"]
    rows["item_id"] = rows["item_id"] + "-" + rows["slice"].map("{:04d}".format)
    rows["kind"] = "image"
    rows["shape"] = rows["shape"].map(lambda s: [int(s[0]), *map(int, s[2:])])
    rows["spacing"] = rows["spacing"].map(lambda s: [float(v) for v in list(s)[1:]])
    if slice_labels is None:
        return rows
    missing = [c for c in SLICE_LABEL_COLUMNS if c not in slice_labels.columns]
    if missing:
        raise ManifestError(
            f"The slice-label table lacks the column(s) {missing}; it needs {list(SLICE_LABEL_COLUMNS)}."
        )
    table = slice_labels[list(SLICE_LABEL_COLUMNS)].astype({"slice": np.int64})
    placed = table.merge(volumes[["series_key", "shape"]], on="series_key")
    beyond = (placed["slice"] < 0) | (placed["slice"] >= placed["shape"].map(lambda s: int(s[1])))
    if beyond.any():
        raise ManifestError(
            f"The slice-label table names {int(beyond.sum())} slice(s) outside their volume's depth; it was made "
            "for other volumes (resampled along the slice axis, or another ingest)."
        )
    labelled = rows.drop(columns=["label"]).merge(table, on=["series_key", "slice"], how="left")
    return labelled[[*rows.columns]]


def independent_slices(slices: pd.DataFrame) -> pd.DataFrame:
    """The view with every item its own patient, study and series: what a slice-level split assumes."""
    return slices.assign(patient_key=slices["item_id"], study_key=slices["item_id"], series_key=slices["item_id"])

"""The per-fold table: patients, items and label balance per role and site."""

from __future__ import annotations

import pandas as pd

from clinical.errors import ManifestError
from clinical.splits.folds import OUTER

__all__ = ["fold_table"]


def fold_table(split: pd.DataFrame, manifest: pd.DataFrame, *, label_sep: str | None = None) -> pd.DataFrame:
    """Count patients and items, and items per label, for each outer fold, role and site.

    Parameters
    ----------
    split
        A split table; only the outer split (``inner == -1``) is counted.
    manifest
        The manifest it was made from (``item_id, site, label``).
    label_sep
        For multi-label tasks, the separator inside ``label``; an item then
        counts once for each of its labels. Taken from ``split.attrs`` when omitted.

    Returns
    -------
    pandas.DataFrame
        Columns ``fold, role, site, patients, items`` and one ``label:<name>``
        column per label, plus ``unlabelled`` items.
    """
    missing = [c for c in ("item_id", "site", "label") if c not in manifest.columns]
    if missing:
        raise ManifestError(f"The manifest lacks the column(s) {missing} needed for the fold table.")
    label_sep = label_sep or split.attrs.get("split", {}).get("label_sep")
    rows = split[split["inner"] == OUTER][["item_id", "patient_key", "fold", "role"]]
    rows = rows.merge(manifest[["item_id", "site", "label"]], on="item_id", how="left", validate="many_to_one")
    keys = ["fold", "role", "site"]
    table = rows.groupby(keys, observed=True).agg(patients=("patient_key", "nunique"), items=("item_id", "size"))
    labels = rows["label"].astype("string")
    hot = labels.str.get_dummies(sep=label_sep) if label_sep else pd.get_dummies(labels, dtype=int)
    hot = hot.add_prefix("label:")
    hot["unlabelled"] = labels.isna().astype(int).to_numpy()
    per_label = pd.concat([rows[keys], hot], axis=1).groupby(keys, observed=True).sum()
    order = {"train": 0, "val": 1, "test": 2, "unlabelled": 3}
    out = table.join(per_label).reset_index()
    out = out.sort_values(["fold", "role", "site"], key=lambda c: c.map(order) if c.name == "role" else c)
    return out.reset_index(drop=True).astype({"fold": int, "patients": int, "items": int})

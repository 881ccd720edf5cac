"""Leakage checks: no patient, study or series in two roles of the same fold.

:func:`check_no_leakage` is what training calls before every fit;
:func:`role_crossings` counts the offenders for the audit report. Messages
and reports give counts and fold numbers, never the keys themselves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clinical.errors import LeakageError, ManifestError
from clinical.splits.folds import OUTER, ROLES

__all__ = ["LEVELS", "check_no_leakage", "role_crossings"]

#: Manifest columns that must not cross roles, coarsest first.
LEVELS = ("patient_key", "study_key", "series_key")
#: Roles whose keys an outer fold holds out from everything that trains or selects its model (test, gate).
HELD_OUT = tuple(role for role in ROLES if role not in ("train", "val", "unlabelled"))


def role_crossings(split: pd.DataFrame, manifest: pd.DataFrame, *, levels: tuple[str, ...] = LEVELS) -> pd.DataFrame:
    """Count, for each level and fold, the keys whose items take more than one role.

    Nested splits are checked across levels of nesting too: a key that the
    outer fold holds out (``test``) counts as crossing in every inner fold
    of that fold in which it appears at all.

    The keys are read from the manifest (the truth about who an item
    belongs to), not from the split's own ``patient_key`` column. Items with
    a missing key at a level (a photograph has no series) are not counted there.

    Returns
    -------
    pandas.DataFrame
        Columns ``level, fold, inner, crossing`` (number of keys in two or
        more roles, or in an inner fold while held out by its outer fold),
        one row per level and ``(fold, inner)`` of the split.

    Raises
    ------
    ManifestError
        When a level is not a manifest column, an item of the split is not in
        the manifest (the split belongs to another cohort), or an item
        appears twice in one fold.
    """
    missing = [c for c in ("item_id", *levels) if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"The manifest lacks the column(s) {missing} needed for the leakage check at levels={levels}; "
            "add them, or pass the levels the table has (e.g. levels=('patient_key',))."
        )
    repeated = split.duplicated(["item_id", "fold", "inner"])
    if repeated.any():
        raise ManifestError(f"The split lists {int(repeated.sum())} item(s) twice within one fold; it is malformed.")
    position = pd.Index(manifest["item_id"].astype(str)).get_indexer(split["item_id"].astype(str))
    if (position < 0).any():
        raise ManifestError(
            f"{int((position < 0).sum())} row(s) of the split name items that are not in the manifest; "
            "the split was made for another cohort. Split this cohort with `clinical split`."
        )
    fold = split["fold"].to_numpy(dtype=np.int64)
    inner = split["inner"].to_numpy(dtype=np.int64)
    fold_inner = fold * 1024 + inner + 1
    role = pd.factorize(split["role"])[0]
    held_out = (split["role"].isin(HELD_OUT) & (inner == OUTER)).to_numpy(dtype=bool)
    pairs = pd.DataFrame({"fold": split["fold"].to_numpy(), "inner": split["inner"].to_numpy()}).drop_duplicates()
    rows = []
    for level in levels:
        keys = pd.factorize(manifest[level])[0][position]  # -1 where the key is missing
        frame = pd.DataFrame({"fi": fold_inner, "key": keys, "role": role})[keys >= 0].drop_duplicates()
        per_key = frame.groupby(["fi", "key"]).size()
        crossing = per_key[per_key > 1].reset_index()[["fi", "key"]]
        # An inner fold selects the model of its outer fold, so a key held out by the outer fold (its test
        # patients) must not appear in any of that fold's inner rows, whatever the role there.
        outer_held = pd.DataFrame({"fold": fold, "key": keys})[held_out & (keys >= 0)].drop_duplicates()
        in_inner = pd.DataFrame({"fold": fold, "fi": fold_inner, "key": keys})[(inner != OUTER) & (keys >= 0)]
        nested = in_inner.merge(outer_held, on=["fold", "key"])[["fi", "key"]]
        counts = pd.concat([crossing, nested]).drop_duplicates().groupby("fi").size()
        for fold_number, inner_number in pairs.itertuples(index=False):
            count = int(counts.get(int(fold_number) * 1024 + int(inner_number) + 1, 0))
            rows.append({"level": level, "fold": int(fold_number), "inner": int(inner_number), "crossing": count})
    return pd.DataFrame(rows, columns=["level", "fold", "inner", "crossing"])


def check_no_leakage(split: pd.DataFrame, manifest: pd.DataFrame, *, levels: tuple[str, ...] = LEVELS) -> None:
    """Raise unless every patient, study and series keeps one role within each fold.

    With nested folds, an outer test patient must also be absent from all
    inner rows of its fold (they select the model that is then tested).

    Training calls this before every fit. A split made ``by="study"`` may
    put one patient's studies in different roles; check it knowingly with
    ``levels=("study_key", "series_key")``.

    Raises
    ------
    LeakageError
        Naming, per level, how many keys cross roles and in which folds
        (never the keys).
    ManifestError
        When the split does not belong to the manifest (see :func:`role_crossings`).
    """
    table = role_crossings(split, manifest, levels=levels)
    bad = table[table["crossing"] > 0]
    if bad.empty:
        return
    parts = []
    for level, rows in bad.groupby("level", sort=False):
        where = sorted({(int(f), int(i)) for f, i in zip(rows["fold"], rows["inner"], strict=True)})
        folds = ", ".join(str(f) if i < 0 else f"{f} (inner {i})" for f, i in where)
        parts.append(f"{int(rows['crossing'].max())} {level} value(s) in more than one role (fold {folds})")
    raise LeakageError(
        "Leakage: " + "; ".join(parts) + ". A model evaluated on this split would be tested on patients it was "
        "trained on, which overestimates performance. Split by patient with `clinical split`."
    )

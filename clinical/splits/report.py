"""The leakage audit of a split: role checks, near-duplicate images and, on request, the inflation.

:func:`audit_split` gathers everything into one JSON-ready dict (what
``clinical audit`` writes); :func:`format_report` turns it into the table
the command prints.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from clinical.cohort import cohort_digest
from clinical.errors import ConfigurationError
from clinical.splits.arrays import thumbnails
from clinical.splits.audit import LEVELS, role_crossings
from clinical.splits.duplicates import HASH_SIZE, cross_role_pairs, near_duplicate_pairs, perceptual_hash
from clinical.splits.inflation import N_SEEDS, leakage_inflation

__all__ = ["audit_split", "format_report", "inflation_folds"]

logger = logging.getLogger(__name__)

#: Near-duplicate pairs listed in the report; the count covers them all.
MAX_LISTED = 200
#: Side of the inflation model's input, in pixels.
INFLATION_SIZE = 16


def inflation_folds(meta: dict) -> int:
    """Folds of the inflation's cross-validations: the split's own count for K-fold splits, else 5."""
    return int(meta.get("folds") or 5) if meta.get("mode", "kfold") == "kfold" else 5


def audit_split(
    manifest: pd.DataFrame,
    split: pd.DataFrame,
    cohort: str | Path,
    *,
    meta: dict | None = None,
    inflation: bool = False,
    max_distance: int = 4,
    n_boot: int = 1000,
    n_seeds: int = N_SEEDS,
) -> dict:
    """Audit a split of a cohort for leakage.

    Parameters
    ----------
    manifest, split, cohort
        The cohort's manifest, the split table and the cohort folder (the
        manifest's ``path`` is relative to it).
    meta
        The split file's metadata (from :func:`clinical.splits.read_split`):
        its digest and seed go into the report; its cohort digest is compared.
    inflation
        Also train the quick model under an item-level and a patient-level
        split and report the AUROC difference (a few seconds on CPU).
    max_distance
        Hashes differing in at most this many of 64 bits count as near duplicates.
    n_boot
        Bootstrap resamples of patients for the inflation CI.
    n_seeds
        Split seeds the inflation repeats both splits over (its interval includes the split's variability).

    Returns
    -------
    dict
        ``passed`` (no key crosses roles and no near duplicate crosses
        roles), ``roles`` (per level: keys crossing roles, folds), ``near_duplicates``,
        ``inflation`` (or ``None``), and the digests.
    """
    if isinstance(max_distance, bool) or not isinstance(max_distance, int) or not 0 <= max_distance < 32:
        raise ConfigurationError(
            f"The 'max_distance' parameter must be an int in [0, 32) bits of 64. Got {max_distance!r} instead."
        )
    meta = meta or split.attrs.get("split", {})
    levels = tuple(level for level in LEVELS if level in manifest.columns)
    crossings = role_crossings(split, manifest, levels=levels)
    roles = {}
    for level, rows in crossings.groupby("level", sort=False):
        bad = rows[rows["crossing"] > 0]
        roles[level] = {
            "passed": bad.empty,
            "crossing": int(rows["crossing"].max()),
            "folds": sorted({int(f) for f in bad["fold"]}),
        }

    in_split = manifest[manifest["item_id"].isin(split["item_id"])].reset_index(drop=True)
    thumbs, readable = thumbnails(in_split, cohort, size=HASH_SIZE)
    hashes, informative = perceptual_hash(thumbs)
    usable = np.flatnonzero(readable & informative)
    pairs = near_duplicate_pairs(hashes[usable], max_distance=max_distance)
    pairs["a"], pairs["b"] = usable[pairs["a"].to_numpy()], usable[pairs["b"].to_numpy()]
    crossing_pairs = cross_role_pairs(pairs, in_split["item_id"].to_numpy(dtype=str), split)
    duplicates = {
        "passed": crossing_pairs.empty,
        "max_distance": max_distance,
        "hashed": len(usable),
        "unreadable": int((~readable).sum()),
        "blank": int((readable & ~informative).sum()),
        "near_duplicate_pairs": len(pairs),
        "crossing_roles": len(crossing_pairs),
        "pairs": crossing_pairs.head(MAX_LISTED).to_dict(orient="records"),
    }

    inflation_result = None
    if inflation:
        small = thumbs.reshape(len(thumbs), INFLATION_SIZE, 2, INFLATION_SIZE, 2).mean(axis=(2, 4))
        keep = readable & in_split["label"].notna().to_numpy()
        inflation_result = leakage_inflation(
            small[keep].reshape(int(keep.sum()), -1),
            in_split[keep].reset_index(drop=True),
            folds=inflation_folds(meta),
            seed=int(meta.get("seed") or 0),
            n_boot=n_boot,
            n_seeds=n_seeds,
        )

    digest = (
        cohort_digest(manifest)
        if {"source_digest", "kind", "study_key", "series_key"} <= set(manifest.columns)
        else None
    )
    written_for = meta.get("cohort_digest")
    return {
        "passed": all(r["passed"] for r in roles.values()) and duplicates["passed"],
        "split_digest": meta.get("digest"),
        "seed": meta.get("seed"),
        "mode": meta.get("mode"),
        "by": meta.get("by"),
        "cohort_digest": digest,
        "split_made_for_this_cohort": None if written_for is None or digest is None else written_for == digest,
        "roles": roles,
        "near_duplicates": duplicates,
        "inflation": inflation_result,
    }


def format_report(report: dict) -> str:
    """A readable summary of :func:`audit_split`'s report, one check per line."""

    def mark(passed: bool) -> str:
        return "ok  " if passed else "FAIL"

    lines = [f"{'check':<44} {'result':<6} detail"]
    for level, result in report["roles"].items():
        detail = "" if result["passed"] else f"{result['crossing']} key(s) in two roles, folds {result['folds']}"
        lines.append(f"{'one role per ' + level:<44} {mark(result['passed']):<6} {detail}")
    dup = report["near_duplicates"]
    detail = (
        f"{dup['crossing_roles']} of {dup['near_duplicate_pairs']} near-duplicate pair(s) cross roles "
        f"({dup['hashed']} hashed, {dup['blank']} blank, {dup['unreadable']} unreadable)"
    )
    lines.append(f"{'near-duplicate images across roles':<44} {mark(dup['passed']):<6} {detail}")
    for pair in dup["pairs"][:20]:
        lines.append(
            f"    {pair['item_a']}  ~  {pair['item_b']}  ({pair['distance']} bits, folds {', '.join(pair['folds'])})"
        )
    if report.get("split_made_for_this_cohort") is False:
        lines.append("warning: the split was made for another version of this cohort (digest differs)")
    infl = report.get("inflation")
    if infl:
        lines.append(
            f"{'inflation of an item-level split (AUROC)':<44} {'info':<6} "
            f"item {infl['auroc_item_split']:.3f} - patient {infl['auroc_patient_split']:.3f} = "
            f"{infl['inflation']:+.3f} ({100 * infl['confidence']:.0f}% CI "
            f"{infl['ci_low']:+.3f} to {infl['ci_high']:+.3f}; "
            f"{infl['patients']} patients, {infl['items']} items; {infl['model']})"
        )
    lines.append("PASSED" if report["passed"] else "FAILED: this split leaks; do not train on it")
    return "\n".join(lines)

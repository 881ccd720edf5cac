"""Patient-level and site-held-out splits, and the leakage audit.

``split_manifest`` turns any table with ``item_id, patient_key, label, site``
into a split table (one row per item and fold, with its role);
``write_split``/``read_split`` store it with its seed and digest;
``check_no_leakage`` is what training calls before every fit; ``audit_split``
adds near-duplicate images and the cost of an item-level split.
"""

from __future__ import annotations

from clinical.splits.audit import LEVELS, check_no_leakage, role_crossings
from clinical.splits.folds import (
    OUTER,
    ROLES,
    SPLIT_COLUMNS,
    fold_items,
    gate_patients,
    outer_folds,
    split_by_site,
    split_manifest,
)
from clinical.splits.inflation import leakage_inflation
from clinical.splits.report import audit_split, format_report
from clinical.splits.splitfile import read_split, split_digest, write_split
from clinical.splits.table import fold_table

__all__ = [
    "LEVELS",
    "OUTER",
    "ROLES",
    "SPLIT_COLUMNS",
    "audit_split",
    "check_no_leakage",
    "fold_items",
    "fold_table",
    "format_report",
    "gate_patients",
    "leakage_inflation",
    "outer_folds",
    "read_split",
    "role_crossings",
    "split_by_site",
    "split_digest",
    "split_manifest",
    "write_split",
]

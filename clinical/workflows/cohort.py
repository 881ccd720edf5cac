"""From a cohort to a split with its leakage audit, as files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinical.cohort import cohort_digest, read_manifest
from clinical.splits import audit_split, read_split, split_by_site, split_manifest, write_split
from clinical.splits.inflation import N_SEEDS
from clinical.splits.report import inflation_folds

if TYPE_CHECKING:
    from clinical.training import TrainConfig

__all__ = ["audit_cohort", "split_cohort"]


def split_cohort(cohort_dir: str | Path, out: str | Path, *, previous: str | Path | None = None,
                 per_site: bool = False, **options: Any) -> dict[str, Any]:
    """Patient-level folds of the cohort written to ``out`` with the cohort's digest; returns the split's metadata.

    ``options`` are those of :func:`clinical.splits.split_manifest` (``folds``, ``seed``, ``by``, ...);
    ``previous`` is an earlier split file whose patients keep their places. ``per_site`` splits each
    site's patients on their own (:func:`clinical.splits.split_by_site`), as federated sites need.
    """
    manifest = read_manifest(cohort_dir)
    if per_site:
        split = split_by_site(manifest, **options)
    else:
        earlier = read_split(previous)[0] if previous is not None else None
        split = split_manifest(manifest, previous=earlier, **options)
    return write_split(split, out, cohort_digest=cohort_digest(manifest))


def audit_cohort(cohort_dir: str | Path, split_path: str | Path, report_path: str | Path, *,
                 recipe: TrainConfig | None = None, **options: Any) -> dict:
    """The split's leakage audit (:func:`clinical.splits.audit_split`), written as JSON to ``report_path``.

    With a ``recipe`` the inflation of an item-level split is measured with that recipe's network
    (:func:`clinical.workflows.trained_inflation`, its fits beside the report in ``<report stem>-inflation/``)
    instead of the quick logistic regression; it trains ``2 × folds × n_seeds`` models.
    """
    split, meta = read_split(split_path)
    if recipe is not None:
        options["inflation"] = False
    report = audit_split(read_manifest(cohort_dir), split, cohort_dir, meta=meta, **options)
    if recipe is not None:
        from clinical.workflows.inflation import trained_inflation  # torch loads when the audit trains, not to ingest

        report["inflation"] = trained_inflation(
            recipe, cohort_dir=cohort_dir, out=Path(report_path).parent / f"{Path(report_path).stem}-inflation",
            folds=inflation_folds(meta), seed=int(meta.get("seed") or 0), n_boot=options.get("n_boot", 1000),
            n_seeds=options.get("n_seeds", N_SEEDS))
    Path(report_path).write_text(json.dumps(report, indent=2, default=str))
    return report

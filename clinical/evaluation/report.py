"""How metrics are reported: a tidy table with CIs, "0.955 (0.953–0.956)", and "0.78 ± 0.10" over folds."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clinical.errors import ConfigurationError

__all__ = ["Report", "format_mean_sd", "format_metric", "summarize_folds"]

logger = logging.getLogger(__name__)


def format_metric(value: float, low: float | None = None, high: float | None = None, *, digits: int = 3) -> str:
    """Format a point estimate with its confidence interval, as papers print it.

    >>> format_metric(0.9551, 0.9532, 0.9564)
    '0.955 (0.953–0.956)'
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return text
    return f"{text} ({low:.{digits}f}–{high:.{digits}f})"


def format_mean_sd(mean: float, sd: float, *, digits: int = 2) -> str:
    """Format a cross-validated metric as mean ± standard deviation over folds.

    >>> format_mean_sd(0.7812, 0.1034)
    '0.78 ± 0.10'
    """
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if math.isfinite(sd) else f"{mean:.{digits}f}"


def summarize_folds(per_fold: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample SD (ddof=1) of each metric over cross-validation folds, as the studies report them.

    Parameters
    ----------
    per_fold
        One metrics dict per fold, e.g. from :func:`clinical.evaluation.score`. A metric missing
        or NaN in some folds (e.g. one class only) is summarised over the folds that have it.

    Returns
    -------
    dict
        ``{metric: {"mean": ..., "sd": ..., "n": folds counted}}``; ``sd`` is 0 for a single fold.
        Print with :func:`format_mean_sd` → ``"0.78 ± 0.10"``.

    Raises
    ------
    ConfigurationError
        No folds were given.
    """
    if not per_fold:
        raise ConfigurationError("summarize_folds needs the metrics of at least one fold; got none.")
    out: dict[str, dict[str, float]] = {}
    for name in sorted({name for fold in per_fold for name in fold}):
        values = np.array([fold.get(name, np.nan) for fold in per_fold], dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size < values.size:
            logger.info("%s is missing or NaN in %d of %d folds; summarised over the rest.", name,
                        values.size - finite.size, values.size)
        if finite.size:
            out[name] = {"mean": float(finite.mean()), "sd": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                         "n": int(finite.size)}
    return out


@dataclass(frozen=True)
class Report:
    """Point metrics with bootstrap confidence intervals, as :func:`clinical.evaluation.evaluate` returns them.

    Attributes
    ----------
    table
        Tidy table with columns ``metric, value, low, high`` (one row per metric).
    level
        Level the metrics were computed at (patient, study or item).
    n_units
        Labelled patients (or studies, items) scored.
    n_patients
        Patients, the unit the bootstrap resamples.
    n_boot
        Resamples drawn; ``n_skipped`` of them held one class only and were left out.
    ci
        Coverage of the intervals (0.95 for 95 % CIs).
    ci_method
        How they were formed from the resamples: ``"percentile"`` or ``"bca"``.
    aggregate
        How item probabilities became one per patient (study): ``"mean"``, ``"median"``, ``"max"``, or
        ``"none"`` at item level.
    threshold
        Operating point on ``prob_1`` (binary / multi-label), else None.
    classes
        Class names in class-index order.
    """

    table: pd.DataFrame
    level: str
    n_units: int
    n_patients: int
    n_boot: int
    n_skipped: int
    ci: float
    threshold: float | None
    classes: list[str] = field(default_factory=list)
    ci_method: str = "percentile"
    aggregate: str = "mean"

    def __getitem__(self, metric: str) -> tuple[float, float, float]:
        """``report["auroc"]`` → ``(value, low, high)``."""
        rows = self.table[self.table["metric"] == metric]
        if rows.empty:
            raise KeyError(f"no metric {metric!r} in this report; it has {self.table['metric'].tolist()}.")
        row = rows.iloc[0]
        return float(row["value"]), float(row["low"]), float(row["high"])

    def to_dict(self) -> dict[str, float]:
        """Flat numbers for logging: ``<metric>``, ``<metric>_low``, ``<metric>_high``, plus counts."""
        out: dict[str, float] = {}
        for row in self.table.itertuples(index=False):
            out[row.metric] = float(row.value)
            out[f"{row.metric}_low"] = float(row.low)
            out[f"{row.metric}_high"] = float(row.high)
        out |= {
            "n": float(self.n_units),
            "n_patients": float(self.n_patients),
            "n_boot": float(self.n_boot),
            "n_boot_skipped": float(self.n_skipped),
        }
        if self.threshold is not None:
            out["threshold"] = float(self.threshold)
        return out

    def to_table(self) -> pd.DataFrame:
        """The table as files record it: ``metric, value, low, high`` and, on every row, the ``level``, the
        ``aggregate`` (how item scores became a patient score) and the ``ci_method`` behind it, so that a
        metrics file read on its own says what its numbers are."""
        return self.table.assign(level=self.level, aggregate=self.aggregate, ci_method=self.ci_method)

    def formatted(self, *, digits: int = 3) -> dict[str, str]:
        """``{"auroc": "0.955 (0.953–0.956)", …}`` for tables and captions."""
        return {
            row.metric: format_metric(row.value, row.low, row.high, digits=digits)
            for row in self.table.itertuples(index=False)
        }

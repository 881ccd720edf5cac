"""Per-site performance: does the model work at every hospital, or only on average?"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from clinical.errors import PredictionsError
from clinical.evaluation.bootstrap import (
    bootstrap_metrics,
    check_bootstrap_options,
    point_metrics,
    prepare_units,
)
from clinical.evaluation.metrics import METRICS, check_threshold
from clinical.evaluation.predictions import Level
from clinical.stats import percentile_interval

__all__ = ["ALL_SITES", "SITE_GAP", "per_site"]

logger = logging.getLogger(__name__)

#: ``site`` value of the pooled row of :func:`per_site`.
ALL_SITES = "(all sites)"
#: ``site`` value of the rows holding the gap between the best and the worst site.
SITE_GAP = "(gap best–worst)"


def per_site(
    frame: pd.DataFrame,
    classes: Sequence[str],
    *,
    level: Level = "patient",
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
    ci: float = 0.95,
    metrics: Sequence[str] = METRICS,
) -> pd.DataFrame:
    """Metrics with patient-bootstrap CIs for every site, pooled, and the spread between sites.

    Parameters
    ----------
    frame
        A predictions frame with a ``site`` column. Items are split by site
        before aggregation, so a patient seen at two sites counts at both.
    classes
        Class names in class-index order.
    level, n_boot, seed, threshold, ci
        As in :func:`clinical.evaluation.evaluate`.
    metrics
        Metrics to tabulate (default: the headline :data:`METRICS`).

    Returns
    -------
    pandas.DataFrame
        Tidy table with columns ``site, metric, value, low, high, n, n_patients``:
        one row per site and metric, a pooled row (``site == ALL_SITES``), and a
        ``SITE_GAP`` row per metric whose value is the largest minus the smallest
        site value, with a CI from pairing the two sites' resamples (sites hold
        different patients, so their resamples are independent). Sites with one
        class only get NaN metrics (and a warning).

    Raises
    ------
    PredictionsError
        The frame has no ``site`` column.
    """
    check_bootstrap_options(n_boot, ci)
    if "site" not in frame.columns:
        raise PredictionsError(f"per_site needs a 'site' column; the frame has {list(frame.columns)}.")
    classes = list(classes)
    check_threshold(threshold, len(classes), "label" not in frame.columns)
    sites = sorted(frame["site"].dropna().astype(str).unique())
    seeds = np.random.default_rng(seed).integers(0, 2**32, size=len(sites) + 1)
    rows: list[dict] = []
    boots: dict[str, dict[str, np.ndarray]] = {}
    groups = [*((site, frame[frame["site"].astype(str) == site]) for site in sites), (ALL_SITES, frame)]
    for (site, items), site_seed in zip(groups, seeds, strict=True):
        units = prepare_units(items, classes, level=level)
        point = point_metrics(units, threshold=threshold)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            boot, _ = bootstrap_metrics(units, n_boot=n_boot, seed=int(site_seed), threshold=threshold)
        boots[site] = boot
        for metric in metrics:
            low, high = percentile_interval(boot[metric], ci)
            rows.append(
                {
                    "site": site,
                    "metric": metric,
                    "value": point[metric],
                    "low": low,
                    "high": high,
                    "n": len(units.clusters),
                    "n_patients": units.n_patients,
                }
            )
    table = pd.DataFrame(rows)
    for metric in metrics:
        values = table[(table["metric"] == metric) & table["site"].isin(sites)].set_index("site")["value"].dropna()
        if len(values) < 2:
            continue
        best, worst = values.idxmax(), values.idxmin()
        k = min(len(boots[best][metric]), len(boots[worst][metric]))
        low, high = percentile_interval(boots[best][metric][:k] - boots[worst][metric][:k], ci)
        rows.append(
            {
                "site": SITE_GAP,
                "metric": metric,
                "value": values[best] - values[worst],
                "low": low,
                "high": high,
                "n": np.nan,
                "n_patients": np.nan,
            }
        )
        logger.info("%s: sites range from %.3f to %.3f", metric, values[worst], values[best])
    table = pd.DataFrame(rows)
    table["n"] = table["n"].astype("Int64")
    table["n_patients"] = table["n_patients"].astype("Int64")
    return table

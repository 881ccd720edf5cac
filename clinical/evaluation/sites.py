"""Per-site performance: does the model work at every hospital, or only on average?"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import chi2

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

__all__ = ["ALL_SITES", "SITE_GAP", "gap_interval", "heterogeneity", "per_site"]

logger = logging.getLogger(__name__)

#: ``site`` value of the pooled row of :func:`per_site`.
ALL_SITES = "(all sites)"
#: ``site`` value of the rows holding the gap between the best and the worst site.
SITE_GAP = "(gap best–worst)"


def gap_interval(boots: dict[str, np.ndarray], ci: float) -> tuple[float, float]:
    """Interval of the range (largest minus smallest true site value) from simultaneous per-site intervals.

    Picking the best and worst sites by their point values and bootstrapping those two favours the noise
    that made them extreme (the interval excluded 0 in about 40 % of repetitions with six identical sites);
    re-picking them in every resample does not help, because a range of noisy values is positive in every
    resample. Instead every site gets a percentile interval at the Šidák level ``ci ** (1 / S)`` (sites
    hold different patients, so their resamples are independent); when all ``S`` cover, which happens with
    probability about ``ci``, the true range lies in ``[max(0, max low − min high), max high − min low]``.
    Conservative: 0 is excluded only when two sites' intervals are disjoint.
    """
    level = ci ** (1.0 / len(boots))
    bounds = np.array([percentile_interval(values, level) for values in boots.values()])
    if not np.all(np.isfinite(bounds)):
        return float("nan"), float("nan")
    low = max(0.0, float(bounds[:, 0].max() - bounds[:, 1].min()))
    return low, float(bounds[:, 1].max() - bounds[:, 0].min())


def heterogeneity(boots: dict[str, np.ndarray], values: pd.Series, sizes: pd.Series) -> tuple[float, float]:
    """Cochran's Q test that all sites share one true value, as in a meta-analysis of the sites.

    ``Q = sum_s w_s (v_s - v_w)**2``, ``v_w`` the ``w``-weighted mean, referred to chi-squared on ``S - 1``
    degrees of freedom. The weights are ``w_s = n_s / c``, with ``n_s`` the site's patients and ``c`` the
    mean of ``n_s var_s`` over sites (``var_s`` its bootstrap variance): a pooled variance shared out by
    size. Each site's own variance as its weight made the test liberal (8.75 % at a nominal 5 % with six
    identical sites, 6.5 % this way), because it moves with the site's own estimate (a high AUROC has a
    small variance).

    Returns
    -------
    (q, p_value)
        NaN when no site's resamples have any spread, or fewer than two sites remain.
    """
    variances = np.array([np.nanvar(np.asarray(boots[site], dtype=np.float64), ddof=1) for site in values.index])
    n = sizes[values.index].to_numpy(dtype=np.float64)
    scale = float(np.mean(variances * n)) if np.all(np.isfinite(variances)) else float("nan")
    if len(values) < 2 or not np.isfinite(scale) or scale <= 0:
        return float("nan"), float("nan")
    weights = n / scale
    v = values.to_numpy(dtype=np.float64)
    pooled = float((weights * v).sum() / weights.sum())
    q = float((weights * (v - pooled) ** 2).sum())
    return q, float(chi2.sf(q, len(v) - 1))


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
    aggregate: str = "mean",
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
    aggregate
        How a patient's (study's) items become one probability: ``"mean"``, ``"median"`` or ``"max"``,
        as in :func:`clinical.evaluation.evaluate`.

    Returns
    -------
    pandas.DataFrame
        Tidy table with columns ``site, metric, value, low, high, n, n_patients,
        p_value, aggregate`` (the aggregation used; ``"none"`` at item level): one row
        per site and metric, a pooled row (``site == ALL_SITES``),
        and a ``SITE_GAP`` row per metric whose value is the largest minus the
        smallest site value, with the interval of :func:`gap_interval` and, as
        ``p_value``, Cochran's Q test of heterogeneity between the sites
        (:func:`heterogeneity`; NaN in the other rows). Sites with one class
        only get NaN metrics (and a warning).

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
    points: dict[str, dict[str, float]] = {}
    sizes = pd.Series(dtype=np.float64)
    groups = [*((site, frame[frame["site"].astype(str) == site]) for site in sites), (ALL_SITES, frame)]
    for (site, items), site_seed in zip(groups, seeds, strict=True):
        units = prepare_units(items, classes, level=level, how=aggregate)
        point = point_metrics(units, threshold=threshold)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            boot, _ = bootstrap_metrics(units, n_boot=n_boot, seed=int(site_seed), threshold=threshold)
        boots[site] = boot
        points[site] = point
        sizes[site] = units.n_patients
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
                    "p_value": np.nan,
                }
            )
    for metric in metrics:
        values = pd.Series({site: points[site][metric] for site in sites}).dropna()
        if len(values) < 2:
            continue
        low, high = gap_interval({site: boots[site][metric] for site in values.index}, ci)
        q, p_value = heterogeneity({site: boots[site][metric] for site in values.index}, values, sizes)
        rows.append(
            {
                "site": SITE_GAP,
                "metric": metric,
                "value": float(values.max() - values.min()),
                "low": low,
                "high": high,
                "n": np.nan,
                "n_patients": np.nan,
                "p_value": p_value,
            }
        )
        logger.info(
            "%s: sites range from %.3f to %.3f; heterogeneity Q = %.2f on %d df, p = %.3g",
            metric,
            values.min(),
            values.max(),
            q,
            len(values) - 1,
            p_value,
        )
    table = pd.DataFrame(rows)
    table["n"] = table["n"].astype("Int64")
    table["n_patients"] = table["n_patients"].astype("Int64")
    table["aggregate"] = units.aggregate  # the pooled units', as every site's
    return table

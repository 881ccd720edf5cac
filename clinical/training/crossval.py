"""Cross-validation: one model per fold, summarised as mean ± SD over folds like the studies we follow."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from clinical.training.callbacks import Callback
from clinical.training.config import TrainConfig
from clinical.training.engine import fit
from clinical.training.result import FitResult

__all__ = ["cross_validate", "summarize"]

logger = logging.getLogger(__name__)


def cross_validate(
    config: TrainConfig,
    *,
    manifest: pd.DataFrame,
    cohort_dir: str | Path,
    split: pd.DataFrame,
    out: str | Path,
    folds: Sequence[int] | None = None,
    callbacks: Sequence[Callback] = (),
) -> list[FitResult]:
    """Fit one model per outer fold (all folds of ``split`` when ``folds`` is None), each in ``out/fold-<k>``."""
    if folds is None:
        outer = split[split["inner"] < 0] if "inner" in split.columns else split
        folds = sorted(int(f) for f in outer["fold"].unique())
    results = []
    for fold in folds:
        results.append(fit(config, manifest=manifest, cohort_dir=cohort_dir, split=split, fold=fold,
                           out=Path(out) / f"fold-{fold}", callbacks=tuple(callbacks)))
    summary = summarize(results)
    logger.info("Cross-validation over %d fold(s): %s", len(results),
                ", ".join(f"{k} {v['mean']:.3f} ± {v['sd']:.3f}" for k, v in summary.items()))
    return results


def summarize(results: Sequence[FitResult], *, part: str = "test") -> dict[str, dict[str, float]]:
    """Mean and sample SD (ddof=1) over folds of each metric of ``part`` (``"test"`` or ``"val"``).

    Folds whose metric is undefined (NaN, e.g. one class only) are left out of that metric's figures;
    ``n`` says how many folds counted.
    """
    tables = [r.test_metrics if part == "test" else r.val_metrics for r in results]
    names = sorted({k for t in tables for k in t})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        values = np.array([t[name] for t in tables if name in t], dtype=float)
        values = values[np.isfinite(values)]
        if len(values):
            out[name] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                         "n": len(values)}
    return out

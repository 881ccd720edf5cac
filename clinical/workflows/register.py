"""Register a cross-validated model and let the promotion gate decide whether it becomes the champion."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinical.errors import ConfigurationError
from clinical.evaluation.report import format_mean_sd
from clinical.tracking import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    apply_gate,
    decide_promotion,
    predict_registered,
    register_run_model,
    version_tags,
)
from clinical.workflows.crossval import TABLE_METRICS, CrossValidation

__all__ = ["RegisteredModel", "register_best_fold"]

logger = logging.getLogger(__name__)


@dataclass
class RegisteredModel:
    """A registered version and what the gate decided about it."""

    name: str
    version: str
    alias: str
    run_id: str
    decision: dict[str, Any] | None = field(default=None)


def register_best_fold(
    cv: CrossValidation,
    name: str,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    margin: float | None = None,
    alpha: float = 0.05,
) -> RegisteredModel:
    """Register the model of the fold that scored best on its own validation patients.

    The first version of ``name`` becomes champion; a later one is a
    challenger that faces the gate: it is compared with the current champion
    on the challenger's held-out test patients (paired, same patients). That
    is a fair test when the champion was trained on the same split (its
    ``clinical.split_digest`` tag) and so never saw those patients either; a
    warning says so when the splits differ. Registering a run that is already
    registered under ``name`` returns that version (reruns register nothing new).

    Raises
    ------
    ConfigurationError
        When the cross-validation was not tracked (there is no run to register).
    """
    runs = {run.fold: run for run in cv.fold_runs}
    best = max(cv.results, key=lambda r: r.best_score)
    run_id = runs[best.fold].run_id
    if run_id is None:
        raise ConfigurationError("Registration needs a tracked cross-validation; pass tracker=MlflowTracker(...).")
    tags = {"clinical.cohort_digest": cv.cohort_digest, "clinical.split_digest": cv.split_digest,
            "clinical.fold": str(best.fold)}
    tags |= {f"val_{k}": f"{v:.4f}" for k, v in best.val_metrics.items() if k in TABLE_METRICS}
    tags |= {f"cv_{k}": format_mean_sd(v["mean"], v["sd"]) for k, v in cv.summary.items() if k in TABLE_METRICS}
    champion_version = alias_version(name, CHAMPION)
    version, alias = register_run_model(run_id, name, tags=tags)
    registered = RegisteredModel(name, version, alias, run_id)
    if alias != CHALLENGER or champion_version in (None, version) or best.test_predictions is None:
        return registered
    if version_tags(name, champion_version).get("clinical.split_digest") != cv.split_digest:
        logger.warning("The champion was trained on another split; the gate's held-out patients may not be new to it.")
    champion = predict_registered(f"models:/{name}/{champion_version}", cohort_dir=cohort_dir, split_path=split_path,
                                  fold=best.fold, role="test")
    decision = decide_promotion(champion, best.test_predictions, best.classes, level=best.config.monitor_level,
                                margin=margin, alpha=alpha)
    registered.alias = apply_gate(name, version, decision)
    registered.decision = {"promote": decision.promote, "reason": decision.reason, **decision.comparison.to_dict()}
    return registered

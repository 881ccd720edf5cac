"""Register the cross-validated model to deploy, and let the promotion gate decide whether it becomes the champion.

The registered version is the cross-validation's final model (a refit on every
development patient by default, see :func:`clinical.workflows.fit_final_model`)
and carries the estimate cross-validation made of it: the pooled out-of-fold
metrics with their patient-bootstrap CIs and the mean ± SD over folds.

The gate compares champion and challenger on the split's gate set: patients
locked away when the split was made, on which neither model was trained,
selected or tested (``split_cohort(..., gate_size=0.15)``). Both models must
come from splits with the same gate set (the ``clinical.gate_digest`` tag);
otherwise, or when the split has none, nothing fair can be measured and the
challenger stays challenger, with the reason on its version.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinical.errors import ConfigurationError
from clinical.evaluation.report import format_mean_sd, format_metric
from clinical.splits import gate_patients, read_split
from clinical.tracking import (
    CHALLENGER,
    CHAMPION,
    GateDecision,
    alias_version,
    apply_gate,
    decide_promotion,
    predict_registered,
    register_run_model,
    version_tags,
)
from clinical.workflows.crossval import TABLE_METRICS, CrossValidation

__all__ = ["RegisteredModel", "register_model"]

logger = logging.getLogger(__name__)


@dataclass
class RegisteredModel:
    """A registered version, how it was made, and what the gate decided about it."""

    name: str
    version: str
    alias: str
    run_id: str
    final_model: str
    decision: dict[str, Any] | None = field(default=None)


def register_model(
    cv: CrossValidation,
    name: str,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    margin: float | None = None,
    alpha: float = 0.05,
    calibration_tolerance: float | None = 0.02,
) -> RegisteredModel:
    """Register the cross-validation's final model under ``name``; a later version faces the gate.

    The first version of ``name`` becomes champion. A later one is a challenger and is
    promoted only by :func:`clinical.tracking.decide_promotion` on the gate set (see the
    module docstring). Registering a run already registered under ``name`` returns that
    version (reruns register nothing new).

    Raises
    ------
    ConfigurationError
        When the cross-validation has no final model (``cross_validate(..., final="refit")``)
        or was not tracked (there is no run to register).
    """
    if cv.final is None:
        raise ConfigurationError(
            "The cross-validation has no final model to register; make it with cross_validate(..., final='refit') "
            "or fit_final_model(cv, ...)."
        )
    if cv.final.run_id is None:
        raise ConfigurationError("Registration needs a tracked cross-validation; pass tracker=MlflowTracker(...).")
    split, _ = read_split(split_path)
    gate = gate_patients(split)
    gate_digest = hashlib.sha256("\n".join(gate).encode()).hexdigest() if gate else ""
    table = cv.table.set_index("metric")
    tags = {"clinical.cohort_digest": cv.cohort_digest, "clinical.split_digest": cv.split_digest,
            "clinical.gate_digest": gate_digest, "clinical.final_model": str(cv.final_how)}
    if cv.final_how == "best-fold":
        tags["clinical.fold"] = str(cv.final.fold)
    tags |= {f"cv_{k}": format_mean_sd(v["mean"], v["sd"]) for k, v in cv.summary.items() if k in TABLE_METRICS}
    tags |= {f"pooled_{k}": format_metric(row.value, row.low, row.high)
             for k, row in table.iterrows() if k in TABLE_METRICS}
    champion_version = alias_version(name, CHAMPION)
    version, alias = register_run_model(cv.final.run_id, name, tags=tags)
    registered = RegisteredModel(name, version, alias, cv.final.run_id, final_model=str(cv.final_how))
    if alias != CHALLENGER or champion_version in (None, version):
        return registered
    decision = _gate(name, champion_version, version, cv, split_path=split_path, cohort_dir=cohort_dir,
                     gate=gate, gate_digest=gate_digest, margin=margin, alpha=alpha,
                     calibration_tolerance=calibration_tolerance)
    registered.alias = apply_gate(name, version, decision)
    registered.decision = {"promote": decision.promote, "reason": decision.reason,
                           **(decision.comparison.to_dict() if decision.comparison is not None else {})}
    return registered


def _gate(name: str, champion: str, challenger: str, cv: CrossValidation, *, split_path: str | Path,
          cohort_dir: str | Path, gate: list[str], gate_digest: str, margin: float | None, alpha: float,
          calibration_tolerance: float | None) -> GateDecision:
    """Champion against challenger on the gate set, or the reason no fair comparison exists."""
    if not gate:
        return GateDecision(False, "champion kept: the split has no gate set, so no patients are known to be unseen "
                                   "by both models (make the split with a gate_size, e.g. 0.15)")
    if version_tags(name, champion).get("clinical.gate_digest") != gate_digest:
        return GateDecision(False, "champion kept: the champion was not trained with this split's gate set locked "
                                   "away, so it may have seen those patients; compare the two by hand")
    fold = cv.fold_runs[0].fold
    frames = {which: predict_registered(f"models:/{name}/{version}", cohort_dir=cohort_dir, split_path=split_path,
                                        fold=fold, role="gate")
              for which, version in (("champion", champion), ("challenger", challenger))}
    logger.info("Gate: %s version %s against champion %s on %d gate patients.", name, challenger, champion,
                len(gate))
    return decide_promotion(frames["champion"], frames["challenger"], cv.results[0].classes,
                            level=cv.config.monitor_level, aggregate=cv.config.aggregate, margin=margin, alpha=alpha,
                            calibration_tolerance=calibration_tolerance,
                            patients="gate patients (locked away at split time)")

"""The model registry: versions, aliases and the promotion gate.

Aliases, never stages: ``champion`` is what serving and site fine-tuning use,
``challenger`` is the newest candidate, ``site-<name>`` a site's own
fine-tuned model. The first version of a name becomes champion; later ones
are challengers until the gate (:func:`decide_promotion`, :func:`apply_gate`) lets one through.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from clinical.errors import ConfigurationError
from clinical.evaluation.compare import Comparison, compare
from clinical.evaluation.metrics import score

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GateDecision",
    "alias_version",
    "apply_gate",
    "decide_promotion",
    "register_run_model",
    "set_alias",
    "site_alias",
    "version_tags",
]

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class GateDecision:
    """Whether a challenger replaces the champion, and why; written as tags on the challenger's version.

    ``comparison`` is ``None`` when no fair comparison could be made (see ``reason``).
    """

    promote: bool
    reason: str
    comparison: Comparison | None = None
    calibration: dict[str, float] | None = None
    patients: str = ""  # the set the compared predictions come from, e.g. the split's gate set

    def tags(self) -> dict[str, str]:
        tags = {"gate.promoted": str(self.promote).lower(), "gate.reason": self.reason[:5000]}
        c = self.comparison
        if c is not None:
            tags |= {
                f"gate.{c.metric}_difference": f"{c.difference:.4f}",
                f"gate.{c.metric}_difference_ci": f"{c.low:.4f} to {c.high:.4f}",
                "gate.p_value": f"{c.p_value:.4g}",
                "gate.patients": str(c.n_patients),
                "gate.patient_set": self.patients,
                "gate.level": c.level,
                "gate.aggregate": c.aggregate,
            }
        tags |= {f"gate.{k}": f"{v:.4f}" for k, v in (self.calibration or {}).items()}
        return tags


#: Metrics where lower is better: a better challenger has a negative difference.
_LOWER_IS_BETTER = ("brier", "ece")


def decide_promotion(
    champion: pd.DataFrame,
    challenger: pd.DataFrame,
    classes: Sequence[str],
    *,
    level: str = "patient",
    metric: str = "auroc",
    method: str = "delong",
    alpha: float = 0.05,
    margin: float | None = None,
    calibration_tolerance: float | None = 0.02,
    patients: str = "held-out patients",
    aggregate: str = "mean",
) -> GateDecision:
    """The promotion gate, on both models' predictions for the same patients, which neither may have seen.

    The challenger passes only when the whole ``1 - alpha`` interval of the paired difference
    (DeLong for a binary AUROC, a paired patient bootstrap otherwise) clears ``margin``
    (default 0: better, with confidence; a negative margin asks for non-inferiority), and its
    expected calibration error is not worse than the champion's by more than
    ``calibration_tolerance`` (``None``: calibration not checked). ``patients`` names the set
    the predictions come from, for the reason and the tags; ``aggregate`` is how items become a
    patient score (the recipe's), for the comparison and the calibration alike.
    """
    if not 0 < alpha < 1:
        raise ConfigurationError(f"The 'alpha' parameter of the promotion gate must be in (0, 1). Got {alpha!r}.")
    margin = 0.0 if margin is None else float(margin)
    comparison = compare(challenger, champion, classes, level=level, method=method, metric=metric, ci=1 - alpha,
                         aggregate=aggregate)
    if metric in _LOWER_IS_BETTER:
        clears = comparison.high < -margin
        rule = f"interval upper bound {comparison.high:+.4f} {'<' if clears else '≥'} {-margin:+.4f}"
    else:
        clears = comparison.low > margin
        rule = f"interval lower bound {comparison.low:+.4f} {'>' if clears else '≤'} margin {margin:+.4f}"
    calibration = None
    calibrated = True
    if calibration_tolerance is not None:
        ece = {name: float(score(frame, list(classes), level=level, aggregate=aggregate).get("ece", float("nan")))
               for name, frame in (("challenger_ece", challenger), ("champion_ece", champion))}
        calibrated = not ece["challenger_ece"] > ece["champion_ece"] + calibration_tolerance
        calibration = ece
        rule += (f"; ECE {ece['challenger_ece']:.3f} vs champion {ece['champion_ece']:.3f} "
                 f"({'within' if calibrated else 'beyond'} tolerance {calibration_tolerance:g})")
    promote = clears and calibrated
    verdict = "challenger promoted" if promote else "champion kept"
    reason = (f"{verdict}: {metric} difference {comparison.difference:+.4f} "
              f"({100 * (1 - alpha):g}% CI {comparison.low:+.4f} to {comparison.high:+.4f}), {rule}; "
              f"on {comparison.n_patients} {patients}")
    return GateDecision(promote=promote, reason=reason, comparison=comparison, calibration=calibration,
                        patients=patients)


def apply_gate(name: str, version: str, decision: GateDecision, *, client: MlflowClient | None = None) -> str:
    """Tag the challenger's version with the decision and move ``champion`` to it when it passed.

    Returns the alias the version holds afterwards.
    """
    client = client or MlflowClient()
    for key, value in decision.tags().items():
        client.set_model_version_tag(name, str(version), key, value)
    if not decision.promote:
        logger.info("%s version %s stays challenger: %s", name, version, decision.reason)
        return CHALLENGER
    set_alias(name, CHAMPION, version, client=client)
    if alias_version(name, CHALLENGER, client=client) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    logger.info("%s version %s is the new champion: %s", name, version, decision.reason)
    return CHAMPION


def site_alias(site: str) -> str:
    """The alias of a site's own model, ``site-<name>``, with the name made alias-safe."""
    name = re.sub(r"[^a-z0-9_-]+", "-", site.strip().lower()).strip("-")
    if not name:
        raise ConfigurationError(f"A site name must contain a letter or digit; got {site!r}.")
    return f"site-{name}"


def register_run_model(
    run_id: str,
    name: str,
    *,
    artifact_path: str = "model",
    tags: Mapping[str, str] | None = None,
    alias: str | None = None,
    client: MlflowClient | None = None,
) -> tuple[str, str]:
    """Register the model logged at ``runs:/<run_id>/<artifact_path>`` under ``name``.

    Returns ``(version, alias)``: the first version of a name becomes
    ``champion``; later ones become ``challenger`` and wait for the gate. A run
    already registered under ``name`` is not registered again: its version
    and current alias come back. With ``alias`` (e.g. ``site-<name>``) the
    version takes that alias instead and the champion is left alone.
    """
    client = client or MlflowClient()
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = str(existing[0].version)
        aliases = list(client.get_model_version(name, version).aliases)  # search results leave aliases out
        logger.info("%s already holds run %s as version %s; nothing registered", name, run_id, version)
        return version, CHAMPION if CHAMPION in aliases else (aliases[0] if aliases else "")
    version = mlflow.register_model(f"runs:/{run_id}/{artifact_path}", name, tags=dict(tags or {})).version
    alias = alias or (CHALLENGER if alias_version(name, CHAMPION, client=client) else CHAMPION)
    set_alias(name, alias, version, client=client)
    logger.info("Registered %s version %s as %s", name, version, alias)
    return str(version), alias


def alias_version(name: str, alias: str, *, client: MlflowClient | None = None) -> str | None:
    """The version an alias points to, or ``None`` when the alias (or the model) does not exist."""
    client = client or MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def set_alias(name: str, alias: str, version: str, *, client: MlflowClient | None = None) -> None:
    """Point ``alias`` at ``version`` (moving it if it pointed elsewhere)."""
    if not _ALIAS.match(alias) or re.fullmatch(r"v\d+", alias):
        raise ConfigurationError(
            f"Alias {alias!r} is not allowed: use lower-case letters, digits, '-' and '_', "
            "starting with a letter, and not of the form v<number> (MLflow reserves those)."
        )
    (client or MlflowClient()).set_registered_model_alias(name, alias, str(version))


def version_tags(name: str, version: str, *, client: MlflowClient | None = None) -> dict[str, str]:
    """The tags of one registered version (what it was trained on, what the gate decided)."""
    return dict((client or MlflowClient()).get_model_version(name, str(version)).tags)

"""Site-level fine-tuning: adapt the champion to one site's patients, keep it only when it is better there.

The champion (``models:/NAME@champion``) is fine-tuned on the site's own
training patients with the engine's progressive schedule capped at
``max_trainable_groups`` (the early groups stay frozen, so a few hundred
images suffice), tracked in MLflow like any fit, and compared with the
unchanged champion on the site's held-out patients (paired: DeLong for AUROC,
or a margin). Only a better model is registered, under the alias
``site-<name>``; the champion alias never moves.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinical.cohort.manifest import read_manifest
from clinical.errors import ConfigurationError
from clinical.federated.local import site_part
from clinical.splits import read_split, write_split
from clinical.tracking import MlflowTracker, decide_promotion, predict_registered, register_run_model, site_alias
from clinical.training import TrainConfig, load_result
from clinical.workflows.crossval import train_fold

__all__ = ["SiteFinetune", "site_finetune"]

logger = logging.getLogger(__name__)

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(@[A-Za-z0-9_-]+|/\d+)$")


@dataclass(frozen=True)
class SiteFinetune:
    """What site fine-tuning did: the run, the paired comparison and, when better, the registered version."""

    site: str
    run_id: str
    promoted: bool
    reason: str
    comparison: dict[str, Any]
    version: str | None
    alias: str | None


def site_finetune(
    site: str,
    model_uri: str,
    cohort_dir: str | Path,
    split_path: str | Path,
    *,
    config: TrainConfig,
    out: str | Path,
    fold: int = 0,
    experiment: str = "clinical",
    margin: float | None = None,
    alpha: float = 0.05,
) -> SiteFinetune:
    """Fine-tune ``model_uri`` on ``site``'s patients; register it as ``site-<name>`` only when it beats the champion.

    Parameters
    ----------
    site
        The site's name as in the manifest's ``site`` column.
    model_uri
        The registered starting model, ``models:/NAME@champion`` (or ``@alias``, ``/VERSION``).
    cohort_dir, split_path
        The cohort and its split; only the site's rows are used (train/val to fine-tune,
        test for the comparison).
    config
        The recipe; ``pretrained`` is set to ``model_uri``. Keep ``max_trainable_groups``
        small (default here: 2, the head and the last stage) so the early groups stay frozen.
    out
        Run folder of the fine-tuning fit (the site's split file is written there too).
    margin, alpha
        The gate (see :func:`clinical.tracking.decide_promotion`): beat the champion by
        ``margin``, or, without it, a paired DeLong test at level ``alpha``.

    Raises
    ------
    ConfigurationError
        When ``model_uri`` is not a ``models:/`` URI, or the site has no test patients.
    """
    match = _URI.match(model_uri)
    if match is None:
        raise ConfigurationError(
            f"model_uri must look like models:/NAME@champion or models:/NAME/3; got {model_uri!r}."
        )
    name = match.group("name")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _, split_rows = site_part(read_manifest(cohort_dir), read_split(split_path)[0], site)
    split_rows.attrs = {"split": {"site": site, "source": Path(split_path).name}}
    site_split = out / "site-split.parquet"
    write_split(split_rows, site_split)
    recipe = config.model_copy(update={"pretrained": model_uri,
                                       "max_trainable_groups": config.max_trainable_groups or 2})
    run = train_fold(recipe, cohort_dir=cohort_dir, split_path=site_split, fold=fold, out=out / "fit",
                     tracker=MlflowTracker(experiment), run_name=f"{site_alias(site)}-finetune")
    result = load_result(out / "fit")
    if result.test_predictions is None or result.test_predictions.empty:
        raise ConfigurationError(f"Site {site!r} has no test patients in fold {fold}; the comparison needs them.")
    champion = predict_registered(model_uri, cohort_dir=cohort_dir, split_path=site_split, fold=fold, role="test")
    decision = decide_promotion(champion, result.test_predictions, result.classes,
                                level=recipe.monitor_level, aggregate=recipe.aggregate, margin=margin, alpha=alpha,
                                patients=f"test patients of site {site!r}, fold {fold}")
    comparison = decision.comparison.to_dict()
    if not decision.promote:
        logger.info("Site %s keeps the champion: %s", site, decision.reason)
        return SiteFinetune(site=site, run_id=run.run_id, promoted=False, reason=decision.reason,
                            comparison=comparison, version=None, alias=None)
    alias = site_alias(site)
    version, _ = register_run_model(run.run_id, name, tags={**decision.tags(), "clinical.site": alias}, alias=alias)
    logger.info("Site %s: %s version %s registered as %s (%s).", site, name, version, alias, decision.reason)
    return SiteFinetune(site=site, run_id=run.run_id, promoted=True, reason=decision.reason, comparison=comparison,
                        version=version, alias=alias)

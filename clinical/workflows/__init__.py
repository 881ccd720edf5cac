"""Use cases, one function each: what the CLI, the notebooks and the Prefect flows call.

``ingest_cohort`` → ``split_cohort`` and ``audit_cohort`` (``trained_inflation``: what an item-level split
costs the study's own recipe) → ``pretrain`` →
``cross_validate`` (train the folds → pool the out-of-fold predictions →
metrics with patient CIs) → ``fit_final_model`` (a refit on every development patient) →
``register_model`` (the promotion gate, on the split's locked gate set) →
``screen_with_uncertainty`` (screening per eye and patient, with uncertainty, referral and conformal sets),
``site_finetune``, ``federate`` and ``track_federation``, ``compare_training``; ``report_model`` (the
report of a registered version) and ``predict_to_pacs`` (a study's prediction back into the PACS);
``train_slide_mil`` (whole slides from weak labels: attention MIL against tile aggregation);
``slice_cohort`` (a volume cohort and its split as those of their axial slices);
``run_study`` (one of the six studies: its arms, a table shaped like the paper's, one figure).
Tracking is the optional ``tracker`` argument
(:class:`~clinical.tracking.MlflowTracker`); without it the same files are
written and nothing is sent. The callers reach training, tracking and
federation only through this package (a contract in ``pyproject.toml``), so
the recipe objects they need are re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clinical.lazy import lazy_exports

#: Name → module it comes from, loaded on first use (:mod:`clinical.lazy`).
_SOURCES = {
    "RunSettings": "clinical.federated.settings",
    "pretrain": "clinical.training.pretraining",
    "CHAMPION": "clinical.tracking",
    "FILE_COLUMN": "clinical.tracking",
    "alias_version": "clinical.tracking",
    "MlflowTracker": "clinical.tracking",
    "load_registered": "clinical.tracking",
    "ServingLimits": "clinical.tracking.pyfunc",
    "ServeSettings": "clinical.tracking.serve",
    "build_app": "clinical.tracking.serve",
    "serve_model": "clinical.tracking.serve",
    "TrainConfig": "clinical.training",
    "load_config": "clinical.training",
    "audit_cohort": "clinical.workflows.cohort",
    "ingest_cohort": "clinical.workflows.ingest",
    "split_cohort": "clinical.workflows.cohort",
    "slice_cohort": "clinical.workflows.slices",
    "trained_inflation": "clinical.workflows.inflation",
    "bytes_curve": "clinical.workflows.compare",
    "compare_training": "clinical.workflows.compare",
    "CrossValidation": "clinical.workflows.crossval",
    "FoldRun": "clinical.workflows.crossval",
    "FinalModel": "clinical.workflows.crossval",
    "cross_validate": "clinical.workflows.crossval",
    "fit_final_model": "clinical.workflows.crossval",
    "format_summary": "clinical.workflows.crossval",
    "open_cross_validation": "clinical.workflows.crossval",
    "pool_folds": "clinical.workflows.crossval",
    "read_cross_validation": "clinical.workflows.crossval",
    "train_fold": "clinical.workflows.crossval",
    "RegisteredFederation": "clinical.workflows.federation",
    "federate": "clinical.workflows.federation",
    "track_federation": "clinical.workflows.federation",
    "RegisteredModel": "clinical.workflows.register",
    "register_model": "clinical.workflows.register",
    "ModelReport": "clinical.workflows.report",
    "report_model": "clinical.workflows.report",
    "PacsPrediction": "clinical.workflows.pacs",
    "predict_to_pacs": "clinical.workflows.pacs",
    "Screening": "clinical.workflows.screening",
    "read_grades": "clinical.workflows.screening",
    "screen_with_uncertainty": "clinical.workflows.screening",
    "SiteFinetune": "clinical.workflows.site",
    "SlideMIL": "clinical.workflows.slides",
    "train_slide_mil": "clinical.workflows.slides",
    "site_finetune": "clinical.workflows.site",
    "STUDIES": "clinical.workflows.studies",
    "StudyResult": "clinical.workflows.studies",
    "run_study": "clinical.workflows.studies",
}

if TYPE_CHECKING:
    from clinical.federated.settings import RunSettings
    from clinical.tracking import CHAMPION, FILE_COLUMN, MlflowTracker, alias_version, load_registered
    from clinical.tracking.pyfunc import ServingLimits
    from clinical.tracking.serve import ServeSettings, build_app, serve_model
    from clinical.training import TrainConfig, load_config
    from clinical.training.pretraining import pretrain
    from clinical.workflows.cohort import audit_cohort, split_cohort
    from clinical.workflows.compare import bytes_curve, compare_training
    from clinical.workflows.crossval import (
        CrossValidation,
        FinalModel,
        FoldRun,
        cross_validate,
        fit_final_model,
        format_summary,
        open_cross_validation,
        pool_folds,
        read_cross_validation,
        train_fold,
    )
    from clinical.workflows.federation import RegisteredFederation, federate, track_federation
    from clinical.workflows.inflation import trained_inflation
    from clinical.workflows.ingest import ingest_cohort
    from clinical.workflows.pacs import PacsPrediction, predict_to_pacs
    from clinical.workflows.register import RegisteredModel, register_model
    from clinical.workflows.report import ModelReport, report_model
    from clinical.workflows.screening import Screening, read_grades, screen_with_uncertainty
    from clinical.workflows.site import SiteFinetune, site_finetune
    from clinical.workflows.slices import slice_cohort
    from clinical.workflows.slides import SlideMIL, train_slide_mil
    from clinical.workflows.studies import STUDIES, StudyResult, run_study


__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)

__all__ = [
    "CHAMPION",
    "FILE_COLUMN",
    "STUDIES",
    "CrossValidation",
    "FinalModel",
    "FoldRun",
    "MlflowTracker",
    "ModelReport",
    "PacsPrediction",
    "RegisteredFederation",
    "RegisteredModel",
    "RunSettings",
    "Screening",
    "ServeSettings",
    "ServingLimits",
    "SiteFinetune",
    "SlideMIL",
    "StudyResult",
    "TrainConfig",
    "alias_version",
    "audit_cohort",
    "build_app",
    "bytes_curve",
    "compare_training",
    "cross_validate",
    "federate",
    "fit_final_model",
    "format_summary",
    "ingest_cohort",
    "load_config",
    "load_registered",
    "open_cross_validation",
    "pool_folds",
    "predict_to_pacs",
    "pretrain",
    "read_cross_validation",
    "read_grades",
    "register_model",
    "report_model",
    "run_study",
    "screen_with_uncertainty",
    "serve_model",
    "site_finetune",
    "slice_cohort",
    "split_cohort",
    "track_federation",
    "train_fold",
    "train_slide_mil",
    "trained_inflation",
]

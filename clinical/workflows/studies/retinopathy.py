"""Referable diabetic retinopathy: a carefully trained ResNet-18 against the same network trained plainly.

The paper's claim is that careful training of a standard network is a strong baseline, with no novelty in the
architecture. Both arms are therefore the same ResNet-18 on the same photographs and folds; only the recipe
differs:

- **careful** (reference): more epochs with warm-up and cosine decay, label smoothing, a class-weighted loss,
  MixUp on top of the photo preset's augmentation, early stopping on the validation AUROC;
- **plain**: a few epochs at one learning rate, nothing else tuned.

Each arm is scored out of fold at eye level and at patient level (a patient is referable when either eye
is: the worse eye), with patient-bootstrap CIs and the corrected t-test over folds. Each arm's
fold models then screen their test photographs with test-time-augmentation uncertainty
(:func:`clinical.workflows.screen_with_uncertainty`, by the entropy of the mean TTA probability, logged
under the arm's MLflow run): the table adds the
AUROC on the photographs kept when the least certain fifth is referred to a grader, the mean uncertainty
in the low- and high-quality bands, and the coverage of the conformal sets; the report by DR grade is in
each arm's ``screening`` folder (and, in short, in the findings).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from clinical.evaluation import evaluate
from clinical.evaluation.metrics import score
from clinical.evaluation.screening import worse_eye
from clinical.tracking import MlflowTracker
from clinical.training import TrainConfig
from clinical.workflows.crossval import cross_validate
from clinical.workflows.screening import Screening, read_grades, screen_with_uncertainty
from clinical.workflows.studies.arms import ArmResult, StudyResult, arm_from_cv, finish_study
from clinical.workflows.studies.cohorts import study_cohort, study_split

__all__ = ["SIZES", "TITLE", "run"]

logger = logging.getLogger(__name__)

TITLE = "Referable DR: careful vs plain training of the same ResNet-18 (eye and patient AUROC)"
REFERENCE = "careful ResNet-18"
PLAIN = "plain ResNet-18"
METRICS = ("patient_auroc", "eye_auroc")
EXTRA = ("auroc_kept_80", "kept_share", "uncertainty_low_quality", "uncertainty_high_quality", "conformal_coverage")
#: Share of the validation photographs each fold's model keeps; the rest go to a grader.
COVERAGE = 0.8

#: Cohort counts, folds and training budget of each size.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"spec": {"fundus_patients_per_site": 5, "fundus_size": 64}, "folds": 2,
             "image_size": (32, 32), "careful_epochs": 2, "plain_epochs": 1, "batch_size": 32, "passes": 2,
             "n_boot": 100},
    "full": {"spec": {"fundus_patients_per_site": 20, "fundus_size": 96}, "folds": 3,
             "image_size": (48, 48), "careful_epochs": 6, "plain_epochs": 2, "batch_size": 32, "passes": 4,
             "n_boot": 1000},
}


def recipes(settings: dict[str, Any], *, seed: int) -> dict[str, TrainConfig]:
    """The two arms' recipes: the same network, input and model choice on the eyes' validation AUROC.

    The label is per eye and a patient's two eyes may differ, so training monitors eyes; the patient level
    (worse eye, referable when either eye is) is scored afterwards with :func:`worse_eye`.
    """
    common = {"model": "resnet18", "kind": "photo", "in_channels": 3, "image_size": settings["image_size"],
              "batch_size": settings["batch_size"], "schedule": "full", "monitor_level": "item",
              "seed": seed}
    careful = TrainConfig.build(**common, epochs=settings["careful_epochs"], lr=1e-3, warmup_epochs=1.0,
                                label_smoothing=0.1, class_balance="weighted-loss", mixup_alpha=0.2, mix_prob=0.5,
                                weight_decay=0.05, early_stopping_patience=max(3, settings["careful_epochs"] // 3))
    plain = TrainConfig.build(**common, epochs=settings["plain_epochs"], lr=1e-3, warmup_epochs=0.0,
                              weight_decay=0.0, early_stopping_patience=None)
    return {REFERENCE: careful, PLAIN: plain}


def run(out: Path, *, size: str, cohort: str | Path | None, seed: int, tracker: MlflowTracker | None,
        coverage: float = COVERAGE, alpha: float = 0.1, ray_address: str | None = None) -> StudyResult:
    """Run both arms and screen with each. On the user's ``cohort`` (ingested fundus photographs with the
    quality score, two eyes per patient) the report by grade is left out, since grades come from the
    synthetic ground truth."""
    settings = SIZES[size]
    cohort_dir, raw = study_cohort(out, "fundus", cohort=cohort, size="tiny", seed=seed, spec=settings["spec"])
    split = study_split(cohort_dir, out / "split.parquet", folds=settings["folds"], seed=seed)
    grades = read_grades(raw / "ground_truth.csv", raw) if raw is not None else None
    arms, by_grade = [], {}
    for i, (name, config) in enumerate(recipes(settings, seed=seed).items()):
        folder = out / "arms" / f"arm-{i}"
        cv = cross_validate(config, cohort_dir=cohort_dir, split_path=split, out=folder, tracker=tracker,
                            run_name=name, n_boot=settings["n_boot"], ray_address=ray_address)
        screening = screen_with_uncertainty(cv, cohort_dir=cohort_dir, split_path=split, grades=grades,
                                            passes=settings["passes"], coverage=coverage, alpha=alpha,
                                            n_boot=settings["n_boot"], tracker=tracker)
        arm = arm_from_cv(name, cv, split, **screening_columns(screening))
        arms.append(with_eye_and_patient_levels(arm, cv.pooled, [r.test_predictions for r in cv.results],
                                                cv.results[0].classes, n_boot=settings["n_boot"], seed=seed))
        if screening.by_grade is not None:
            by_grade[name] = screening.by_grade.set_index("grade")["uncertainty"].round(4).to_dict()
    careful, plain = (next(a for a in arms if a.name == n) for n in (REFERENCE, PLAIN))
    findings = {
        "careful_minus_plain_patient_auroc": _pooled(careful, "patient_auroc") - _pooled(plain, "patient_auroc"),
        "careful_minus_plain_eye_auroc": _pooled(careful, "eye_auroc") - _pooled(plain, "eye_auroc"),
        "uncertainty_higher_in_low_quality": {a.name: bool(a.extra["uncertainty_low_quality"]
                                                           > a.extra["uncertainty_high_quality"]) for a in arms},
        "referral_raises_auroc": {a.name: bool(a.extra["auroc_kept_80"] > a.extra["auroc_tta_all"]) for a in arms},
        "mean_uncertainty_by_grade": by_grade, "coverage_asked": coverage, "conformal_alpha": alpha,
        "folds": settings["folds"],
    }
    return finish_study("retinopathy", arms, out=out, metrics=METRICS, reference=REFERENCE, title=TITLE,
                        tracker=tracker, extra=EXTRA, findings=findings)


def screening_columns(screening: Screening) -> dict[str, float]:
    """The table's screening columns: AUROC on the kept photographs (and on all, with the same TTA predictions,
    to compare), uncertainty by quality band, conformal coverage."""
    bands = screening.by_quality.set_index("quality_band")["uncertainty"]
    point = screening.summary["operating_point"]
    metrics = screening.metrics
    every = metrics.loc[(metrics["level"] == "eye") & (metrics["metric"] == "auroc"), "value"]
    return {"auroc_kept_80": float(point["kept"]["auroc"]), "kept_share": float(point["kept_share"]),
            "auroc_tta_all": float(every.iloc[0]) if not every.empty else math.nan,
            "uncertainty_low_quality": float(bands.get("low", math.nan)),
            "uncertainty_high_quality": float(bands.get("high", math.nan)),
            "conformal_coverage": float(screening.summary["conformal"]["coverage"])}


def with_eye_and_patient_levels(arm: ArmResult, pooled: pd.DataFrame, folds: list[pd.DataFrame | None],
                                classes: list[str], *, n_boot: int, seed: int) -> ArmResult:
    """The arm scored at eye level and at patient level (worse eye), per fold and pooled with patient CIs.

    Cross-validation scores the monitored (eye) level only; screening reports both, so both go in the table
    as ``eye_<metric>`` and ``patient_<metric>``; the patient carries the worse eye's probability and label.
    """
    levels = {"eye": lambda frame: frame, "patient": lambda frame: worse_eye(frame, classes)}
    tables, fold_scores = [], dict(arm.fold_scores)
    with warnings.catch_warnings():  # small cohorts warn about their wide intervals; the table shows them
        warnings.simplefilter("ignore", UserWarning)
        for prefix, level in levels.items():
            table = evaluate(level(pooled), classes, level="item", n_boot=n_boot, seed=seed).to_table()
            tables.append(table.assign(metric=prefix + "_" + table["metric"]))
            per_fold = [score(level(frame), classes, level="item") for frame in folds if frame is not None]
            for metric in ("auroc", "balanced_accuracy", "sensitivity", "specificity"):
                fold_scores[f"{prefix}_{metric}"] = [float(s.get(metric, math.nan)) for s in per_fold]
    arm.pooled = pd.concat([arm.pooled, *tables], ignore_index=True)
    arm.fold_scores = fold_scores
    return arm


def _pooled(arm: ArmResult, metric: str) -> float:
    rows = arm.pooled.loc[arm.pooled["metric"] == metric, "value"]
    return float(rows.iloc[0]) if not rows.empty else math.nan

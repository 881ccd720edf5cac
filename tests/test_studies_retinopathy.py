"""The retinopathy study at tiny size: both arms (careful and plain ResNet-18) scored at eye and patient level
with ordered patient CIs, the patient level the worse eye, the paired test over folds, and each arm's
screening (kept share, uncertainty by quality band and by grade, conformal coverage) written and tabled."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clinical.evaluation.metrics import score
from clinical.evaluation.screening import worse_eye
from clinical.workflows.studies import run_study
from clinical.workflows.studies.retinopathy import EXTRA, METRICS, PLAIN, REFERENCE, SIZES


@pytest.fixture(scope="module")
def study(module_tmp):
    return run_study("retinopathy", module_tmp("retinopathy"), size="tiny")


def test_both_arms_at_eye_and_patient_level_with_ordered_cis_and_the_paired_test(study):
    table = study.table.set_index("arm")
    assert list(table.index) == [REFERENCE, PLAIN]
    for metric in METRICS:
        value, low, high = (table[f"{metric}_{s}"] for s in ("pooled", "low", "high"))
        assert value.notna().all() and (low <= value).all() and (value <= high).all()
    assert table.loc[REFERENCE, "n_folds"] == table.loc[PLAIN, "n_folds"] == SIZES["tiny"]["folds"]
    assert 0 <= table.loc[PLAIN, "p_vs_reference"] <= 1 and pd.isna(table.loc[REFERENCE, "diff_vs_reference"])
    for arm in study.arms:
        assert all(len(arm.fold_scores[m]) == SIZES["tiny"]["folds"] for m in METRICS)
    markdown = study.markdown
    assert all(name in markdown for name in (*EXTRA, "patient_auroc pooled (95% CI)", "reference"))


def test_the_patient_level_is_the_worse_eye_of_the_pooled_out_of_fold_predictions(study):
    for arm in study.arms:
        pooled = pd.read_parquet(f"{arm.out}/cv/predictions_pooled_test.parquet")
        assert pooled["item_id"].is_unique and pooled.groupby("patient_key").size().eq(2).all()  # two eyes each
        classes = ["non-referable", "referable"]
        expected = score(worse_eye(pooled, classes), classes, level="item")["auroc"]
        got = arm.pooled.set_index("metric").loc["patient_auroc", "value"]
        assert got == pytest.approx(expected)


def test_each_arm_screens_with_uncertainty_by_quality_band_and_grade_and_conformal_sets(study):
    for arm in study.arms:
        extra = arm.extra
        assert 0 < extra["kept_share"] <= 1 and 0 <= extra["conformal_coverage"] <= 1
        assert np.isfinite(extra["uncertainty_low_quality"]) and np.isfinite(extra["uncertainty_high_quality"])
        folder = f"{arm.out}/screening"
        metrics = pd.read_csv(f"{folder}/screening_metrics.csv")
        assert set(metrics["level"]) == {"eye", "patient"}
        by_grade = pd.read_csv(f"{folder}/uncertainty_by_grade.csv")
        assert set(by_grade["grade"]) <= {0, 1, 2, 3, 4} and len(by_grade) >= 3
    record = json.loads((study.out / "study.json").read_text())
    assert set(record["findings"]["mean_uncertainty_by_grade"]) == {REFERENCE, PLAIN}
    assert (study.out / "summary.png").stat().st_size > 0

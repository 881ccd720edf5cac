"""Paired comparison of two models: DeLong's test and the paired patient bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from evaluation_helpers import clustered_binary, multiclass_items
from scipy.special import expit, logit
from scipy.stats import t as student_t
from scipy.stats import ttest_rel
from sklearn.metrics import roc_auc_score

from clinical.errors import ConfigurationError, PredictionsError
from clinical.evaluation import aggregate, compare, compare_folds, delong_test

BINARY = ["negative", "positive"]


def _noisier(frame: pd.DataFrame, sd: float, seed: int) -> pd.DataFrame:
    """The same patients scored by a worse model: extra noise on the logit of every item."""
    out = frame.copy()
    out["prob_1"] = expit(logit(frame["prob_1"]) + np.random.default_rng(seed).normal(0, sd, len(frame)))
    out["prob_0"] = 1 - out["prob_1"]
    return out


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    return clustered_binary(np.random.default_rng(11), n_patients=200, items_per_patient=2, patient_sd=0.7)


def test_delong_aucs_are_the_mann_whitney_aucs(good):
    patients = aggregate(good, BINARY)
    worse = aggregate(_noisier(good, 1.0, 0), BINARY)
    auc_a, auc_b, difference, low, high, p = delong_test(patients["label"], patients["prob_1"], worse["prob_1"])
    assert auc_a == pytest.approx(roc_auc_score(patients["label"], patients["prob_1"]))
    assert auc_b == pytest.approx(roc_auc_score(worse["label"], worse["prob_1"]))
    assert low < difference < high and 0 <= p <= 1


def test_delong_agrees_with_the_paired_bootstrap_and_detects_the_better_model(good):
    worse = _noisier(good, 2.0, 1)
    delong = compare(good, worse, BINARY, method="delong")
    boot = compare(good, worse, BINARY, method="bootstrap", n_boot=2000, seed=3)
    assert delong.difference == pytest.approx(boot.difference)
    assert delong.difference > 0.05
    assert delong.p_value < 0.01 and boot.p_value < 0.01
    assert delong.low > 0 and boot.low > 0
    assert delong.high - delong.low == pytest.approx(boot.high - boot.low, rel=0.25)  # same standard error, roughly
    reverse = compare(worse, good, BINARY)
    assert reverse.difference == pytest.approx(-delong.difference) and reverse.p_value == pytest.approx(delong.p_value)


def test_two_equally_good_models_are_not_called_different(good):
    other = _noisier(good, 0.05, 2)
    result = compare(good, other, BINARY)
    assert result.p_value > 0.05 and result.low < 0 < result.high
    same = compare(good, good, BINARY)
    assert same.difference == 0 and same.p_value == 1.0
    assert same.to_dict()["method"] == "delong"


def test_bootstrap_compares_other_metrics_and_multiclass_tasks():
    rng = np.random.default_rng(4)
    a = multiclass_items(rng, n=180, signal=2.5)
    b = a.copy()
    b[["prob_0", "prob_1", "prob_2"]] = (a[["prob_0", "prob_1", "prob_2"]].to_numpy() + 1.0) / 4.0  # flattened
    result = compare(a, b, ["x", "y", "z"], method="bootstrap", metric="brier", n_boot=300)
    assert result.difference < 0 and result.high < 0  # A has the lower (better) Brier score
    with pytest.raises(ConfigurationError, match="DeLong's test compares binary AUROCs"):
        compare(a, b, ["x", "y", "z"], method="delong")


def test_frames_must_cover_the_same_patients_with_the_same_labels(good):
    fewer = good[good["patient_key"] != "pat5"]
    with pytest.raises(PredictionsError, match="same labelled patients"):
        compare(good, fewer, BINARY)
    relabelled = good.assign(label=np.where(good["patient_key"] == "pat5", 1 - good["label"], good["label"]))
    with pytest.raises(PredictionsError, match="disagree on the labels"):
        compare(good, relabelled, BINARY)
    shuffled = good.sample(frac=1.0, random_state=0)  # row order does not matter
    assert compare(good, shuffled, BINARY).difference == pytest.approx(0.0)


def test_delong_with_zero_variance_is_certain_of_a_nonzero_difference():
    """A perfect against a constant model: AUROC 1 against 0.5 with no variance at all; pROC gives p = 0."""
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    perfect = y.astype(float)
    constant = np.full(y.size, 0.5)
    auc_a, auc_b, difference, low, high, p = delong_test(y, perfect, constant)
    assert (auc_a, auc_b, difference) == (1.0, 0.5, 0.5)
    assert p == 0.0 and low == high == 0.5
    assert delong_test(y, constant, perfect)[-1] == 0.0
    assert delong_test(y, perfect, perfect)[-1] == 1.0  # no difference and no variance: nothing to test


def test_corrected_resampled_t_test_matches_a_hand_computation():
    a = [0.80, 0.75, 0.78, 0.82, 0.77]
    b = [0.76, 0.74, 0.73, 0.80, 0.75]
    # by hand: d = (0.04, 0.01, 0.05, 0.02, 0.02), mean 0.028, sample variance 0.00027,
    # corrected variance 0.00027 * (1/5 + 40/160) = 0.0001215, t = 0.028 / 0.011023 = 2.5402 on 4 df
    result = compare_folds(a, b, n_train=160, n_test=40)
    se = np.sqrt(0.00027 * (1 / 5 + 40 / 160))
    assert result.difference == pytest.approx(0.028)
    assert result.t == pytest.approx(0.028 / se) and result.t == pytest.approx(2.5402, abs=1e-4)
    assert result.df == 4 and result.n_folds == 5 and result.test_train_ratio == pytest.approx(0.25)
    assert result.p_value == pytest.approx(2 * student_t.sf(0.028 / se, 4))
    half = student_t.ppf(0.975, 4) * se
    assert (result.low, result.high) == (pytest.approx(0.028 - half), pytest.approx(0.028 + half))
    naive = ttest_rel(a, b).pvalue  # the uncorrected paired t-test is much too sure
    assert naive < 0.05 < result.p_value
    per_fold = compare_folds(a, b, n_train=[160, 160, 161, 159, 160], n_test=[40, 40, 39, 41, 40])
    assert per_fold.p_value == pytest.approx(result.p_value, rel=0.02)
    assert compare_folds(a, a, 160, 40).p_value == 1.0
    assert compare_folds([0.9, 0.9], [0.8, 0.8], 160, 40).p_value == 0.0
    with pytest.raises(ConfigurationError, match="at least 2 folds"):
        compare_folds([0.8], [0.7], 160, 40)
    with pytest.raises(ConfigurationError, match="n_train"):
        compare_folds(a, b, n_train=0, n_test=40)

"""Paired comparison of two models: DeLong's test and the paired patient bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from evaluation_helpers import clustered_binary, multiclass_items
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

from clinical.errors import ConfigurationError, PredictionsError
from clinical.evaluation import aggregate, compare, delong_test

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

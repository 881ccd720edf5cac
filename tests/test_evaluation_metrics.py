"""The predictions frame, aggregation and point metrics agree with scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from evaluation_helpers import clustered_binary, multiclass_items
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from clinical.errors import ConfigurationError, PredictionsError
from clinical.evaluation import (
    METRICS,
    aggregate,
    choose_threshold,
    expected_calibration_error,
    score,
    validate_predictions,
)

BINARY = ["negative", "positive"]
THREE = ["glioma", "meningioma", "pituitary"]


@pytest.fixture(scope="module")
def binary_frame() -> pd.DataFrame:
    return clustered_binary(np.random.default_rng(1), n_patients=80, items_per_patient=4)


@pytest.fixture(scope="module")
def three_class_frame() -> pd.DataFrame:
    return multiclass_items(np.random.default_rng(2), n=240)


def test_binary_item_metrics_match_scikit_learn(binary_frame):
    y = binary_frame["label"].to_numpy()
    p = binary_frame["prob_1"].to_numpy()
    threshold = 0.4
    pred = (p >= threshold).astype(int)
    got = score(binary_frame, BINARY, level="item", threshold=threshold)
    assert list(got)[: len(METRICS)] == list(METRICS)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert got["auprc"] == pytest.approx(average_precision_score(y, p))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(f1_score(y, pred))
    assert got["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert got["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert got["brier"] == pytest.approx(brier_score_loss(y, p))
    assert got["n"] == len(binary_frame)
    assert got["threshold"] == threshold


def test_patient_level_scores_the_mean_probability_per_patient(binary_frame):
    means = binary_frame.groupby("patient_key")[["label", "prob_1"]].mean()
    got = score(binary_frame, BINARY)  # level="patient" is the default
    assert got["n"] == binary_frame["patient_key"].nunique()
    assert got["auroc"] == pytest.approx(roc_auc_score(means["label"], means["prob_1"]))
    assert got["brier"] == pytest.approx(brier_score_loss(means["label"], means["prob_1"]))


def test_multiclass_metrics_match_scikit_learn(three_class_frame):
    y = three_class_frame["label"].to_numpy()
    probs = three_class_frame[["prob_0", "prob_1", "prob_2"]].to_numpy()
    pred = probs.argmax(axis=1)
    got = score(three_class_frame, THREE, level="item")
    assert got["auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    onehot = np.eye(3)[y]
    assert got["auprc"] == pytest.approx(average_precision_score(onehot, probs, average="macro"))
    assert got["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert got["brier"] == pytest.approx(brier_score_loss(y, probs, labels=[0, 1, 2]))
    for k, name in enumerate(THREE):
        assert got[f"auroc_{name}"] == pytest.approx(roc_auc_score(y == k, probs[:, k]))
        assert got[f"f1_{name}"] == pytest.approx(f1_score(y == k, pred == k))
    assert "threshold" not in got


def test_multilabel_metrics_match_scikit_learn():
    rng = np.random.default_rng(3)
    n, c = 150, 3
    targets = (rng.random((n, c)) < 0.4).astype(int)
    probs = np.clip(0.3 * targets + rng.random((n, c)) * 0.7, 0, 1)
    frame = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "patient_key": [f"p{i}" for i in range(n)]})
    for k in range(c):
        frame[f"label_{k}"] = targets[:, k]
        frame[f"prob_{k}"] = probs[:, k]
    got = score(frame, ["effusion", "nodule", "edema"], level="item")
    assert got["auroc"] == pytest.approx(roc_auc_score(targets, probs, average="macro"))
    assert got["auprc"] == pytest.approx(average_precision_score(targets, probs, average="macro"))
    assert got["f1"] == pytest.approx(f1_score(targets, probs >= 0.5, average="macro"))
    assert got["auroc_nodule"] == pytest.approx(roc_auc_score(targets[:, 1], probs[:, 1]))


def test_one_class_gives_nan_with_a_warning(binary_frame):
    negatives = binary_frame[binary_frame["label"] == 0]
    with pytest.warns(UndefinedMetricWarning, match="only one class"):
        got = score(negatives, BINARY, level="item")
    assert np.isnan(got["auroc"])
    assert got["specificity"] == pytest.approx((negatives["prob_1"] < 0.5).mean())


def test_unknown_labels_are_left_out(binary_frame):
    frame = binary_frame.copy()
    frame["label"] = frame["label"].astype("Int64")
    frame.loc[frame.index[:8], "label"] = pd.NA  # the first two patients' items
    got = score(frame, BINARY)
    assert got["n"] == binary_frame["patient_key"].nunique() - 2


def test_aggregate_averages_items_and_keeps_the_keys(binary_frame):
    patients = aggregate(binary_frame, BINARY)
    expected = binary_frame.groupby("patient_key")["prob_1"].mean()
    assert patients.set_index("patient_key")["prob_1"].to_dict() == pytest.approx(expected.to_dict())
    assert (patients["n_items"] == 4).all()
    assert {"patient_key", "site", "label", "prob_0", "prob_1"} <= set(patients.columns)
    studies = aggregate(binary_frame, BINARY, level="study")
    assert {"study_key", "patient_key"} <= set(studies.columns)
    assert aggregate(patients, BINARY)["prob_1"].tolist() == pytest.approx(patients["prob_1"].tolist())  # idempotent


def test_aggregate_max_is_the_most_suspicious_item_and_unknown_labels_do_not_conflict():
    frame = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "patient_key": ["p", "p", "q"],
            "label": pd.array([1, pd.NA, 0], dtype="Int64"),
            "prob_0": [0.2, 0.6, 0.9],
            "prob_1": [0.8, 0.4, 0.1],
        }
    )
    out = aggregate(frame, BINARY, how="max").set_index("patient_key")
    assert out.loc["p", "label"] == 1
    assert out.loc["p", "prob_1"] == pytest.approx(0.8) and out.loc["p", "prob_0"] == pytest.approx(0.2)
    three = frame.assign(prob_2=0.0)
    out = aggregate(three, ["a", "b", "c"], how="max").set_index("patient_key")
    assert out.loc["p", "prob_1"] == pytest.approx(0.8 / 1.4)  # multi-class: each class's max, renormalised


def test_aggregate_refuses_conflicting_labels(binary_frame):
    frame = binary_frame.copy()
    frame.loc[frame.index[0], "label"] = 1 - frame.loc[frame.index[0], "label"]
    with pytest.raises(PredictionsError, match="different known values in 'label'"):
        aggregate(frame, BINARY)
    assert score(frame, BINARY, level="item")["n"] == len(frame)  # item level has no such constraint


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="prob_1"), "lacks columns"),
        (lambda f: f.assign(prob_1=f["prob_1"] * 0.5), "sum to 1"),
        (lambda f: f.assign(prob_0=f["prob_0"] - 2.0, prob_1=f["prob_1"] + 2.0), r"\[0, 1\]"),
        (lambda f: f.assign(label=2), "0…1"),
        (lambda f: f.assign(prob_2=0.0), "beyond the 2 classes"),
    ],
)
def test_validate_predictions_explains_what_is_wrong(binary_frame, change, message):
    with pytest.raises(PredictionsError, match=message):
        validate_predictions(change(binary_frame), BINARY)


def test_bad_parameters_are_configuration_errors(binary_frame, three_class_frame):
    with pytest.raises(ConfigurationError, match="level must be one of"):
        score(binary_frame, BINARY, level="slide")
    with pytest.raises(ConfigurationError, match="argmax"):
        score(three_class_frame, THREE, threshold=0.3)
    with pytest.raises(ConfigurationError, match="at least 2 classes"):
        score(binary_frame, ["only"])


def test_youden_threshold_maximises_j_and_sensitivity_target_is_met(binary_frame):
    patients = aggregate(binary_frame, BINARY)
    y, p = patients["label"].to_numpy(int), patients["prob_1"].to_numpy()
    threshold = choose_threshold(binary_frame, BINARY, method="youden")
    j = [((p >= t) & (y == 1)).sum() / y.sum() - ((p >= t) & (y == 0)).sum() / (y == 0).sum() for t in p]
    chosen = score(binary_frame, BINARY, threshold=threshold)
    assert chosen["sensitivity"] + chosen["specificity"] - 1 == pytest.approx(max(j))
    for target in (0.8, 0.95):
        t = choose_threshold(binary_frame, BINARY, method="sensitivity", target=target)
        got = score(binary_frame, BINARY, threshold=t)
        assert got["sensitivity"] >= target
        fpr, tpr, _ = roc_curve(y, p)
        assert got["specificity"] == pytest.approx(1 - fpr[np.argmax(tpr >= target)])


def test_ece_of_a_known_case():
    # two bins: confidence 0.2 (observed 0.5) and 0.9 (observed 1.0): ECE = 0.5 * 0.3 + 0.5 * 0.1
    y = np.array([0, 1, 1, 1])
    p1 = np.array([0.2, 0.2, 0.9, 0.9])
    assert expected_calibration_error(y, np.column_stack([1 - p1, p1])) == pytest.approx(0.2)


def test_score_is_quiet_on_ordinary_data(binary_frame):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score(binary_frame, BINARY)

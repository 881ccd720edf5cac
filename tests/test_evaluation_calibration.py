"""Calibration: temperature scaling fixes over-confidence without changing the ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from sklearn.calibration import calibration_curve

from clinical.errors import ConfigurationError
from clinical.evaluation import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_table,
    score,
)

CLASSES = ["normal", "benign", "malignant"]
TRUE_TEMPERATURE = 2.5


def _overconfident(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the model outputs z * 2.5, i.e. over-confident logits."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.2, (n, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(z, axis=1)])
    return z * TRUE_TEMPERATURE, y


def _frame(logits: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    probs = softmax(logits, axis=1)
    frame = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(len(y))], "patient_key": [f"p{i}" for i in range(len(y))], "label": y}
    )
    for k in range(probs.shape[1]):
        frame[f"prob_{k}"] = probs[:, k]
    return frame


def test_temperature_scaling_recovers_the_temperature_and_reduces_ece():
    val_logits, val_y = _overconfident(0)
    test_logits, test_y = _overconfident(1)
    temperature = fit_temperature(val_logits, val_y)
    assert temperature == pytest.approx(TRUE_TEMPERATURE, rel=0.12)
    before = expected_calibration_error(test_y, softmax(test_logits, axis=1))
    after = expected_calibration_error(test_y, apply_temperature(test_logits, temperature))
    assert before > 0.1
    assert after < before / 2
    # probabilities work as well as logits (softmax is shift-invariant per row)
    assert fit_temperature(softmax(val_logits, axis=1), val_y) == pytest.approx(temperature, rel=1e-3)


def test_temperature_on_frames_keeps_auroc_and_improves_calibration():
    val, test = _frame(*_overconfident(2)), _frame(*_overconfident(3))
    temperature = fit_temperature(val)
    scaled = apply_temperature(test, temperature)
    before, after = score(test, CLASSES, level="item"), score(scaled, CLASSES, level="item")
    assert after["balanced_accuracy"] == before["balanced_accuracy"]  # the argmax does not move
    assert after["ece"] < before["ece"] / 2
    assert after["brier"] < before["brier"]
    assert test["prob_0"].tolist() == softmax(_overconfident(3)[0], axis=1)[:, 0].tolist()  # input left alone


def test_binary_auroc_is_unchanged_by_temperature():
    logits, y = _overconfident(7, n=500)
    frame = _frame(logits[:, :2], (y == 1).astype(int))
    scaled = apply_temperature(frame, fit_temperature(frame))
    assert score(scaled, ["no", "yes"], level="item")["auroc"] == pytest.approx(
        score(frame, ["no", "yes"], level="item")["auroc"], abs=1e-12
    )


def test_an_underconfident_model_gets_a_temperature_below_one():
    logits, y = _overconfident(4)
    assert fit_temperature(logits / (TRUE_TEMPERATURE * 2), y) < 1.0


def test_reliability_table_is_scikit_learns_calibration_curve_with_counts():
    logits, y = _overconfident(5, n=800)
    binary_logits = logits[:, :2]
    binary_y = (y == 1).astype(int)
    frame = _frame(binary_logits, binary_y)
    table = reliability_table(frame, ["no", "yes"], level="item", n_bins=8)
    prob_true, prob_pred = calibration_curve(binary_y, frame["prob_1"], n_bins=8)
    np.testing.assert_allclose(table["prob_true"], prob_true)
    np.testing.assert_allclose(table["prob_pred"], prob_pred)
    assert table["count"].sum() == len(frame) and (table["count"] > 0).all()
    quantile = reliability_table(frame, ["no", "yes"], level="item", n_bins=5, strategy="quantile")
    assert quantile["count"].sum() == len(frame)


def test_bad_temperature_inputs_are_refused():
    logits, y = _overconfident(6, n=50)
    with pytest.raises(ConfigurationError, match="labels must be None"):
        fit_temperature(_frame(logits, y), y)
    with pytest.raises(ConfigurationError, match=r"shape \(N, C\)"):
        fit_temperature(logits[:, 0], y)
    with pytest.raises(ConfigurationError, match="positive"):
        apply_temperature(logits, 0.0)
    with pytest.raises(ConfigurationError, match="labels"):
        fit_temperature(logits, y[:-1])

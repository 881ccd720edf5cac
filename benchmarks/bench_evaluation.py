"""Patient-bootstrap CIs of the 8 headline metrics: ``evaluate`` against scikit-learn called once per resample.

2,000 patients with 5 items each, binary, patient level, 500 resamples. The
baseline draws the same kind of patient resample and calls scikit-learn's
metric functions on it, which is what a hand-rolled loop would do; ours turns
every resample into a weight vector and computes all of them at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    recall_score,
    roc_auc_score,
)

from benchmarks.report import best_of, emit
from clinical.evaluation import aggregate, evaluate, expected_calibration_error

N_PATIENTS, ITEMS, N_BOOT = 2_000, 5, 500
CLASSES = ["negative", "positive"]


def make_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(N_PATIENTS) < 0.3).astype(int)
    patient = np.repeat(np.arange(N_PATIENTS), ITEMS)
    score = y[patient] + rng.normal(0, 1, N_PATIENTS)[patient] + rng.normal(0, 0.5, patient.size)
    p1 = 1 / (1 + np.exp(-(score - 0.5)))
    return pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(patient.size)],
            "patient_key": [f"p{k}" for k in patient],
            "study_key": [f"s{k}" for k in patient],
            "site": "A",
            "label": y[patient],
            "prob_0": 1 - p1,
            "prob_1": p1,
        }
    )


def sklearn_bootstrap(frame: pd.DataFrame) -> np.ndarray:
    patients = aggregate(frame, CLASSES)
    y, p = patients["label"].to_numpy(int), patients["prob_1"].to_numpy()
    rng = np.random.default_rng(0)
    out = []
    for _ in range(N_BOOT):
        idx = rng.integers(0, len(y), len(y))
        yb, pb = y[idx], p[idx]
        pred = (pb >= 0.5).astype(int)
        out.append(
            [
                roc_auc_score(yb, pb),
                average_precision_score(yb, pb),
                balanced_accuracy_score(yb, pred),
                f1_score(yb, pred),
                recall_score(yb, pred),
                recall_score(1 - yb, 1 - pred),
                brier_score_loss(yb, pb),
                expected_calibration_error(yb, np.column_stack([1 - pb, pb])),
            ]
        )
    return np.quantile(np.array(out), [0.025, 0.975], axis=0)


def main() -> None:
    frame = make_frame()
    ours = best_of(lambda: evaluate(frame, CLASSES, n_boot=N_BOOT, seed=0), repeat=3)
    theirs = best_of(lambda: sklearn_bootstrap(frame), repeat=1)
    report = evaluate(frame, CLASSES, n_boot=N_BOOT, seed=0)
    baseline_ci = sklearn_bootstrap(frame)
    emit(
        "patient_bootstrap_8_metrics_2k_patients_500_resamples",
        ours=round(ours, 3),
        baseline=round(theirs, 3),
        unit="s",
        higher_is_better=False,
        patients=N_PATIENTS,
        items=N_PATIENTS * ITEMS,
        resamples=N_BOOT,
        auroc_ci_ours=[round(v, 3) for v in report["auroc"][1:]],
        auroc_ci_baseline=[round(float(v), 3) for v in baseline_ci[:, 0]],
    )


if __name__ == "__main__":
    main()

"""The statistics kernel against scikit-learn as the oracle, and the cluster bootstrap's resamples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from clinical.errors import ConfigurationError
from clinical.stats import (
    bca_interval,
    bin_edges,
    calibration_error,
    jackknife_chunks,
    lost_class,
    macro_auroc,
    one_vs_rest,
    percentile_interval,
    ranking_metrics,
    resample_chunks,
    resample_weights,
    roc_counts,
)


def _binary(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    y[:2] = [0, 1]
    score = np.round(0.8 * y + rng.normal(0.0, 0.6, n), 1)  # rounded: many ties
    return y, score


def test_unit_weights_equal_scikit_learn_with_ties():
    y, score = _binary(0)
    assert len(np.unique(score)) < len(score) / 2
    auroc, ap = ranking_metrics(y, score)
    assert auroc.shape == ap.shape == (1,)
    assert auroc[0] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert ap[0] == pytest.approx(average_precision_score(y, score), abs=1e-12)


@pytest.mark.parametrize("kind", ["multiplicities", "real"])
def test_each_weight_row_equals_scikit_learn_with_that_sample_weight(kind):
    y, score = _binary(1)
    rng = np.random.default_rng(2)
    if kind == "multiplicities":
        weights = resample_weights(np.arange(len(y)) // 4, 20, rng)
    else:
        weights = rng.gamma(2.0, 1.0, (20, len(y)))
    auroc, ap = ranking_metrics(y, score, weights)
    assert auroc.shape == ap.shape == (20,)
    for b, w in enumerate(weights):
        assert auroc[b] == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(y, score, sample_weight=w), abs=1e-12)


def test_roc_counts_are_scikit_learns_roc_curve():
    y, score = _binary(3)
    w = np.random.default_rng(4).gamma(2.0, 1.0, len(y))
    tp, fp = roc_counts(y, score, w)
    fpr, tpr, _ = roc_curve(y, score, sample_weight=w, drop_intermediate=False)
    np.testing.assert_allclose(fp[0] / fp[0, -1], fpr[1:], atol=1e-12)  # scikit-learn starts at (0, 0)
    np.testing.assert_allclose(tp[0] / tp[0, -1], tpr[1:], atol=1e-12)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_macro_auroc_is_roc_auc_score_of_the_probability_matrix(n_classes):
    rng = np.random.default_rng(0)
    y = rng.integers(0, n_classes, 300)
    proba = rng.dirichlet(np.ones(n_classes), 300)
    proba[:20] = proba[20:40]  # ties
    if n_classes == 2:
        expected = roc_auc_score(y, proba[:, 1])
    else:
        expected = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=np.arange(n_classes))
    assert macro_auroc(y, proba)[0] == pytest.approx(expected, abs=1e-12)


def test_one_vs_rest_equals_scikit_learn_per_class():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 250)
    probs = np.round(rng.dirichlet(np.ones(4), 250), 2)
    w = rng.integers(0, 3, (3, 250)).astype(float)
    aurocs, aps = one_vs_rest(y, probs, w)
    assert aurocs.shape == aps.shape == (3, 4)
    for b in range(3):
        for k in range(4):
            yk = (y == k).astype(int)
            assert aurocs[b, k] == pytest.approx(roc_auc_score(yk, probs[:, k], sample_weight=w[b]), abs=1e-12)
            assert aps[b, k] == pytest.approx(
                average_precision_score(yk, probs[:, k], sample_weight=w[b]), abs=1e-12
            )


def test_a_resample_with_one_class_is_nan_and_flagged_as_scikit_learn_has_it_undefined():
    y, score = _binary(6, n=40)
    w = np.ones((3, len(y)))
    w[1, y == 1] = 0.0  # no positive drawn
    w[2, y == 0] = 0.0  # no negative drawn
    auroc, ap = ranking_metrics(y, score, w)
    assert np.isfinite(auroc[0]) and np.isfinite(ap[0])
    assert np.isnan(auroc[1:]).all() and np.isnan(ap[1:]).all()
    assert lost_class(y, w).tolist() == [False, True, True]
    drawn = w[1] > 0  # the rows such a resample repeats
    with pytest.warns(UndefinedMetricWarning, match="Only one class"):
        assert np.isnan(roc_auc_score(y[drawn], score[drawn]))
    none_kept = ranking_metrics(y, score, w[:0])  # every resample skipped
    assert none_kept[0].shape == (0,)


def test_lost_class_checks_each_label_of_a_multilabel_task_and_ignores_unknowns():
    labels = np.array([[0, 1], [1, -1], [1, 0], [0, -1]])
    weights = np.array(
        [
            [1.0, 1.0, 1.0, 1.0],  # everything present
            [1.0, 0.0, 0.0, 1.0],  # label 0 lost its 1s
            [0.0, 1.0, 1.0, 1.0],  # label 1 lost its 1 (row 0); its unknowns do not count
            [1.0, 1.0, 1.0, 0.0],  # row 3 gone, but label 0 keeps a 0 (row 0)
        ]
    )
    assert lost_class(labels, weights).tolist() == [False, True, True, False]


def _direct_ece(confidence: np.ndarray, outcome: np.ndarray, w: np.ndarray, n_bins: int) -> float:
    """Guo et al.'s ECE bin by bin: bins (e_k, e_k+1], the first one closed at 0."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total, ece = w.sum(), 0.0
    for k in range(n_bins):
        inside = (confidence > edges[k]) & (confidence <= edges[k + 1])
        if k == 0:
            inside |= confidence == 0.0
        if w[inside].sum() > 0:
            frequency = np.average(outcome[inside], weights=w[inside])
            mean_confidence = np.average(confidence[inside], weights=w[inside])
            ece += w[inside].sum() / total * abs(frequency - mean_confidence)
    return ece


def test_ece_equals_a_direct_computation_and_calibration_curve():
    rng = np.random.default_rng(7)
    confidence = np.r_[rng.random(300) ** 2, 0.0, 0.3, 0.5, 1.0]  # edge values go to the lower bin
    outcome = (rng.random(confidence.size) < confidence**0.7).astype(float)
    weights = np.vstack([np.ones(confidence.size), rng.gamma(2.0, 1.0, (4, confidence.size))])
    for n_bins in (5, 10, 15):
        got = calibration_error(confidence, outcome, weights, n_bins=n_bins)
        for b, w in enumerate(weights):
            assert got[b] == pytest.approx(_direct_ece(confidence, outcome, w, n_bins), abs=1e-12)
        prob_true, prob_pred = calibration_curve(outcome, confidence, n_bins=n_bins)
        counts = np.bincount(np.searchsorted(bin_edges(n_bins)[1:-1], confidence), minlength=n_bins)
        expected = (counts[counts > 0] / confidence.size * np.abs(prob_true - prob_pred)).sum()
        assert got[0] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(calibration_error(confidence, outcome, np.zeros(confidence.size), n_bins=10)[0])
    with pytest.raises(ConfigurationError, match="n_bins must be a positive integer"):
        calibration_error(confidence, outcome, n_bins=0)


def test_cluster_bootstrap_resamples_whole_groups():
    groups = np.array(["p3", "p1", "p3", "p2", "p1", "p1", "p4"])
    weights = resample_weights(groups, 2000, np.random.default_rng(0))
    assert weights.shape == (2000, 7)
    for group in np.unique(groups):
        rows = weights[:, groups == group]
        assert (rows == rows[:, :1]).all()  # a group's rows are drawn together
    per_group = np.column_stack([weights[:, groups == g][:, 0] for g in np.unique(groups)])
    assert (per_group.sum(axis=1) == 4).all()  # as many groups drawn as there are
    assert per_group.mean() == pytest.approx(1.0, abs=0.05)  # each group drawn once on average
    again = resample_weights(groups, 2000, np.random.default_rng(0))
    np.testing.assert_array_equal(weights, again)


def test_resample_chunks_bound_memory_and_keep_groups_whole():
    groups = np.repeat(np.arange(50), 3)
    chunks = list(resample_chunks(groups, 101, np.random.default_rng(1), max_entries=20 * groups.size))
    assert [len(c) for c in chunks] == [20, 20, 20, 20, 20, 1]
    weights = np.concatenate(chunks)
    assert (weights[:, 0::3] == weights[:, 1::3]).all() and (weights[:, 0::3] == weights[:, 2::3]).all()
    assert (weights[:, 0::3].sum(axis=1) == 50).all()


def test_percentile_interval_ignores_nan():
    values = np.r_[np.linspace(0.0, 1.0, 101), np.nan, np.nan]
    assert percentile_interval(values, 0.9) == pytest.approx((0.05, 0.95))
    low, high = percentile_interval(np.full(4, np.nan), 0.95)
    assert np.isnan(low) and np.isnan(high)


def test_weights_of_the_wrong_width_are_refused():
    y, score = _binary(8, n=10)
    with pytest.raises(ConfigurationError, match=r"weights must have shape \(n_resamples, 10\)"):
        ranking_metrics(y, score, np.ones((3, 9)))


def test_jackknife_leaves_out_one_whole_group_per_row():
    groups = np.array(["b", "a", "b", "c", "a"])
    rows = np.vstack(list(jackknife_chunks(groups, max_entries=7)))  # several chunks
    assert rows.shape == (3, 5)
    np.testing.assert_array_equal(rows, [[1, 0, 1, 1, 0], [0, 1, 0, 1, 1], [1, 1, 1, 0, 1]])
    assert (rows[0] == (groups != "a")).all() and (rows[2] == (groups != "c")).all()


def test_bca_is_the_percentile_interval_without_bias_or_skew_and_shifts_with_bias():
    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 1.0, 20_001)
    symmetric = np.array([-1.0, 0.0, 1.0])
    low, high = bca_interval(values, float(np.median(values)), symmetric, 0.95)
    assert (low, high) == pytest.approx(percentile_interval(values, 0.95), abs=1e-9)
    shifted = bca_interval(values, 0.5, symmetric, 0.95)  # the resamples sit below the estimate: shift up
    assert shifted[0] > low and shifted[1] > high
    skewed = bca_interval(values, float(np.median(values)), np.array([0.0, 0.0, 0.0, 3.0]), 0.95)
    assert skewed != pytest.approx((low, high))
    assert bca_interval(np.full(10, 0.7), 0.7, symmetric, 0.95) == (0.7, 0.7)

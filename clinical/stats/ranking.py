"""Weighted ROC and precision–recall: cumulative counts, AUROC and average precision per weight row.

Written by hand because scikit-learn's ``roc_auc_score`` and
``average_precision_score`` take one ``sample_weight`` vector per call: a
bootstrap of 1000 resamples would call them 1000 times, and their input
checks alone dominate (see ``benchmarks/bench_evaluation.py``). Here one sort
serves every resample. With unit weights the values equal scikit-learn's.
"""

from __future__ import annotations

import numpy as np

from clinical.errors import ConfigurationError
from clinical.stats._weights import weight_matrix

__all__ = ["macro_auroc", "one_vs_rest", "ranking_metrics", "roc_counts"]


def _per_threshold(y: np.ndarray, score: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Weight of positives and of negatives at each distinct score, highest score first: shapes (B, G)."""
    y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
    if score.size == 0:
        raise ConfigurationError("no rows to rank; a ranking metric needs at least one scored row.")
    w = weight_matrix(weights, y.shape[0])
    order = np.argsort(score, kind="stable")[::-1]
    s, positive, w = score[order], (y[order] == 1).astype(np.float64), w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return np.add.reduceat(w * positive, starts, axis=1), np.add.reduceat(w * (1.0 - positive), starts, axis=1)


def roc_counts(y: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true- and false-positive weight at each distinct score, thresholds descending.

    Parameters
    ----------
    y
        1 for a positive row, anything else for a negative one; shape (N,).
    score
        Score per row (higher means more likely positive), shape (N,).
    weights
        Non-negative ``(B, N)`` weights (bootstrap multiplicities); None for unit weights.

    Returns
    -------
    (tp, fp)
        Each of shape (B, G) for the G distinct scores: ``tp[:, -1]`` and
        ``fp[:, -1]`` are the total positive and negative weight. Dividing by
        them gives the points of :func:`sklearn.metrics.roc_curve` (without its
        leading (0, 0) and with ``drop_intermediate=False``).
    """
    pos, neg = _per_threshold(y, score, weights)
    return np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)


def ranking_metrics(
    y: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted AUROC and average precision of a binary task for each row of ``weights``.

    Parameters are those of :func:`roc_counts`.

    Returns
    -------
    (auroc, average_precision)
        Each of shape (B,); NaN where one class has zero weight, as neither is
        defined there (scikit-learn warns and gives NaN for the AUROC, 0 for
        the average precision); a bootstrap skips such resamples, see
        :func:`clinical.stats.lost_class`. Ties count one half in AUROC (the
        Mann–Whitney statistic) and form one threshold in average precision,
        as in scikit-learn.
    """
    pos, neg = _per_threshold(y, score, weights)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    w_pos, w_neg = tp[:, -1], fp[:, -1]
    below = w_neg[:, None] - fp  # negative weight strictly below each threshold
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (pos * (below + 0.5 * neg)).sum(axis=1) / (w_pos * w_neg)
        ap = (pos * precision).sum(axis=1) / w_pos
    one_class = (w_pos <= 0) | (w_neg <= 0)
    auroc[one_class] = ap[one_class] = np.nan
    return auroc, ap


def one_vs_rest(y: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision of each class against the rest: shapes (B, C) each.

    ``y`` holds class indices (N,), ``probs`` the scores (N, C); a class
    absent from a resample gets NaN.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    pairs = [ranking_metrics((y == k).astype(np.int64), probs[:, k], weights) for k in range(probs.shape[1])]
    return np.column_stack([a for a, _ in pairs]), np.column_stack([p for _, p in pairs])


def macro_auroc(y: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """:func:`sklearn.metrics.roc_auc_score` of a probability matrix for each row of ``weights``: shape (B,).

    Two columns: the AUROC of column 1 (``roc_auc_score(y, probs[:, 1])``).
    More: the unweighted mean of the one-vs-rest AUROCs
    (``multi_class="ovr", average="macro"``), NaN where a class has zero weight.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 2:
        return ranking_metrics((np.asarray(y) == 1).astype(np.int64), probs[:, 1], weights)[0]
    return one_vs_rest(y, probs, weights)[0].mean(axis=1)

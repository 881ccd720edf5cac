"""Stratified assignment of whole groups (patients, studies) to folds.

This is scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold`
greedy algorithm, taken at the group level: groups are shuffled with the
seed, sorted by how unevenly their items spread over the classes, and each is
placed in the fold that keeps the class proportions most even (ties go to the
smaller fold). With the same seed it gives the same folds as scikit-learn
(a test checks it).

Written here rather than wrapped because scikit-learn evaluates one candidate
fold at a time in Python (12 s for 100,000 items from 30,000 patients) and
cannot start from folds that already hold patients; evaluating all folds at
once, on a class-count matrix, makes the same choices about ten times faster
(``benchmarks/bench_splits.py``), and the same function serves three needs: single-label counts, multi-label
counts (one column per label plus one for the item count) and a growing
cohort (``initial`` holds the counts of the patients already placed).
"""

from __future__ import annotations

import numpy as np

__all__ = ["assign_groups"]


def assign_groups(
    counts: np.ndarray,
    n_bins: int,
    *,
    seed: int,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """Assign each group to one of ``n_bins`` folds, balancing class proportions.

    Parameters
    ----------
    counts
        ``(n_groups, n_columns)`` non-negative counts: how many items of each
        class (or carrying each label) a group holds.
    n_bins
        Number of folds, at least 2.
    seed
        Seeds the shuffle that breaks ties between equally uneven groups, as
        ``random_state`` does in scikit-learn.
    initial
        ``(n_bins, n_columns)`` counts already in each fold (groups placed
        earlier that must not move); zeros when omitted.

    Returns
    -------
    numpy.ndarray
        ``(n_groups,)`` integer fold index of each group, in input order.
    """
    counts = np.asarray(counts, dtype=float)
    n_groups, n_columns = counts.shape
    per_fold = np.zeros((n_bins, n_columns)) if initial is None else np.array(initial, dtype=float)
    totals = counts.sum(axis=0) + per_fold.sum(axis=0)
    totals[totals == 0] = 1.0  # a column nobody holds cannot be unbalanced; avoid 0/0

    rng = np.random.RandomState(seed)
    perm = np.arange(n_groups)
    rng.shuffle(perm)
    order = perm[np.argsort(-np.std(counts[perm], axis=1), kind="stable")]

    eye = np.eye(n_bins)[:, :, None]
    sizes = per_fold.sum(axis=1).tolist()
    group_sizes = counts.sum(axis=1).tolist()
    assignment = np.empty(n_groups, dtype=np.int64)
    for group in order.tolist():
        group_counts = counts[group]
        proportions = (per_fold[None, :, :] + eye * group_counts) / totals
        # np.std and np.mean spelled out (same operations, same rounding) to skip their per-call overhead
        deviations = proportions - np.add.reduce(proportions, axis=1, keepdims=True) / n_bins
        spread = np.sqrt(np.add.reduce(deviations * deviations, axis=1) / n_bins)
        evals = (np.add.reduce(spread, axis=1) / n_columns).tolist()
        best, best_eval, best_size = 0, np.inf, np.inf
        for fold in range(n_bins):  # scikit-learn's tie rule: nearly equal balance goes to the smaller fold
            fold_eval = evals[fold]
            nearly_equal = abs(fold_eval - best_eval) <= 1e-8 + 1e-5 * abs(best_eval)  # np.isclose's defaults
            if fold_eval < best_eval or (nearly_equal and sizes[fold] < best_size):
                best, best_eval, best_size = fold, fold_eval, sizes[fold]
        per_fold[best] += group_counts
        sizes[best] += group_sizes[group]
        assignment[group] = best
    return assignment

"""Slide search by embedding, judged as KimiaNet judges it: majority-vote accuracy of the k nearest slides.

Each query slide's k nearest slides (cosine similarity of mean-pooled tile embeddings) vote on its
label; slides of the query's own patient are left out, so a patient's other slides cannot answer for
it. The score is the share of slides whose vote names their own label (ties go to the nearer
neighbours' label).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics.pairwise import cosine_similarity

from clinical.errors import ConfigurationError

__all__ = ["pool_bags", "retrieval_accuracy"]


def pool_bags(features: np.ndarray, bags: Sequence[np.ndarray]) -> np.ndarray:
    """One vector per slide: the mean of its tiles' embeddings, ``(n_slides, num_features)``."""
    return np.stack([features[rows].mean(axis=0) for rows in bags])


def retrieval_accuracy(
    vectors: np.ndarray, labels: Sequence[int], patients: Sequence[str], *, k: Sequence[int] = (1, 3, 5),
    queries: Sequence[bool] | None = None,
) -> dict[int, float]:
    """Majority-vote accuracy at each ``k``, leaving out the query's own patient.

    Parameters
    ----------
    vectors
        One embedding per slide, ``(n_slides, num_features)``.
    labels
        Class index per slide.
    patients
        Patient key per slide.
    k
        Neighbour counts; a ``k`` above the number of other patients' slides uses all of them.
    queries
        Which slides ask (a mask); the others only answer. ``None``: every slide asks. Held-out slides
        asking an archive of known ones keep a fine-tuned network from being asked about what it learnt.

    Raises
    ------
    ConfigurationError
        Lengths disagree, a ``k`` is not positive, or no slide has a neighbour from another patient.
    """
    labels = np.asarray(labels, dtype=np.int64)
    patients = np.asarray(patients, dtype=object)
    if not len(vectors) == len(labels) == len(patients):
        raise ConfigurationError(f"one label and patient per slide needed; got {len(vectors)} slides, "
                                 f"{len(labels)} labels, {len(patients)} patients.")
    if any(int(value) < 1 for value in k):
        raise ConfigurationError(f"k must be positive neighbour counts; got {list(k)}.")
    similarity = cosine_similarity(vectors)
    similarity[patients[:, None] == patients[None, :]] = -np.inf  # the query's own patient never answers
    if not np.isfinite(similarity).any(axis=1).all():
        raise ConfigurationError("retrieval needs slides of at least two patients.")
    order = np.argsort(-similarity, axis=1, kind="stable")
    others = np.isfinite(similarity).sum(axis=1)
    n_classes = int(labels.max()) + 1
    asking = np.flatnonzero(np.ones(len(labels), bool) if queries is None else np.asarray(queries, bool))
    if len(asking) == 0:
        raise ConfigurationError("retrieval needs at least one query slide.")
    out = {}
    for value in k:
        correct = 0
        for query in asking:
            neighbours = order[query, : min(int(value), int(others[query]))]
            votes = np.bincount(labels[neighbours], minlength=n_classes).astype(np.float64)
            votes[labels[neighbours[0]]] += 0.5  # a tie goes to the nearest neighbour's label
            correct += int(np.argmax(votes) == labels[query])
        out[int(value)] = correct / len(asking)
    return out

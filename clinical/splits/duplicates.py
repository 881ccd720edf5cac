"""Near-duplicate images across roles, by a perceptual hash of the cached arrays.

The same image exported twice, re-encoded, or cropped slightly would still
leak across roles under different patient keys (a re-scan filed under a new
ID, a public dataset merged twice). A 64-bit DCT perceptual hash (pHash)
survives re-encoding, small intensity changes and resampling; two items whose
hashes differ in at most a few bits are listed for a person to look at.

Written by hand (20 lines on scipy's DCT) because neither scikit-image nor
scipy ship a perceptual hash and one function does not justify a dependency.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.fft import dctn

__all__ = ["HASH_SIZE", "cross_role_pairs", "near_duplicate_pairs", "perceptual_hash"]

#: Side of the thumbnail the hash is computed on (the classic pHash uses 32).
HASH_SIZE = 32
_BITS = 8  # an 8 × 8 block of low frequencies gives 64 bits


def perceptual_hash(thumbnails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pHash of each ``32 × 32`` thumbnail.

    Each thumbnail's 2D DCT-II is taken, the ``8 × 8`` lowest frequencies are
    compared with their median (the DC term left out of the median) and the
    64 signs packed into a ``uint64``.

    Returns
    -------
    (hashes, informative)
        ``(n,)`` uint64 hashes and a mask that is False for constant images
        (blank slices), whose hash carries no information and would match
        every other blank image.
    """
    coefficients = dctn(thumbnails, type=2, norm="ortho", axes=(1, 2))[:, :_BITS, :_BITS].reshape(len(thumbnails), -1)
    median = np.median(coefficients[:, 1:], axis=1, keepdims=True)
    bits = (coefficients > median).astype(np.uint64)
    hashes = (bits << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    informative = np.ptp(thumbnails.reshape(len(thumbnails), -1), axis=1) > 0
    return hashes, informative


def near_duplicate_pairs(hashes: np.ndarray, *, max_distance: int) -> pd.DataFrame:
    """All pairs ``a < b`` whose hashes differ in at most ``max_distance`` bits.

    Compares every pair in blocks (about 16 M comparisons each), which takes
    about a second for 20,000 items.

    Returns
    -------
    pandas.DataFrame
        Columns ``a, b`` (positions in ``hashes``) and ``distance`` (bits).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    block = max(1, (1 << 24) // max(n, 1))
    found = []
    for start in range(0, n, block):
        distance = np.bitwise_count(hashes[start : start + block, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        rows = rows + start
        upper = cols > rows
        found.append((rows[upper], cols[upper], distance[rows[upper] - start, cols[upper]]))
    if not found:
        return pd.DataFrame({"a": [], "b": [], "distance": []}, dtype=np.int64)
    a, b, d = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return pd.DataFrame({"a": a.astype(np.int64), "b": b.astype(np.int64), "distance": d.astype(np.int64)})


def cross_role_pairs(pairs: pd.DataFrame, item_ids: np.ndarray, split: pd.DataFrame) -> pd.DataFrame:
    """Keep the near-duplicate pairs that take different roles in at least one fold.

    Returns
    -------
    pandas.DataFrame
        Columns ``item_a, item_b, distance`` and ``folds`` (a list of
        ``"fold/inner"`` labels where the two items' roles differ).
    """
    columns = ["item_a", "item_b", "distance", "folds"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    item_a, item_b = item_ids[pairs["a"].to_numpy()], item_ids[pairs["b"].to_numpy()]
    role = split.set_index(["item_id", "fold", "inner"])["role"].astype(str)
    where = split[["fold", "inner"]].drop_duplicates().itertuples(index=False)
    folds: list[list[str]] = [[] for _ in range(len(pairs))]
    for fold, inner in where:
        in_fold = role.xs((fold, inner), level=("fold", "inner"))
        role_a = in_fold.reindex(item_a).fillna("").to_numpy(dtype=str)
        role_b = in_fold.reindex(item_b).fillna("").to_numpy(dtype=str)
        differ = (role_a != "") & (role_b != "") & (role_a != role_b)
        for index in np.flatnonzero(differ):
            folds[index].append(str(fold) if inner < 0 else f"{fold}/{inner}")
    out = pd.DataFrame({"item_a": item_a, "item_b": item_b, "distance": pairs["distance"].to_numpy(), "folds": folds})
    return out[out["folds"].map(len) > 0].reset_index(drop=True)

"""Tile embeddings, computed once per backbone and cohort and kept in a digest-keyed cache.

Multiple-instance learning, tile classifiers on frozen features and slide search all start from the
same tile embeddings. Computing them is the slow part (a DenseNet-121 forward pass per tile); training
an attention pooling on them takes seconds. So they are written once to ``<cache_dir>/<digest>.npz``,
where the digest covers what changes them: the cohort's content (:func:`clinical.cohort.cohort_digest`),
the backbone's name, its weights (the file's digest, or the seed of a random initialisation) and the
tile size fed to it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from clinical.cohort import cohort_digest
from clinical.cohort.digest import bytes_digest, file_digest
from clinical.data import ManifestDataset, make_loader, preset
from clinical.data.presets import spatial_size
from clinical.errors import ManifestError
from clinical.models import create_model

__all__ = ["TileEmbeddings", "embed_tiles", "embedding_digest"]

logger = logging.getLogger(__name__)

#: Manifest columns kept next to each embedding: identifiers, the label and where the tile lies.
_COLUMNS = ("item_id", "patient_key", "study_key", "series_key", "site", "label", "tile_x", "tile_y", "tile_level",
            "path")


@dataclass(frozen=True)
class TileEmbeddings:
    """One embedding per tile, with the manifest columns that say whose tile it is.

    ``frame`` has one row per tile (``item_id, patient_key, study_key, series_key, site, label`` as a class
    name, ``tile_x, tile_y`` in level-0 pixels and ``tile_level``, ``path`` of the cached tile); ``features`` is
    ``(n_tiles, num_features)`` float32 in the same order; ``digest`` names the cache entry.
    """

    frame: pd.DataFrame
    features: np.ndarray
    digest: str

    def bags(self) -> dict[str, np.ndarray]:
        """Row indices of each slide's tiles, keyed by ``series_key`` (sorted)."""
        groups = self.frame.groupby("series_key", sort=True).indices
        return {str(key): np.asarray(rows) for key, rows in groups.items()}


def embedding_digest(manifest: pd.DataFrame, *, backbone: str, pretrained: str | Path | None, seed: int,
                     image_size: Sequence[int]) -> str:
    """The cache key: the cohort's content, the backbone, its weights and the input size."""
    weights = f"file:{file_digest(pretrained)}" if pretrained is not None else f"random:{seed}"
    text = json.dumps({"cohort": cohort_digest(manifest), "backbone": backbone, "weights": weights,
                       "image_size": list(image_size)}, sort_keys=True)
    return bytes_digest(text.encode())


def embed_tiles(
    manifest: pd.DataFrame,
    cohort_dir: str | Path,
    *,
    backbone: str = "densenet121",
    pretrained: str | Path | None = None,
    image_size: int | Sequence[int] = (224, 224),
    cache_dir: str | Path,
    batch_size: int = 64,
    device: str = "cpu",
    seed: int = 0,
) -> TileEmbeddings:
    """The pooled backbone features of every tile of ``manifest``, from the cache when it holds them.

    Parameters
    ----------
    manifest
        A cohort manifest; its ``tile`` rows are embedded.
    cohort_dir
        The cohort folder the manifest's paths are relative to.
    backbone
        A registered model name (see :func:`clinical.models.list_models`); its ``forward_features``
        gives the embedding.
    pretrained
        A local weights file; None embeds with a random initialisation seeded by ``seed``.
    image_size
        Side (or ``(H, W)``) tiles are resized to before the backbone.
    cache_dir
        Folder of the cache; created when missing.

    Raises
    ------
    ManifestError
        The manifest has no tiles, or a cache entry does not hold the manifest's tiles.
    """
    tiles = manifest[manifest["kind"] == "tile"].sort_values("item_id", ignore_index=True)
    if tiles.empty:
        raise ManifestError("the manifest has no tile items; ingest whole slides first (`clinical ingest`).")
    size = spatial_size("tile", image_size)
    digest = embedding_digest(tiles, backbone=backbone, pretrained=pretrained, seed=seed, image_size=size)
    frame = tiles[[c for c in _COLUMNS if c in tiles.columns]].reset_index(drop=True)
    path = Path(cache_dir) / f"{digest}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            if stored["item_id"].tolist() != frame["item_id"].astype(str).tolist():
                raise ManifestError(f"the embedding cache entry {path.name} does not hold this cohort's tiles; "
                                    "delete it and embed again.")
            logger.info("tile embeddings of %d tiles from the cache (%s)", len(frame), digest[:12])
            return TileEmbeddings(frame, stored["features"], digest)
    torch.manual_seed(seed)
    model = create_model(backbone, in_channels=3, pretrained=pretrained).to(device).eval()
    dataset = ManifestDataset(tiles, cohort_dir, transform=preset("tile", train=False, size=size))
    loader = make_loader(dataset, batch_size=batch_size, train=False)
    chunks = []
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"embedding tiles ({backbone})", unit="batch", disable=None, leave=False):
            chunks.append(model.forward_features(batch["image"].to(device)).float().cpu().numpy())
    features = np.concatenate(chunks).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".npz")  # atomic: no half-written entry
    with os.fdopen(handle, "wb") as out:
        np.savez(out, features=features, item_id=frame["item_id"].to_numpy(dtype=str))
    os.replace(temporary, path)
    logger.info("embedded %d tiles with %s into the cache (%s)", len(frame), backbone, digest[:12])
    return TileEmbeddings(frame, features, digest)

"""A torch dataset over the rows of a cohort manifest.

Each item is a dictionary, the form MONAI's dictionary transforms work on::

    {"image": Tensor (C, H, W) or (C, D, H, W), "label": int (-1 when unlabelled),
     "item_id": str, "patient_key": str, "study_key": str, "series_key": str, "site": str}

Class indices come from the sorted class names, so the same names always give
the same indices; the names are stored with every checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.transforms import Randomizable, ToDeviced
from tqdm.auto import tqdm

from clinical.data.cache import ByteCappedCache, split_deterministic
from clinical.errors import ManifestError

__all__ = ["UNLABELLED", "ManifestDataset", "class_names"]

logger = logging.getLogger(__name__)

#: Label index of an item whose ``label`` is missing in the manifest.
UNLABELLED = -1

#: Manifest columns carried into every item, next to the image and label.
_KEY_COLUMNS = ("item_id", "patient_key", "study_key", "series_key", "site")


def class_names(manifest: pd.DataFrame) -> list[str]:
    """Sorted distinct class names of the labelled rows of a manifest.

    Take them from the whole manifest, not one fold, so every fold maps the
    same name to the same index.

    Raises
    ------
    ManifestError
        When no row has a label.
    """
    names = sorted(manifest["label"].dropna().astype(str).unique())
    if not names:
        raise ManifestError("The manifest has no labelled rows; training needs a 'label' on at least two classes.")
    return names


class ManifestDataset(torch.utils.data.Dataset):
    """Items of a manifest, read from their cached ``.npy`` arrays and transformed.

    Parameters
    ----------
    manifest
        Cohort manifest (see ``clinical.cohort.manifest``).
    cohort_dir
        Folder the manifest's ``path`` column is relative to.
    items
        ``item_id`` values to keep, in this order; all rows when ``None``.
    classes
        Class names in index order; ``class_names(manifest)`` when ``None``.
    transform
        A callable on the item dictionary, usually a preset from ``clinical.data.presets``.
        The deterministic prefix of a MONAI ``Compose`` is cached (see ``cache_bytes``).
    cache_bytes
        Bytes of deterministic-transform output kept in memory so later epochs do not
        reread and resize files; 0 disables the cache.
    channels
        Names of the channels to keep, in this order, out of each item's ``modality``
        (``PT+CT`` names two; see ``clinical.ingest.channels``): ``("PT",)`` trains on PET alone.
        None keeps every channel.

    Raises
    ------
    ManifestError
        When an ``item_id`` is not in the manifest, a label is not one of ``classes``,
        or the items mix kinds (one transform preset serves one kind), or a channel is not among an item's.
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        cohort_dir: str | Path,
        *,
        items: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        transform: Callable[[dict], dict] | None = None,
        cache_bytes: int = 0,
        channels: Sequence[str] | None = None,
    ) -> None:
        self.cohort_dir = Path(cohort_dir)
        self.classes = list(classes) if classes is not None else class_names(manifest)
        rows = manifest.set_index("item_id", drop=False)
        if items is not None:
            items = list(items)
            unknown = [i for i in items if i not in rows.index]
            if unknown:
                raise ManifestError(
                    f"{len(unknown)} item_id(s) are not in the manifest (first: {unknown[0]!r}); "
                    "the split and the manifest come from different cohorts — rebuild the split."
                )
            rows = rows.loc[items]
        kinds = sorted(rows["kind"].dropna().unique())
        if len(kinds) > 1:
            raise ManifestError(
                f"The items mix kinds {kinds}; a dataset serves one kind. Filter the manifest on 'kind' first."
            )
        self.kind: str | None = kinds[0] if kinds else None
        index = {name: i for i, name in enumerate(self.classes)}
        labels = rows["label"].astype("string")
        bad = sorted(set(labels.dropna()) - set(index))
        if bad:
            raise ManifestError(
                f"Label(s) {bad} are not among the classes {self.classes}; pass classes= with all names."
            )
        self._paths = rows["path"].astype(str).tolist()
        # a slice view (clinical.data.slices) names the axial slice of the volume each item reads
        slices = rows["slice"] if "slice" in rows else pd.Series(pd.NA, index=rows.index)
        self._slices = [None if pd.isna(v) else int(v) for v in slices]
        self._channels = _channel_indices(rows, channels)
        self._labels = [UNLABELLED if pd.isna(v) else index[v] for v in labels]
        self._keys = {c: rows[c].astype(str).tolist() for c in _KEY_COLUMNS}
        self.transform = transform
        self._cached_part, self._random_part = split_deterministic(transform)
        self._cache = ByteCappedCache(cache_bytes)

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def labels(self) -> np.ndarray:
        """Class index per item (``UNLABELLED`` for missing labels), in item order."""
        return np.asarray(self._labels, dtype=np.int64)

    @property
    def on_device(self) -> bool:
        """Whether the cached items are moved to the training device (a preset made with ``device=``)."""
        return any(isinstance(step, ToDeviced) for step in getattr(self._cached_part, "transforms", ()))

    @property
    def item_ids(self) -> list[str]:
        return list(self._keys["item_id"])

    def frame(self) -> pd.DataFrame:
        """The items as a table: ``item_id, patient_key, study_key, series_key, site, label`` (class index)."""
        return pd.DataFrame({**self._keys, "label": self._labels})

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._cache.get(index, lambda: self._prepare(index))
        item = dict(item)  # random transforms must not write into the cached dictionary
        if self._random_part is not None:
            item = self._random_part(item)
        return item

    def preload(self) -> None:
        """Fill the cache in this process (before DataLoader workers fork, so they share it)."""
        if self._cached_part is None or self._cache.max_bytes == 0:
            return
        for index in tqdm(range(len(self)), desc="caching items", unit="item", disable=None, leave=False):
            self._cache.get(index, lambda i=index: self._prepare(i))

    def set_random_state(self, seed: int | None = None) -> None:
        """Seed the random transforms; MONAI's ``worker_init_fn`` calls this in each worker."""
        if isinstance(self._random_part, Randomizable):
            self._random_part.set_random_state(seed=seed)

    def _prepare(self, index: int) -> dict[str, Any]:
        item = {"image": self._load(index), "label": self._labels[index]}
        item.update({c: values[index] for c, values in self._keys.items()})
        return self._cached_part(item) if self._cached_part is not None else item

    def _load(self, index: int) -> np.ndarray:
        path = self.cohort_dir / self._paths[index]
        try:
            array = np.load(path, allow_pickle=False, mmap_mode="r" if self._slices[index] is not None else None)
        except FileNotFoundError:
            raise ManifestError(
                f"The cached array {self._paths[index]} is missing under the cohort folder; re-run ingest."
            ) from None
        except ValueError as error:
            raise ManifestError(f"The cached array {self._paths[index]} cannot be read: {error}.") from None
        if self._slices[index] is not None:
            array = array[:, self._slices[index]]
        if self._channels[index] is not None:
            array = array[self._channels[index]]
        return np.ascontiguousarray(array, dtype=np.float32)


def _channel_indices(rows: pd.DataFrame, channels: Sequence[str] | None) -> list[list[int] | None]:
    """Per row, the indices of ``channels`` among the row's ``modality`` parts (``PT+CT``); None keeps all."""
    if channels is None:
        return [None] * len(rows)
    wanted = [str(c).upper() for c in channels]
    out: list[list[int] | None] = []
    for modality in rows["modality"].astype(str):
        names = modality.upper().split("+")
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ManifestError(
                f"channels={wanted} asks for {missing}, but items of modality {modality!r} hold the channels "
                f"{names}; ingest the series together with --channels, or choose among {names}."
            )
        out.append([names.index(c) for c in wanted])
    return out

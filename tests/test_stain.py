"""H&E stain augmentation: a colour change in stain space, bounded, shape kept, selectable in a tile recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import NormalizeIntensityd

from clinical.data import preset
from clinical.data.stain import RandHEDJitterd
from clinical.errors import ConfigurationError
from clinical.training import TrainConfig


def _he_tile() -> np.ndarray:
    """(3, 32, 32): a strip of glass, one of haematoxylin-rich nuclei, the rest eosin-pink stroma."""
    tile = np.empty((3, 32, 32))
    tile[:] = np.array([216.0, 140.0, 191.0])[:, None, None]
    tile[:, :8] = 255.0
    tile[:, 8:16] = np.array([90.0, 60.0, 160.0])[:, None, None]
    return tile


def test_hed_jitter_changes_colour_within_bounds_and_keeps_shape():
    tile = _he_tile()
    jitter = RandHEDJitterd("image", prob=1.0)
    jitter.set_random_state(0)
    changes = []
    for _ in range(10):
        out = jitter({"image": tile})["image"]
        assert isinstance(out, torch.Tensor) and out.shape == tile.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0
        change = np.abs(out.numpy() - tile)
        assert change.max() < 40  # HED-light: a stain-uptake difference, not another image
        changes.append(change.mean())
    assert min(changes) > 0.2 and len(set(np.round(changes, 3))) == 10  # every draw changes colour, differently
    # each region keeps its colour relation: nuclei stay darker than stroma, stroma darker than glass
    brightness = out.numpy().mean(axis=0)
    assert brightness[8:16].mean() < brightness[16:].mean() < brightness[:8].mean()
    untouched = RandHEDJitterd("image", prob=0.0)({"image": tile})["image"].numpy()
    np.testing.assert_allclose(untouched, tile, atol=1e-4)


def test_the_tile_recipe_selects_stain_jitter_before_the_z_score():
    steps = preset("tile", train=True, size=32, stain="hed").transforms
    kinds = [type(step) for step in steps]
    assert kinds.index(RandHEDJitterd) < kinds.index(NormalizeIntensityd)
    assert RandHEDJitterd not in [type(step) for step in preset("tile", train=False, size=32, stain="hed").transforms]
    assert RandHEDJitterd not in [type(step) for step in preset("tile", train=True, size=32).transforms]
    assert TrainConfig.build(kind="tile", in_channels=3, stain_augmentation="hed").stain_augmentation == "hed"
    with pytest.raises(ConfigurationError, match="'tile' items only"):
        preset("image", train=True, stain="hed")
    with pytest.raises(ConfigurationError, match="stain_augmentation is for H&E tiles"):
        TrainConfig.build(kind="photo", in_channels=3, stain_augmentation="hed")

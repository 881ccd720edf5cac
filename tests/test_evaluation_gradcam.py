"""Grad-CAM through MONAI: maps point at the evidence, in 2D and 3D, for plain CNNs and the model zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clinical.errors import ConfigurationError
from clinical.evaluation import gradcam, gradcam_figure, save_figure
from clinical.models import create_model


class SpotModel(nn.Module):
    """Class 1 = "something bright", class 0 = "something dark": the evidence is exactly where the spot is."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        self.features = nn.Sequential(conv(1, 2, 3, padding=1, bias=False), nn.ReLU(), pool(2))
        self.pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            kernel = torch.zeros_like(self.features[0].weight)
            center = (0, 0, *([1] * spatial_dims))
            kernel[center] = 1.0  # channel 0: the image
            kernel[(1, *center[1:])] = -1.0  # channel 1: its negative
            self.features[0].weight.copy_(kernel)
            self.fc.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def _spots(shape: tuple[int, ...], value: float, where: tuple[slice, ...]) -> torch.Tensor:
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(0)) * 0.05
    x[(0, 0, *where)] = value
    return x


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_maps_light_up_the_evidence_of_each_samples_own_class(spatial_dims):
    shape = (32, 32) if spatial_dims == 2 else (16, 24, 24)
    bright_at = tuple(slice(4, 10) for _ in shape)
    dark_at = tuple(slice(12, 16) for _ in shape)
    x = torch.cat([_spots(shape, 2.0, bright_at), _spots(shape, -2.0, dark_at)])
    model = SpotModel(spatial_dims)
    assert model(x).argmax(dim=1).tolist() == [1, 0]
    maps = gradcam(model, x, target_layer="features")
    assert maps.shape == (2, *shape) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    for m, where in zip(maps, (bright_at, dark_at), strict=True):
        inside = np.zeros(shape, dtype=bool)
        inside[where] = True
        assert inside[np.unravel_index(m.argmax(), shape)]
        assert m[inside].mean() > 5 * m[~inside].mean()
    # asking for the other class ("dark") of the bright sample points away from its bright spot
    other = gradcam(model, x[:1], target_layer="features", class_index=0)[0]
    bright = np.zeros(shape, dtype=bool)
    bright[bright_at] = True
    assert not bright[np.unravel_index(other.argmax(), shape)]
    assert other[bright].mean() < other[~bright].mean()


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (64, 64)), (3, (8, 32, 32))])
def test_model_zoo_resnet18_gives_input_sized_maps_and_keeps_its_mode(spatial_dims, shape):
    torch.manual_seed(0)
    model = create_model("resnet18", spatial_dims=spatial_dims, in_channels=1, num_classes=3)
    model.train()
    for parameter in model.parameters():  # a frozen backbone must not stop the gradients Grad-CAM needs
        parameter.requires_grad_(False)
    maps = gradcam(model, torch.randn(2, 1, *shape), class_index=2)  # target layer: model.gradcam_layer
    assert maps.shape == (2, *shape)
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert model.training
    with pytest.raises(ConfigurationError, match="class_index must be in 0…2"):
        gradcam(model, torch.randn(1, 1, *shape), class_index=3)


def test_bad_inputs_are_refused():
    model = SpotModel(2)
    with pytest.raises(ConfigurationError, match="not a module"):
        gradcam(model, torch.zeros(1, 1, 8, 8), target_layer="layer4")
    with pytest.raises(ConfigurationError, match="gradcam_layer"):
        gradcam(model, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigurationError, match=r"Add the batch axis"):
        gradcam(model, torch.zeros(1, 8, 8), target_layer="features")


def test_figure_overlays_2d_and_the_most_active_slice_of_3d(tmp_path: Path):
    image2d, map2d = np.random.default_rng(0).random((1, 32, 32)), np.random.default_rng(1).random((32, 32))
    volume = np.random.default_rng(2).random((1, 10, 16, 16))
    volume_map = np.zeros((10, 16, 16), dtype=np.float32)
    volume_map[6, 4:8, 4:8] = 1.0
    figure = gradcam_figure([image2d, volume], [map2d, volume_map], ["radiograph", "CT"])
    titles = [ax.get_title() for ax in figure.axes[:2]]
    assert titles == ["radiograph", "CT (slice 6)"]
    path = save_figure(figure, tmp_path / "gradcam.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigurationError, match="do not match"):
        gradcam_figure([image2d], [volume_map])

"""A tiny registered CNN (stem, two stages, head; with BatchNorm) so engine tests run in seconds on 2 cores, and a
callback that ends a fit after a given epoch (the resume tests)."""

from __future__ import annotations

from torch import nn

from clinical.models.registry import ModelConfig, list_models, register_model
from clinical.training import BaseCallback

TINY = "tinynet-test"

_CONFIG = ModelConfig(
    name=TINY,
    spatial_dims=2,
    first_conv="conv1",
    classifier="fc",
    groups=(("stem", ("conv1", "bn1")), ("stage1", ("layer1",)), ("stage2", ("layer2",))),
    gradcam_layer="layer2",
)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = _block(8, 16)
        self.layer2 = _block(16, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 1000)

    def forward(self, x):
        x = self.layer2(self.layer1(self.bn1(self.conv1(x)).relu()))
        return self.fc(self.pool(x).flatten(1))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


if TINY not in list_models():
    register_model(_CONFIG)(TinyNet)


class Crash(Exception):
    pass


class CrashAfter(BaseCallback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch, metrics, state):
        if epoch == self.epoch:
            raise Crash

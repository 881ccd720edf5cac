"""DenseNet-121: torchvision's for 2D images, MONAI's for 3D volumes.

The two name their layers differently (MONAI nests each dense layer's modules
under ``layers.`` and calls the classifier ``class_layers.out``); the key
remaps below let weights saved in either naming, or in torchvision's pre-0.4
naming (``norm.1``) that TorchXRayVision-era checkpoints may carry, load into both.
"""

from __future__ import annotations

import torchvision
from monai.networks import nets as monai_nets
from torch import nn

from clinical.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, register_model

__all__ = ["DENSENET_GROUPS"]

#: Stem, then each dense block with the transition after it; the last block keeps the final norm.
DENSENET_GROUPS = (
    ("stem", ("features.conv0", "features.norm0")),
    ("stage1", ("features.denseblock1", "features.transition1")),
    ("stage2", ("features.denseblock2", "features.transition2")),
    ("stage3", ("features.denseblock3", "features.transition3")),
    ("stage4", ("features.denseblock4", "features.norm5")),
)

#: torchvision < 0.4 wrote ``denselayer1.norm.1``; today it is ``denselayer1.norm1``.
_OLD_TORCHVISION = (r"(denselayer\d+)\.(norm|relu|conv)\.([12])\.", r"\1.\2\3.")

_TO_TORCHVISION = (
    _OLD_TORCHVISION,
    (r"(denselayer\d+)\.layers\.", r"\1."),
    (r"(^|\.)class_layers\.out\.(weight|bias)$", r"\1classifier.\2"),
)
_TO_MONAI = (
    _OLD_TORCHVISION,
    (r"(denselayer\d+)\.(norm|relu|conv)([12])\.", r"\1.layers.\2\3."),
    (r"(^|\.)classifier\.(weight|bias)$", r"\1class_layers.out.\2"),
)


def _config(spatial_dims: int) -> ModelConfig:
    return ModelConfig(
        name="densenet121",
        spatial_dims=spatial_dims,
        family="torchvision" if spatial_dims == 2 else "monai",
        kinds=("image", "tile", "photo") if spatial_dims == 2 else ("volume",),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        first_conv="features.conv0",
        classifier="classifier" if spatial_dims == 2 else "class_layers.out",
        groups=DENSENET_GROUPS,
        gradcam_layer="features",
        key_remaps=_TO_TORCHVISION if spatial_dims == 2 else _TO_MONAI,
        description=f"DenseNet-121 ({'torchvision' if spatial_dims == 2 else 'MONAI'})",
    )


@register_model(_config(2))
def _densenet121_2d() -> nn.Module:
    return torchvision.models.densenet121(weights=None)


@register_model(_config(3))
def _densenet121_3d() -> nn.Module:
    return monai_nets.DenseNet121(spatial_dims=3, in_channels=3, out_channels=2)

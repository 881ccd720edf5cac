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

from clinical.models.registry import ModelConfig, register_model

__all__ = ["DENSENET_GROUPS"]

#: Stem, then each dense block with the transition after it; the last block keeps the final norm.
DENSENET_GROUPS = (
    ("stem", ("features.conv0", "features.norm0")),
    ("stage1", ("features.denseblock1", "features.transition1")),
    ("stage2", ("features.denseblock2", "features.transition2")),
    ("stage3", ("features.denseblock3", "features.transition3")),
    ("stage4", ("features.denseblock4", "features.norm5")),
)

#: Dense layers per block of DenseNet-121, and how many make one block-level group.
_DENSE_LAYERS = (6, 12, 24, 16)
_CHUNK = 4


def _dense_chunks() -> tuple:
    """Block-level groups: each dense block cut into chunks of four dense layers (``stage<s>.<c>``).

    A dense layer is ~2 % of DenseNet-121, too small to be a group of its own (58 groups);
    four make a group of 6-9 %. The transition after a block, and the final norm after the
    last, go with the block's last chunk, as the stage groups keep them with their block.
    """
    groups: list[tuple[str, tuple[str, ...]]] = [("stem", ("features.conv0", "features.norm0"))]
    for stage, layers in enumerate(_DENSE_LAYERS, start=1):
        starts = range(1, layers + 1, _CHUNK)
        for chunk, start in enumerate(starts):
            last = min(start + _CHUNK, layers + 1)
            prefixes = [f"features.denseblock{stage}.denselayer{i}" for i in range(start, last)]
            if chunk == len(starts) - 1:
                prefixes.append(f"features.transition{stage}" if stage < len(_DENSE_LAYERS) else "features.norm5")
            groups.append((f"stage{stage}.{chunk}", tuple(prefixes)))
    return tuple(groups)

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
        first_conv="features.conv0",
        classifier="classifier" if spatial_dims == 2 else "class_layers.out",
        groups=DENSENET_GROUPS,
        block_groups=_dense_chunks(),
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

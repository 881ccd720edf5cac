"""ResNet-18/34/50: torchvision's for 2D images, MONAI's for 3D volumes.

The 3D networks are built with the MedicalNet / torchvision layout (stride-2
first convolution, projection shortcuts without bias) so that their parameter
names and shapes are torchvision's with one more kernel axis: 2D weights
inflate into them by name, and MedicalNet ResNet-50 weights load as they are.
"""

from __future__ import annotations

import torchvision
from monai.networks import nets as monai_nets
from torch import nn

from clinical.models.registry import ModelConfig, register_model

__all__ = ["RESNET_GROUPS", "resnet_blocks"]

#: Stem, then the four residual stages; the head is added by the wrapper.
RESNET_GROUPS = (
    ("stem", ("conv1", "bn1")),
    ("stage1", ("layer1",)),
    ("stage2", ("layer2",)),
    ("stage3", ("layer3",)),
    ("stage4", ("layer4",)),
)


def resnet_blocks(depths: tuple[int, ...], stem: tuple[str, ...] = ("conv1", "bn1")) -> tuple:
    """Block-level groups: the stem, then every residual block ``layer<s>.<b>`` as ``stage<s>.<b>``."""
    blocks = [(f"stage{s}.{b}", (f"layer{s}.{b}",)) for s, depth in enumerate(depths, start=1) for b in range(depth)]
    return (("stem", stem), *blocks)


#: Residual blocks per stage.
_DEPTHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}


def _config(name: str, spatial_dims: int) -> ModelConfig:
    return ModelConfig(
        name=name,
        spatial_dims=spatial_dims,
        first_conv="conv1",
        classifier="fc",
        groups=RESNET_GROUPS,
        block_groups=resnet_blocks(_DEPTHS[name]),
        gradcam_layer="layer4",
        description=f"{name.replace('resnet', 'ResNet-')} ({'torchvision' if spatial_dims == 2 else 'MONAI'})",
    )


def _monai_resnet(factory) -> nn.Module:
    return factory(spatial_dims=3, n_input_channels=3, conv1_t_stride=2, shortcut_type="B", bias_downsample=False)


@register_model(_config("resnet18", 2))
def _resnet18_2d() -> nn.Module:
    return torchvision.models.resnet18(weights=None)


@register_model(_config("resnet34", 2))
def _resnet34_2d() -> nn.Module:
    return torchvision.models.resnet34(weights=None)


@register_model(_config("resnet50", 2))
def _resnet50_2d() -> nn.Module:
    return torchvision.models.resnet50(weights=None)


@register_model(_config("resnet18", 3))
def _resnet18_3d() -> nn.Module:
    return _monai_resnet(monai_nets.resnet18)


@register_model(_config("resnet34", 3))
def _resnet34_3d() -> nn.Module:
    return _monai_resnet(monai_nets.resnet34)


@register_model(_config("resnet50", 3))
def _resnet50_3d() -> nn.Module:
    return _monai_resnet(monai_nets.resnet50)

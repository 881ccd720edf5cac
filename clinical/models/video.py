"""Video ResNets for volumes, the slice axis taken as time: (2+1)D, mixed convolution (MC3) and R3D.

torchvision's video networks take ``[B, C, T, H, W]``; a volume ``[B, C, D, H, W]``
is that with slices as frames, so they are used as they are. (2+1)D factorises
each 3×3×3 convolution into a spatial 1×3×3 and a "temporal" 3×1×1 one; MC3
uses 3D convolutions in the early stages only; R3D uses them throughout.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import video

from clinical.models.registry import ModelConfig, register_model
from clinical.models.resnet import resnet_blocks

__all__ = ["VIDEO_GROUPS"]

VIDEO_GROUPS = (
    ("stem", ("stem",)),
    ("stage1", ("layer1",)),
    ("stage2", ("layer2",)),
    ("stage3", ("layer3",)),
    ("stage4", ("layer4",)),
)


def _config(name: str, description: str) -> ModelConfig:
    return ModelConfig(
        name=name,
        spatial_dims=3,
        first_conv="stem.0",
        classifier="fc",
        groups=VIDEO_GROUPS,
        block_groups=resnet_blocks((2, 2, 2, 2), stem=("stem",)),
        gradcam_layer="layer4",
        description=description,
    )


@register_model(_config("r2plus1d_18", "ResNet (2+1)D-18 (torchvision video)"))
def _r2plus1d_18() -> nn.Module:
    return video.r2plus1d_18(weights=None)


@register_model(_config("mc3_18", "Mixed-convolution ResNet MC3-18 (torchvision video)"))
def _mc3_18() -> nn.Module:
    return video.mc3_18(weights=None)


@register_model(_config("r3d_18", "3D ResNet R3D-18 (torchvision video)"))
def _r3d_18() -> nn.Module:
    return video.r3d_18(weights=None)

"""Model factory and registry, layer groups, pretrained-weight loading.

``create_model(name, spatial_dims=..., in_channels=..., num_classes=..., pretrained=...)`` is the
one entry point; every model is a :class:`ClassifierModel` with ``forward_features``,
``forward_head``, ``reset_classifier``, ``layer_groups`` and ``gradcam_layer``.
"""

from __future__ import annotations

# The architecture modules register their networks when imported.
from clinical.models import densenet, resnet, video  # noqa: F401
from clinical.models.classifier import ClassifierModel
from clinical.models.factory import create_model
from clinical.models.groups import LayerGroup
from clinical.models.registry import ModelConfig, get_model_config, list_models, register_model
from clinical.models.weights import (
    adapt_input_channels,
    inflate_2d_to_3d,
    load_pretrained,
    register_weights_loader,
    save_backbone,
)
from clinical.models.weights_report import WeightsReport

__all__ = [
    "ClassifierModel",
    "LayerGroup",
    "ModelConfig",
    "WeightsReport",
    "adapt_input_channels",
    "create_model",
    "get_model_config",
    "inflate_2d_to_3d",
    "list_models",
    "load_pretrained",
    "register_model",
    "register_weights_loader",
    "save_backbone",
]

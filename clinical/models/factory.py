"""``create_model``: the one way to build a network of the zoo."""

from __future__ import annotations

from clinical.models.classifier import ClassifierModel
from clinical.models.registry import get_model_builder, get_model_config
from clinical.models.weights import Inflation, WeightsSource, load_pretrained

__all__ = ["create_model"]


def create_model(
    name: str,
    *,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 2,
    pretrained: WeightsSource | None = None,
    inflation: Inflation = "mean",
) -> ClassifierModel:
    """Build a registered network (weights never downloaded) and optionally load local weights.

    Parameters
    ----------
    name
        A name from :func:`clinical.models.list_models`, e.g. ``"resnet50"`` or ``"r2plus1d_18"``.
    spatial_dims
        2 for images ``[B, C, H, W]``, 3 for volumes ``[B, C, D, H, W]``.
    in_channels
        Input channels (1 for grey radiographs and CT, 3 for RGB photographs and slides).
    num_classes
        Logits out of the head.
    pretrained
        ``None`` for random initialisation; otherwise a local file, a ``scheme:...`` URI with a
        registered loader, a state dict or a callable returning one (see
        :func:`clinical.models.weights.load_pretrained`). The report lands in ``model.weights_report``.
    inflation
        How 2D weights become 3D when a 3D model gets 2D weights (``"mean"`` or ``"center"``).

    Raises
    ------
    ConfigurationError
        For an unknown name, unsupported ``spatial_dims`` or a non-positive channel/class count.
    WeightsError
        When the weights do not fit (see ``load_pretrained``).
    """
    config = get_model_config(name, spatial_dims)
    model = ClassifierModel(
        get_model_builder(name, spatial_dims)(), config, in_channels=in_channels, num_classes=num_classes
    )
    if pretrained is not None:
        load_pretrained(model, pretrained, inflation=inflation)
    return model

"""The model registry: one frozen config per (architecture, spatial dims), and its builder.

Each architecture module (``resnet``, ``densenet``, ``video``) registers its
builders with :func:`register_model`; :func:`clinical.models.create_model` is the
only door out. A builder takes no argument and returns the upstream network
(torchvision or MONAI) untouched, with its own classifier: the wrapper adapts the
first convolution and replaces the classifier, so every builder stays one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from clinical.errors import ConfigurationError

__all__ = [
    "ModelConfig",
    "get_model_builder",
    "get_model_config",
    "list_models",
    "register_model",
]

#: A builder returns the upstream network with its own classifier, built with ``weights=None``.
Builder = Callable[[], nn.Module]


@dataclass(frozen=True)
class ModelConfig:
    """What every part of the platform needs to know about one registered network.

    Attributes
    ----------
    name
        Registry name, e.g. ``"resnet50"``; the same name may exist for 2 and 3 spatial dims.
    spatial_dims
        2 for images ``[B, C, H, W]``, 3 for volumes ``[B, C, D, H, W]``.
    first_conv
        Module name of the first convolution, adapted to the requested input channels.
    classifier
        Module name of the upstream classifier (a ``Linear``), replaced by the wrapper's head.
    groups
        Ordered ``(group name, module-name prefixes)`` from input to output, without the head:
        the stage-level groups (``stem, stage1..N``).
    gradcam_layer
        Module name of the last convolutional stage (the Grad-CAM target).
    key_remaps
        ``(regex, replacement)`` pairs applied to the keys of pretrained state dicts, so that
        other naming schemes of the same network (older torchvision, MONAI) load.
    block_groups
        The same cut one level finer (``stem``, then every residual block or chunk of dense
        layers, named ``stage<s>.<b>``); empty means the stage groups.
    """

    name: str
    spatial_dims: int
    first_conv: str
    classifier: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    gradcam_layer: str
    key_remaps: tuple[tuple[str, str], ...] = ()
    description: str = ""
    block_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def matcher(self, granularity: str = "stage") -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The ``(group name, module-name prefixes)`` of ``granularity`` (``"stage"`` or ``"block"``).

        Raises
        ------
        ConfigurationError
            For another granularity.
        """
        if granularity == "stage":
            return self.groups
        if granularity == "block":
            return self.block_groups or self.groups
        raise ConfigurationError(f"Unknown group granularity {granularity!r}; allowed: 'stage', 'block'.")


_REGISTRY: dict[tuple[str, int], tuple[ModelConfig, Builder]] = {}


def register_model(config: ModelConfig) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``(config.name, config.spatial_dims)``.

    Raises
    ------
    ConfigurationError
        When that name and spatial dims are already registered.
    """

    def decorate(builder: Builder) -> Builder:
        key = (config.name, config.spatial_dims)
        if key in _REGISTRY:
            raise ConfigurationError(
                f"Model {config.name!r} is already registered for spatial_dims={config.spatial_dims}; "
                "pick another name."
            )
        _REGISTRY[key] = (config, builder)
        return builder

    return decorate


def list_models(*, spatial_dims: int | None = None) -> list[str]:
    """Sorted names of the registered models, all or those available for ``spatial_dims``."""
    return sorted({name for name, dims in _REGISTRY if spatial_dims is None or dims == spatial_dims})


def get_model_config(name: str, spatial_dims: int) -> ModelConfig:
    """The frozen config of ``name`` for ``spatial_dims``.

    Raises
    ------
    ConfigurationError
        When the name is unknown, or known only for other spatial dims; the message lists what exists.
    """
    return _lookup(name, spatial_dims)[0]


def get_model_builder(name: str, spatial_dims: int) -> Builder:
    """The builder of ``name`` for ``spatial_dims`` (see :func:`get_model_config` for errors)."""
    return _lookup(name, spatial_dims)[1]


def _lookup(name: str, spatial_dims: int) -> tuple[ModelConfig, Builder]:
    key = (name, spatial_dims)
    if key in _REGISTRY:
        return _REGISTRY[key]
    dims = sorted(d for n, d in _REGISTRY if n == name)
    if dims:
        raise ConfigurationError(
            f"Model {name!r} exists for spatial_dims {dims}, not {spatial_dims!r}. "
            f"Models for spatial_dims={spatial_dims}: {list_models(spatial_dims=spatial_dims)}."
        )
    raise ConfigurationError(f"Unknown model {name!r}. Registered models: {list_models()}.")

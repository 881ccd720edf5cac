"""The common wrapper every registered network is served in.

``ClassifierModel`` holds the upstream network as ``net`` (its classifier
replaced by ``Identity``, so ``net(x)`` gives pooled features) and a fresh
linear ``head``. Upstream module names stay as they are under ``net.``, which
is what makes torchvision, MONAI and MedicalNet state dicts load by name.

A centre-aware model (:meth:`ClassifierModel.use_sites`) also holds a learned
embedding per training site, joined to the pooled features before the head,
and one for a site it never saw: training hands a share of the items to that
"unknown" row, so a new centre gets a learned, centre-agnostic answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from clinical.errors import ConfigurationError
from clinical.models.groups import LayerGroup, build_layer_groups
from clinical.models.registry import ModelConfig
from clinical.models.weights_report import WeightsReport

__all__ = ["UNKNOWN_SITE", "ClassifierModel"]

#: Row 0 of the site embedding: a site outside the vocabulary, or none given.
UNKNOWN_SITE = 0
#: Share of training items whose site is replaced by the unknown one, so that row is learned too.
SITE_DROPOUT = 0.2


class ClassifierModel(nn.Module):
    """A backbone, global pooling and a linear head, with the questions every model answers.

    Parameters
    ----------
    net
        The upstream network as its builder returns it (with its own classifier).
    config
        The registry config of ``net``.
    in_channels
        Input channels; the first convolution is rebuilt (freshly initialised) when it differs.
    num_classes
        Outputs of the head (logits); 1 for a single binary logit.

    Raises
    ------
    ConfigurationError
        When ``in_channels`` or ``num_classes`` is not a positive integer.
    """

    def __init__(self, net: nn.Module, config: ModelConfig, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("num_classes", num_classes)
        _set_input_channels(net, config.first_conv, in_channels)
        classifier = net.get_submodule(config.classifier)
        if not isinstance(classifier, nn.Linear):
            raise TypeError(f"{config.name}: {config.classifier!r} is a {type(classifier).__name__}, not nn.Linear.")
        net.set_submodule(config.classifier, nn.Identity())
        self.net = net
        self.config = config
        self.name = config.name
        self.spatial_dims = config.spatial_dims
        self.in_channels = in_channels
        self.num_features = classifier.in_features
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)
        #: Training sites in embedding order (row ``i + 1``); empty for a centre-agnostic model.
        self.sites: tuple[str, ...] = ()
        self.site_embedding: nn.Embedding | None = None
        #: What :func:`clinical.models.weights.load_pretrained` did, when weights were loaded.
        self.weights_report: WeightsReport | None = None

    @property
    def gradcam_layer(self) -> str:
        """Name (in this module) of the last convolutional stage, for MONAI's ``GradCAM(target_layers=...)``."""
        return f"net.{self.config.gradcam_layer}"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, num_features]`` of ``x`` (``[B, C, H, W]`` or ``[B, C, D, H, W]``).

        Raises
        ------
        ConfigurationError
            When ``x`` does not have ``spatial_dims + 2`` dimensions and ``in_channels`` channels.
        """
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            layout = "[B, C, H, W]" if self.spatial_dims == 2 else "[B, C, D, H, W]"
            raise ConfigurationError(
                f"{self.name} ({self.spatial_dims}D) takes {layout} inputs with C={self.in_channels}; "
                f"got shape {list(x.shape)}."
            )
        return self.net(x)

    def forward_head(self, features: torch.Tensor, site: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, num_classes]`` from pooled features (and site indices, for a centre-aware model)."""
        if self.site_embedding is None:
            return self.head(features)
        if site is None:
            site = torch.full((len(features),), UNKNOWN_SITE, dtype=torch.long, device=features.device)
        elif self.training:
            site = torch.where(torch.rand(site.shape, device=site.device) < SITE_DROPOUT, UNKNOWN_SITE, site)
        return self.head(torch.cat([features, self.site_embedding(site).to(features.dtype)], dim=1))

    def forward(self, x: torch.Tensor, site: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, num_classes]``; ``site`` (``[B]`` indices from :meth:`site_index`) is read when centre-aware.

        A centre-aware model given no ``site`` treats every item as from an unknown site.
        """
        return self.forward_head(self.forward_features(x), site)

    def use_sites(self, sites: Sequence[str], dim: int = 8) -> None:
        """Make the model centre-aware: a ``dim``-wide embedding per site (plus the unknown one), and a fresh head.

        Called after pretrained weights are loaded (their head would not fit the wider input anyway).

        Raises
        ------
        ConfigurationError
            When ``sites`` is empty or repeats a site, or ``dim`` is not a positive integer.
        """
        _check_positive("dim", dim)
        if not sites or len(set(sites)) != len(sites):
            raise ConfigurationError(f"A centre-aware model needs distinct training sites; got {len(sites)} name(s).")
        weight = self.head.weight
        self.sites = tuple(sites)
        self.site_embedding = nn.Embedding(len(sites) + 1, dim, device=weight.device, dtype=weight.dtype)
        self.head = nn.Linear(self.num_features + dim, self.num_classes, device=weight.device, dtype=weight.dtype)

    def site_index(self, sites: Sequence[str]) -> torch.Tensor:
        """Embedding rows ``[B]`` of site names; a site not seen in training gets :data:`UNKNOWN_SITE`."""
        rows = {site: i + 1 for i, site in enumerate(self.sites)}
        return torch.tensor([rows.get(site, UNKNOWN_SITE) for site in sites], dtype=torch.long)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs (same device and dtype)."""
        _check_positive("num_classes", num_classes)
        weight = self.head.weight
        self.head = nn.Linear(self.head.in_features, num_classes, device=weight.device, dtype=weight.dtype)
        self.num_classes = num_classes

    def layer_groups(self, granularity: str = "stage") -> list[LayerGroup]:
        """Ordered groups from input to output, each parameter in one group.

        ``"stage"`` gives ``stem, stage1..stageN, head``; ``"block"`` cuts the stages into their
        blocks (``stem, stage1.0, ..., stage4.1, head`` for ResNet-18), so that freezing can
        leave all but the last block of the last stage frozen.
        """
        head = self.head if self.site_embedding is None else nn.ModuleList([self.head, self.site_embedding])
        return build_layer_groups(self.net, self.config.matcher(granularity), head)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, "
            f"num_features={self.num_features}, num_classes={self.num_classes}, sites={len(self.sites)}"
        )


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name!r} must be a positive integer; got {value!r}.")


def _set_input_channels(net: nn.Module, name: str, in_channels: int) -> None:
    """Rebuild the first convolution for ``in_channels`` (same geometry, Kaiming initialisation as upstream)."""
    old = net.get_submodule(name)
    if not isinstance(old, nn.Conv2d | nn.Conv3d):
        raise TypeError(f"First convolution {name!r} is a {type(old).__name__}, not a Conv2d/Conv3d.")
    if old.in_channels == in_channels:
        return
    new = type(old)(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    net.set_submodule(name, new)

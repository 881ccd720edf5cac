"""Grad-CAM: where in the image (or volume) the model looked, with MONAI's ``GradCAM``.

Works for 2D ``[N, C, H, W]`` and 3D ``[N, C, D, H, W]`` inputs; the map is
upsampled to the input size and scaled to [0, 1] per sample. Models of the zoo
name their target layer in ``model.gradcam_layer``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from monai.visualize import GradCAM
from torch import nn

from clinical.errors import ConfigurationError

__all__ = ["gradcam", "gradcam_figure"]

logger = logging.getLogger(__name__)


def _layer_name(model: nn.Module, target_layer: str | None) -> str:
    name = target_layer if target_layer is not None else getattr(model, "gradcam_layer", None)
    if not isinstance(name, str):
        raise ConfigurationError(
            f"target_layer must name a module of the model; got {target_layer!r} and the model "
            f"({type(model).__name__}) has no 'gradcam_layer' attribute. Pass e.g. target_layer='layer4'."
        )
    names = dict(model.named_modules())
    if name not in names or name == "":
        convolutions = [n for n, m in names.items() if isinstance(m, nn.Conv2d | nn.Conv3d)]
        raise ConfigurationError(
            f"target_layer {name!r} is not a module of {type(model).__name__}; convolutional modules include "
            f"{convolutions[-3:]}. Use the last convolutional stage."
        )
    return name


def _scale_to_unit(maps: torch.Tensor) -> torch.Tensor:
    """Scale each sample's map to [0, 1] with 1 = most evidence; a constant map becomes 0.

    Replaces MONAI's ``default_normalizer``, which maps the maximum to 0 (it flips
    magnitudes, as its docstring notes), so that maps read the usual way.
    """
    flat = maps.flatten(1)
    low = flat.min(dim=1).values.view(-1, *[1] * (maps.ndim - 1))
    span = (flat.max(dim=1).values.view_as(low) - low).clamp_min(1e-12)
    return (maps - low) / span


def gradcam(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    *,
    target_layer: str | None = None,
    class_index: int | None = None,
) -> np.ndarray:
    """Grad-CAM maps of a batch, one per sample.

    Parameters
    ----------
    model
        A classifier returning logits ``[N, num_classes]``. Its training mode is
        restored afterwards; frozen parameters are fine.
    x
        Batch of images ``[N, C, H, W]`` or volumes ``[N, C, D, H, W]``, already
        preprocessed as the model expects, on the model's device.
    target_layer
        Name of the module whose activations are weighted (as in
        ``model.named_modules()``); default ``model.gradcam_layer``.
    class_index
        Class whose evidence is shown; default the predicted class of each sample.

    Returns
    -------
    numpy.ndarray
        float32 maps of shape ``[N, H, W]`` or ``[N, D, H, W]`` in [0, 1].

    Raises
    ------
    ConfigurationError
        ``x`` is not 4- or 5-dimensional, the layer does not exist, or
        ``class_index`` is outside the model's outputs.
    """
    x = torch.as_tensor(x, dtype=torch.float32) if isinstance(x, np.ndarray) else x
    if x.ndim not in (4, 5):
        raise ConfigurationError(
            f"x must be a batch [N, C, H, W] or [N, C, D, H, W]; got shape {tuple(x.shape)}. Add the batch axis "
            "with x[None]."
        )
    layer = _layer_name(model, target_layer)
    device = next(model.parameters()).device
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=_scale_to_unit)
    maps = []
    was_training = model.training
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # MONAI's full-backward-hook notice on in-place ReLUs
            # One sample at a time: with class_idx=None MONAI scores logits[:, argmax of every sample] and sums
            # them, which mixes classes when a batch holds different predictions.
            for sample in x.to(device):
                sample = sample[None].detach().clone().requires_grad_(True)  # grads reach frozen layers too
                with torch.no_grad():
                    logits = model.eval()(sample)
                if class_index is not None and not 0 <= class_index < logits.shape[1]:
                    raise ConfigurationError(f"class_index must be in 0…{logits.shape[1] - 1}; got {class_index}.")
                index = int(logits.argmax(dim=1).item()) if class_index is None else class_index
                maps.append(cam(sample, class_idx=index).detach().cpu().numpy()[0, 0])
    finally:
        model.train(was_training)
    return np.stack(maps).astype(np.float32)


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Image for imshow: RGB for 3 channels, otherwise the first channel, scaled by its 1st–99th percentile."""
    if image.shape[0] == 3:
        rgb = np.moveaxis(image, 0, -1).astype(np.float64)
        low, high = np.percentile(rgb, [1, 99])
        return np.clip((rgb - low) / max(high - low, 1e-8), 0, 1), None
    grey = image[0].astype(np.float64)
    low, high = np.percentile(grey, [1, 99])
    return np.clip((grey - low) / max(high - low, 1e-8), 0, 1), "gray"


def gradcam_figure(
    images: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    maps: Sequence[np.ndarray] | np.ndarray,
    titles: Sequence[str] | None = None,
    *,
    alpha: float = 0.45,
    columns: int = 4,
) -> Figure:
    """Grid of images with their Grad-CAM maps overlaid.

    Parameters
    ----------
    images
        ``[N, C, H, W]`` or ``[N, C, D, H, W]`` (channels first, as the model saw them).
    maps
        From :func:`gradcam`: ``[N, H, W]`` or ``[N, D, H, W]``.
    titles
        One per image, e.g. ``"BPD, p=0.91"``; for volumes the slice shown is appended.
    alpha
        Opacity of the heat map.
    columns
        Panels per row.

    Notes
    -----
    For a volume the axial slice (along D) with the largest summed activation is shown.
    """
    images = [np.asarray(i.detach().cpu() if isinstance(i, torch.Tensor) else i) for i in images]
    maps = [np.asarray(m) for m in maps]
    if len(images) != len(maps) or not images:
        raise ConfigurationError(
            f"need one map per image and at least one; got {len(images)} images and {len(maps)} maps."
        )
    titles = list(titles) if titles is not None else [f"#{i}" for i in range(len(images))]
    if len(titles) != len(images):
        raise ConfigurationError(f"need one title per image; got {len(titles)} for {len(images)} images.")
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(3.0 * columns + 0.8, 3.1 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    heat = None
    for ax, image, heatmap, title in zip(axes, images, maps, titles, strict=False):
        if image.ndim != heatmap.ndim + 1 or image.shape[1:] != heatmap.shape:
            raise ConfigurationError(
                f"image of shape {image.shape} and map of shape {heatmap.shape} do not match; the map must have "
                "the image's spatial shape (channels first image, no channel axis in the map)."
            )
        if heatmap.ndim == 3:
            depth = int(heatmap.reshape(heatmap.shape[0], -1).sum(axis=1).argmax())
            image, heatmap = image[:, depth], heatmap[depth]
            title = f"{title} (slice {depth})"
        shown, cmap = _display(image)
        ax.imshow(shown, cmap=cmap)
        heat = ax.imshow(heatmap, cmap="jet", alpha=alpha, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    figure.colorbar(heat, ax=list(axes), shrink=0.8, label="Grad-CAM (scaled per image)")
    return figure

"""Pretrained weights: from a local file, a mapping or a registered loader — never a download.

:func:`load_pretrained` takes a plain state dict or a checkpoint (``{"state_dict": ...}``,
``{"model": ...}``, Lightning's ``model.`` or DataParallel's ``module.`` prefixes, our
own :func:`save_backbone` files) in torchvision, TorchXRayVision, MONAI or MedicalNet
naming, and loads it strictly: every backbone tensor must be found with the right
shape, or :class:`~clinical.errors.WeightsError` names the key and both shapes. Only
the head is on the allow-list: it is re-initialised when the class count differs.

Two adaptations are made on the way, and reported:

- the first convolution is folded to the model's input channels (RGB → grey: sum over
  input channels; grey → RGB: replicate and divide by 3), so that a grey image
  replicated on three channels gives the same output through either network;
- 2D kernels are inflated to 3D (I3D: repeated along depth and divided by the depth,
  or placed on the centre slice), so that 2D weights start a 3D network.

Sources other than files (the MLflow registry, ``models:/NAME@alias``) are plugged in
with :func:`register_weights_loader` by the layer that knows them.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import torch

from clinical.errors import WeightsError
from clinical.models.classifier import ClassifierModel
from clinical.models.weights_report import WeightsReport

__all__ = [
    "BACKBONE_FORMAT",
    "WeightsSource",
    "adapt_input_channels",
    "inflate_2d_to_3d",
    "load_pretrained",
    "load_state_dict_from",
    "register_weights_loader",
    "save_backbone",
]

logger = logging.getLogger(__name__)

#: Marks the files :func:`save_backbone` writes.
BACKBONE_FORMAT = "clinical.backbone/1"

#: A local path, a ``scheme:...`` URI with a registered loader, a state dict, or a callable returning one.
WeightsSource = str | Path | Mapping[str, object] | Callable[[], Mapping[str, object]]

Inflation = Literal["mean", "center"]

_LOADERS: dict[str, Callable[[str], Mapping[str, object]]] = {}

#: Where checkpoint formats keep the weights, tried in order.
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "backbone", "weights")

_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):")


def register_weights_loader(scheme: str, loader: Callable[[str], Mapping[str, object]]) -> None:
    """Let ``pretrained="SCHEME:..."`` fetch weights through ``loader(uri)``.

    The tracking layer registers ``models`` this way, so ``models:/NAME@alias`` works
    without this package importing MLflow. A later registration of the same scheme wins.
    """
    _LOADERS[scheme] = loader


def load_state_dict_from(source: WeightsSource) -> tuple[dict[str, torch.Tensor], dict[str, object], str]:
    """Read a source into ``(state dict, checkpoint metadata, description)``.

    The state dict is unwrapped from its checkpoint container; prefixes are left alone
    (:func:`load_pretrained` finds them against the model).

    Raises
    ------
    WeightsError
        When the file is missing or unreadable, the scheme has no loader, or no tensors are found.
    """
    if callable(source) and not isinstance(source, Mapping):
        raw, description = source(), f"<{getattr(source, '__name__', 'callable')}>"
    elif isinstance(source, Mapping):
        raw, description = source, "<mapping>"
    else:
        raw, description = _read(source)
    if not isinstance(raw, Mapping):
        raise WeightsError(f"Weights from {description} are a {type(raw).__name__}, not a state dict or checkpoint.")
    return (*_unwrap(raw, description), description)


def load_pretrained(model: ClassifierModel, source: WeightsSource, *, inflation: Inflation = "mean") -> WeightsReport:
    """Load weights into ``model`` strictly, folding channels and inflating 2D kernels; return the report.

    Parameters
    ----------
    model
        A model from :func:`clinical.models.create_model`.
    source
        A local ``.pt``/``.pth`` file, a ``scheme:...`` URI with a loader, a state dict, or a
        callable returning one (or a checkpoint holding one).
    inflation
        How 2D kernels become 3D: ``"mean"`` repeats them along depth and divides by the depth
        (I3D: a volume of identical slices gives the 2D activations away from the depth borders);
        ``"center"`` puts them on the centre slice (identical slices give the 2D activations exactly).

    Raises
    ------
    WeightsError
        When a backbone tensor is missing or has another shape (the message names the key and both
        shapes), or when the source was saved from another architecture.
    """
    if inflation not in ("mean", "center"):
        raise WeightsError(f"'inflation' must be 'mean' or 'center'; got {inflation!r}.")
    state, meta, description = load_state_dict_from(source)
    arch = meta.get("arch")
    if arch is not None and arch != model.name:
        raise WeightsError(
            f"{description} holds a {arch} backbone; it cannot initialise a {model.name}. "
            f"Create the model with create_model({arch!r}, ...)."
        )
    config = model.config
    targets = model.net.state_dict()
    head_keys = {f"{config.classifier}.{k}": f"head.{k}" for k in model.head.state_dict()}
    expected = set(targets) | set(head_keys)
    remapped = {_remap(key, config.key_remaps): key for key in state}
    prefix = _common_prefix(remapped, expected)
    found: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, original in remapped.items():
        name = _from_wrapper(key[len(prefix) :], config.classifier) if key.startswith(prefix) else None
        if name in expected:
            found[name] = state[original]
        else:
            unexpected.append(original)
    unexpected.sort()

    new_state = model.state_dict()
    loaded, adapted, missing, errors = [], [], [], []
    first_conv_weight = f"{config.first_conv}.weight"
    for key, target in targets.items():
        if key not in found:
            (missing if key.endswith("num_batches_tracked") else errors).append(key)
            continue
        value = torch.as_tensor(found[key])
        if value.shape != target.shape:
            value, how = _adapt(key, value, target, is_first_conv=key == first_conv_weight, inflation=inflation)
            if how:
                adapted.append(key)
        new_state[f"net.{key}"] = value.to(dtype=target.dtype)
        loaded.append(key)
    if errors:
        shown = ", ".join(errors[:5])
        raise WeightsError(
            f"{description} lacks {len(errors)} of the {len(targets)} backbone tensors of {model.name} "
            f"({model.spatial_dims}D), e.g. {shown}. It was saved from another architecture or naming; "
            f"keys in the file start like {sorted(state)[:3]}."
        )

    reinitialised = []
    head_fits = all(k in found and found[k].shape == model.state_dict()[v].shape for k, v in head_keys.items())
    for key, ours in head_keys.items():
        if head_fits:
            new_state[ours] = torch.as_tensor(found[key])
            loaded.append(key)
        else:
            reinitialised.append(key)
    model.load_state_dict(new_state, strict=True)
    report = WeightsReport(
        source=description,
        loaded=tuple(loaded),
        adapted=tuple(adapted),
        reinitialised=tuple(reinitialised),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
    )
    model.weights_report = report
    logger.info("%s (%dD): %s", model.name, model.spatial_dims, report.summary())
    if unexpected:
        logger.warning(
            "%s: %d source tensor(s) have no place in %s and were ignored: %s",
            description,
            len(unexpected),
            model.name,
            unexpected[:5],
        )
    return report


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Fold a first-convolution kernel ``[out, c, *k]`` to ``in_channels`` input channels.

    Fewer channels: source channel ``i`` is added into channel ``i % in_channels`` (RGB → grey
    sums the three). More channels: the source channels are repeated cyclically and each copy
    divided by its number of copies (grey → RGB replicates and divides by 3). Either way the
    kernel's sum over input channels is kept, so an image replicated on every channel gives
    the same output through the folded network as through the original.
    """
    have = weight.shape[1]
    if in_channels == have:
        return weight
    if in_channels < have:
        folded = weight.new_zeros(weight.shape[0], in_channels, *weight.shape[2:])
        for channel in range(have):
            folded[:, channel % in_channels] += weight[:, channel]
        return folded
    source = [channel % have for channel in range(in_channels)]
    copies = torch.tensor([source.count(channel) for channel in source], dtype=weight.dtype, device=weight.device)
    return weight[:, source] / copies.view(1, -1, *([1] * (weight.ndim - 2)))


def inflate_2d_to_3d(weight: torch.Tensor, depth: int, *, mode: Inflation = "mean") -> torch.Tensor:
    """Inflate a 2D kernel ``[out, in, h, w]`` to ``[out, in, depth, h, w]``.

    ``"mean"`` (I3D, Carreira & Zisserman 2017) repeats it ``depth`` times and divides by ``depth``;
    ``"center"`` puts it on the centre slice and zeros elsewhere.
    """
    if mode == "mean":
        return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
    out = weight.new_zeros(weight.shape[0], weight.shape[1], depth, *weight.shape[2:])
    out[:, :, depth // 2] = weight
    return out


def save_backbone(model: ClassifierModel, path: str | Path, *, meta: Mapping[str, object] | None = None) -> Path:
    """Write the backbone of ``model`` (without its head) to ``path``, in upstream naming.

    The file loads with ``create_model(model.name, pretrained=path)`` (the head is then
    re-initialised), and, being a plain state dict under ``"state_dict"``, with torchvision
    or MONAI directly. It is written to a temporary name and renamed, so it is never half written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": BACKBONE_FORMAT,
        "arch": model.name,
        "spatial_dims": model.spatial_dims,
        "in_channels": model.in_channels,
        "num_features": model.num_features,
        "meta": dict(meta or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def _read(source: str | Path) -> tuple[object, str]:
    text = str(source)
    match = _URI.match(text)
    if match and not Path(text).exists():
        scheme = match.group("scheme")
        if scheme not in _LOADERS:
            raise WeightsError(
                f"No weights loader for {scheme!r} URIs (got {text!r}); registered schemes: {sorted(_LOADERS)}. "
                "Pass a local file, or register one with clinical.models.register_weights_loader."
            )
        return _LOADERS[scheme](text), text
    path = Path(source)
    if not path.is_file():
        raise WeightsError(f"Pretrained weights file {path} does not exist; pass the path of a .pt/.pth file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True), path.name
    except Exception as error:  # torch raises many types for a corrupt or pickled-object file
        raise WeightsError(
            f"Could not read weights from {path.name}: {error.__class__.__name__}: {str(error)[:200]}. "
            "Only tensors, plain containers and numbers are read (weights_only); re-save a state dict."
        ) from error


def _unwrap(raw: Mapping[str, object], description: str) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Find the state dict inside a checkpoint; return it with the checkpoint's other entries."""
    meta: dict[str, object] = {}
    current: Mapping[str, object] = raw
    for _ in range(3):
        if current and all(isinstance(v, torch.Tensor) for v in current.values()):
            break
        inner = next((k for k in _CONTAINER_KEYS if isinstance(current.get(k), Mapping)), None)
        if inner is None:
            break
        if current.get("format") == BACKBONE_FORMAT:
            meta = {k: v for k, v in current.items() if k != inner}
        current = current[inner]
    tensors = {str(k): v for k, v in current.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(
            f"No tensors found in {description}; expected a state dict or a checkpoint with one under "
            f"one of {list(_CONTAINER_KEYS)}; top-level keys: {sorted(map(str, raw))[:8]}."
        )
    return tensors, meta


def _remap(key: str, remaps: tuple[tuple[str, str], ...]) -> str:
    for pattern, replacement in remaps:
        key = re.sub(pattern, replacement, key)
    return key


def _from_wrapper(key: str, classifier: str) -> str:
    """A state dict of a whole ``ClassifierModel`` names its parts ``net.*`` and ``head.*``."""
    if key.startswith("net."):
        return key[4:]
    if key.startswith("head."):
        return f"{classifier}.{key[5:]}"
    return key


def _common_prefix(state: Mapping[str, object], expected: set[str]) -> str:
    """The wrapper prefix (``module.``, ``model.``, ``model.net.``, ...) most source keys carry.

    For each key the longest tail that names a model tensor is found; the prefix before it
    that most keys share wins. Keys without it are reported as unexpected.
    """
    names = expected | {f"net.{k}" for k in expected} | {"head.weight", "head.bias"}
    votes: Counter[str] = Counter()
    for key in state:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in names:
                votes[".".join(parts[:i]) + ("." if i else "")] += 1
                break
    return votes.most_common(1)[0][0] if votes else ""


def _adapt(
    key: str, value: torch.Tensor, target: torch.Tensor, *, is_first_conv: bool, inflation: Inflation
) -> tuple[torch.Tensor, bool]:
    """Inflate and fold ``value`` to ``target``'s shape, or raise naming the key and both shapes."""
    original = tuple(value.shape)
    if value.ndim == 4 and target.ndim == 5:
        value = inflate_2d_to_3d(value, target.shape[2], mode=inflation)
    if is_first_conv and value.ndim == target.ndim and value.shape[0] == target.shape[0]:
        value = adapt_input_channels(value, target.shape[1])
    if value.shape != target.shape:
        raise WeightsError(
            f"Pretrained tensor {key!r} has shape {list(original)} but the model expects {list(target.shape)}; "
            "only the head may differ. Check the architecture (name, spatial_dims) matches the weights."
        )
    return value, True

"""What a site sends in a federated round: the tensors of the layer groups that train, and their size.

The groups come from ``model.layer_groups(config.group_granularity)`` and the round's trainable ones from the
engine's :class:`~clinical.training.FreezeSchedule` (the plan of the round's stage), so federated
and site-level training freeze the same blocks in the same order. Frozen groups do not
change during a round (their weights have no gradient and their BatchNorm statistics are
frozen too), so sending them back would only cost bandwidth: a site packs the state
entries (parameters and buffers) of the trainable groups only.

How much that saves depends on the granularity: a ResNet's last stage holds
60-75 % of its parameters, so at ``"stage"`` granularity a site sends little
only while the head alone trains; at ``"block"`` granularity the last residual
block of a ResNet-50 (19 %) or the last chunks of a DenseNet-121 train for
under a fifth of the full model's bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from clinical.errors import ConfigurationError
from clinical.models import LayerGroup
from clinical.training import FreezeSchedule, StagePlan, TrainConfig

__all__ = [
    "full_state",
    "group_state_keys",
    "pack_groups",
    "payload_bytes",
    "round_plan",
    "trainable_groups",
    "unpack_into",
]


def round_plan(groups: Sequence[LayerGroup], config: TrainConfig, server_round: int) -> StagePlan:
    """The engine's freezing schedule's plan for ``server_round`` (1-based): its groups and learning rates.

    In federated training a progressive stage lasts ``config.unfreeze_every``
    rounds (the engine counts epochs; a round plays that part here), so round
    ``r`` is in stage ``(r - 1) // unfreeze_every``.

    Raises
    ------
    ConfigurationError
        For a round below 1, or a progressive schedule driven by ``unfreeze_patience``
        (that rule needs one validation score per round, which the server does not own).
    """
    if server_round < 1:
        raise ConfigurationError(f"server_round counts from 1; got {server_round}.")
    if config.schedule == "progressive" and config.unfreeze_every is None:
        raise ConfigurationError(
            "Federated progressive training unfreezes on a fixed number of rounds; set unfreeze_every "
            f"(rounds per stage) instead of unfreeze_patience={config.unfreeze_patience}."
        )
    schedule = FreezeSchedule.from_recipe(groups, config)
    stage = (server_round - 1) // config.unfreeze_every if config.schedule == "progressive" else 0
    return schedule.plan(stage)


def trainable_groups(model: nn.Module, config: TrainConfig, server_round: int) -> list[str]:
    """Names of the groups that train in ``server_round``, input → output order."""
    plan = round_plan(model.layer_groups(config.group_granularity), config, server_round)
    return [group.name for group in reversed(plan.trainable)]


def group_state_keys(model: nn.Module, names: Iterable[str], granularity: str = "stage") -> list[str]:
    """``state_dict`` keys (parameters and buffers) held by the modules of the named groups of ``granularity``.

    The keys are found from the groups' module objects, not from name prefixes, so any
    model with ``layer_groups()`` works.

    Raises
    ------
    ConfigurationError
        When a name is not one of the model's groups.
    """
    groups = {group.name: group for group in model.layer_groups(granularity)}
    wanted = list(names)
    unknown = [name for name in wanted if name not in groups]
    if unknown:
        raise ConfigurationError(f"Unknown layer group(s) {unknown}; the model has {list(groups)}.")
    qualified = {id(module): name for name, module in model.named_modules()}
    keys: list[str] = []
    for name in wanted:
        for module in groups[name].modules:
            prefix = qualified[id(module)]
            keys.extend(module.state_dict(prefix=f"{prefix}." if prefix else "").keys())
    return list(dict.fromkeys(keys))


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the whole ``state_dict``."""
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def pack_groups(model: nn.Module, names: Iterable[str], granularity: str = "stage") -> dict[str, torch.Tensor]:
    """Detached CPU copies of the state entries of the named groups (of ``granularity``) only."""
    state = model.state_dict()
    return {key: state[key].detach().cpu().clone() for key in group_state_keys(model, names, granularity)}


def unpack_into(model: nn.Module, update: Mapping[str, torch.Tensor]) -> None:
    """Copy ``update`` (a subset of the model's state) into ``model`` in place.

    Raises
    ------
    ConfigurationError
        When a key is not in the model's state or a shape differs.
    """
    state = model.state_dict()
    for key, value in update.items():
        if key not in state or tuple(state[key].shape) != tuple(value.shape):
            got = tuple(value.shape)
            want = tuple(state[key].shape) if key in state else "absent"
            raise ConfigurationError(f"Cannot load {key!r} of shape {got} into the model (its shape: {want}).")
        state[key].copy_(value)


def payload_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of tensor data in ``state`` (``numel × element size``; the message framing is extra)."""
    return sum(value.numel() * value.element_size() for value in state.values())

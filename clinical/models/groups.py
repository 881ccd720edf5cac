"""Layer groups: a network cut into ordered blocks (stem, stages, head).

Progressive freezing and discriminative (layer-wise) learning rates act on
these groups, never on parameter-name prefixes scattered through the engine.

Like timm's ``group_matcher(coarse=...)``, every model declares its groups at two
granularities: ``"stage"`` (stem, stage1..4, head) and ``"block"`` (stem, each
residual block or chunk of dense layers, head). Block groups let progressive
freezing and federated exchange stop inside the last stage, which in a ResNet
holds most of the parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["LayerGroup", "build_layer_groups", "parameter_shares"]


@dataclass(frozen=True)
class LayerGroup:
    """One block of a network, e.g. ``"stem"``, ``"stage3"`` or ``"head"``.

    Attributes
    ----------
    name
        Group name; groups of a model are ordered from input to output.
    modules
        The modules the group holds; together the groups of a model hold every parameter once.
    """

    name: str
    modules: tuple[nn.Module, ...]

    def parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter of the group's modules, each once."""
        seen: set[int] = set()
        for module in self.modules:
            for parameter in module.parameters():
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    yield parameter

    def requires_grad_(self, requires_grad: bool = True) -> LayerGroup:
        """Freeze (``False``) or unfreeze the group's parameters; returns the group."""
        for parameter in self.parameters():
            parameter.requires_grad_(requires_grad)
        return self


def build_layer_groups(
    net: nn.Module, matcher: Sequence[tuple[str, Sequence[str]]], head: nn.Module
) -> list[LayerGroup]:
    """Groups of ``net`` from ``(name, module-name prefixes)`` pairs, then ``head`` as the last group.

    Raises
    ------
    RuntimeError
        When the matcher leaves a parameter out or puts one in two groups: a registry bug,
        caught by the tests for every registered model.
    """
    groups = [LayerGroup(name, tuple(net.get_submodule(prefix) for prefix in prefixes)) for name, prefixes in matcher]
    groups.append(LayerGroup("head", (head,)))
    counts: dict[int, int] = {}
    for group in groups:
        for parameter in group.parameters():
            counts[id(parameter)] = counts.get(id(parameter), 0) + 1
    expected = {id(p) for p in net.parameters()} | {id(p) for p in head.parameters()}
    if set(counts) != expected or any(c != 1 for c in counts.values()):
        names = [n for n, p in net.named_parameters() if counts.get(id(p), 0) != 1]
        raise RuntimeError(f"Layer groups must hold every parameter exactly once; these do not: {names[:5]}.")
    return groups


def parameter_shares(groups: Sequence[LayerGroup]) -> dict[str, float]:
    """Each group's share of the parameters (input → output order); what training the group costs to send."""
    counts = {group.name: sum(p.numel() for p in group.parameters()) for group in groups}
    total = sum(counts.values())
    return {name: count / total for name, count in counts.items()}

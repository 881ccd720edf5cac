"""What loading pretrained weights did: its own module so the model can hold one without importing the loader."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WeightsReport"]


@dataclass(frozen=True)
class WeightsReport:
    """What loading pretrained weights did, key by key (model key names, without the ``net.`` prefix).

    Attributes
    ----------
    source
        A description of the source (file name, loader URI or ``"<mapping>"``).
    loaded
        Keys copied from the source (possibly adapted).
    adapted
        Keys whose tensors were folded to other input channels or inflated from 2D.
    reinitialised
        Head keys kept at their fresh initialisation (absent from the source, or another class count).
    missing
        Other model keys absent from the source that are allowed to be (BatchNorm's ``num_batches_tracked``).
    unexpected
        Source keys with no place in the model (e.g. a segmentation head), ignored.
    """

    source: str
    loaded: tuple[str, ...]
    adapted: tuple[str, ...]
    reinitialised: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.adapted:
            parts.append(f"adapted {list(self.adapted)}")
        if self.reinitialised:
            parts.append(f"re-initialised {list(self.reinitialised)}")
        if self.missing:
            parts.append(f"{len(self.missing)} allowed missing")
        if self.unexpected:
            parts.append(f"ignored {len(self.unexpected)} unexpected (first: {list(self.unexpected[:3])})")
        return "; ".join(parts)

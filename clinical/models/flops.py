"""Parameter counts and FLOPs of the registered models, measured with torch's ``FlopCounterMode``.

``python -m clinical.models.flops docs/models.md`` regenerates the table in the docs.
FLOPs count a multiply-add as two operations (torch's convention) for one forward
pass of one input; they scale with the number of pixels (voxels).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from clinical.models.classifier import ClassifierModel
from clinical.models.factory import create_model
from clinical.models.registry import get_model_config, list_models

__all__ = ["DEFAULT_INPUTS", "Complexity", "complexity_table", "count_flops", "markdown_table", "model_complexity"]

logger = logging.getLogger(__name__)

#: Spatial size the table is measured at: a 224² radiograph, a 32×112×112 volume (video models' usual clip).
DEFAULT_INPUTS: dict[int, tuple[int, ...]] = {2: (224, 224), 3: (32, 112, 112)}


@dataclass(frozen=True)
class Complexity:
    """Size and cost of one model at one input size."""

    name: str
    spatial_dims: int
    description: str
    input_shape: tuple[int, ...]
    parameters: int
    flops: int


def count_flops(model: torch.nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass of ``model`` on a zero tensor of ``input_shape`` (batch included)."""
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(*input_shape))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_complexity(
    name: str, spatial_dims: int, *, in_channels: int = 1, size: Sequence[int] | None = None
) -> Complexity:
    """Parameters and FLOPs of ``create_model(name, spatial_dims=..., in_channels=..., num_classes=2)``."""
    model: ClassifierModel = create_model(name, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=2)
    shape = (1, in_channels, *(size or DEFAULT_INPUTS[spatial_dims]))
    return Complexity(
        name=name,
        spatial_dims=spatial_dims,
        description=get_model_config(name, spatial_dims).description,
        input_shape=shape,
        parameters=sum(p.numel() for p in model.parameters()),
        flops=count_flops(model, shape),
    )


def complexity_table(*, in_channels: int = 1) -> list[Complexity]:
    """:func:`model_complexity` of every registered model at :data:`DEFAULT_INPUTS`."""
    return [
        model_complexity(name, dims, in_channels=in_channels)
        for dims in (2, 3)
        for name in list_models(spatial_dims=dims)
    ]


def markdown_table(rows: Sequence[Complexity]) -> str:
    """A Markdown table: model, dims, upstream, input, parameters (millions), GFLOPs."""
    lines = [
        "| model | dims | network | input (B, C, …) | parameters (M) | GFLOPs |",
        "|---|---|---|---|---:|---:|",
    ]
    for row in rows:
        shape = "×".join(str(s) for s in row.input_shape)
        lines.append(
            f"| `{row.name}` | {row.spatial_dims}D | {row.description} | {shape} | "
            f"{row.parameters / 1e6:.2f} | {row.flops / 1e9:.2f} |"
        )
    return "\n".join(lines)


def _write_doc(path: Path) -> None:
    """Replace the generated table in ``path`` (between the two markers) with a fresh one."""
    begin, end = "<!-- models-table:begin -->", "<!-- models-table:end -->"
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} lacks the markers {begin} and {end}.")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    table = markdown_table(complexity_table())
    path.write_text(f"{head}{begin}\n{table}\n{end}{tail}")
    logger.info("Wrote the model table to %s", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Regenerate the parameter/FLOP table of the model zoo.")
    parser.add_argument("doc", type=Path, help="Markdown file holding the table markers")
    logging.basicConfig(level=logging.INFO)
    _write_doc(parser.parse_args().doc)

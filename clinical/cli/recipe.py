"""Command-line flags made from a pydantic config's fields, so a flag can never drift from the recipe.

Each field ``some_name`` becomes ``--some-name`` with the field's type, choices
(for a ``Literal``), description and default in its help; ``X | None`` fields
also take ``none``; booleans take ``--flag`` / ``--no-flag``. Only flags the
user gives override the base values (``--config`` or the defaults).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

__all__ = ["add_config_arguments", "config_values"]


def add_config_arguments(group: argparse._ActionsContainer, model: type[BaseModel]) -> None:
    """One flag per field of ``model``, named after the field (``_`` → ``-``), in ``group``."""
    for name, field in model.model_fields.items():
        kwargs: dict[str, Any] = {"dest": name, "default": None}
        annotation, optional = _unwrap_optional(field.annotation)
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is Literal:
            kwargs["choices"] = [*typing.get_args(annotation), *(["none"] if optional else [])]
        elif typing.get_origin(annotation) is tuple:
            kwargs |= {"type": _scalar(typing.get_args(annotation)[0], optional), "nargs": "+", "metavar": "N"}
        else:
            kwargs["type"] = _scalar(annotation, optional)
            kwargs["metavar"] = annotation.__name__.upper()
        default = field.get_default(call_default_factory=True)
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        kwargs["help"] = f"{field.description or name.replace('_', ' ')} (default: {shown})"
        group.add_argument(f"--{name.replace('_', '-')}", **kwargs)


def config_values(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The fields the user gave on the command line (``none`` → ``None``; lists → tuples)."""
    values: dict[str, Any] = {}
    for name in model.model_fields:
        value = getattr(args, name, None)
        if value is None:
            continue
        if value == "none":
            value = None
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


def _scalar(kind: type, optional: bool) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return "none" if optional and text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse

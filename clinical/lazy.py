"""Names a package re-exports, imported on first use.

A package whose ``__init__`` imported every module would make each import of one of its modules
pay for all of them: ``clinical --help`` would wait for torch and MONAI, and every spawned ingest
worker (which imports the script it was started from) for pandas. SciPy's lazy loading, by hand:
``lazy_loader.attach`` serves only a package's own submodules, and ``clinical.workflows`` re-exports
from other packages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, sources: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose names come from ``sources`` (name → module)."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace.get("__all__", sources))

    return __getattr__, __dir__

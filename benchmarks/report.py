"""One JSON line per measurement: ours, the baseline, and their ratio."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable

__all__ = ["best_of", "emit"]


def emit(name: str, *, ours: float, baseline: float, unit: str, higher_is_better: bool, **extra: object) -> dict:
    """Print and return one measurement.

    ``ratio`` is ours / baseline, so with ``higher_is_better`` a ratio above 1
    means we win; otherwise below 1 means we win.
    """
    record = {
        "benchmark": name,
        "ours": ours,
        "baseline": baseline,
        "unit": unit,
        "ratio": ours / baseline if baseline else float("nan"),
        "higher_is_better": higher_is_better,
        "python": platform.python_version(),
        "machine": platform.machine(),
        **extra,
    }
    print(json.dumps(record), file=sys.stdout, flush=True)
    return record


def best_of(fn: Callable[[], object], *, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls in seconds; the minimum is the least noisy estimate on a shared machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

"""Run every benchmark (or the ones named) each in its own process, so one cannot warm the next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(names: list[str]) -> int:
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    chosen = [m for m in modules if not names or m in names]
    unknown = sorted(set(names) - set(modules))
    if unknown:
        print(f"Unknown benchmark(s) {unknown}; available: {modules}", file=sys.stderr)
        return 2
    failed = [m for m in chosen if subprocess.run([sys.executable, "-m", f"benchmarks.{m}"], check=False).returncode]
    if failed:
        print(f"Benchmarks that failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The performance suite.

Each ``bench_*.py`` module measures the project and a baseline in the same
run and prints one JSON line per measurement through :func:`benchmarks.report.emit`
(both figures, their unit and the ratio). Run all with ``make bench`` or one
with ``python -m benchmarks bench_ingest``.
"""

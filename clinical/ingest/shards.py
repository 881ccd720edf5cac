"""Ingest sharded over a Ray cluster: the scan and the units of one ingest run as Ray tasks.

``ingest(..., ray_address=ADDRESS)`` walks, plans and merges in the calling process exactly as
a plain ingest does; only the two parallel stages leave it. :class:`RayPool` stands in for the
engine's process pool: its :attr:`~RayPool.executor` maps :func:`~clinical.ingest.scan.scan_files`
over chunks of files, and :meth:`~RayPool.run` maps :func:`~clinical.ingest.worker.run_unit` over shards
of units, so a sharded cohort is the plain cohort (same items, same digest).

Every node must see the sources and the cohort folder at the same paths (a shared volume):
workers save arrays into ``COHORT/arrays/`` and return rows, which the caller writes to
``parts/``. Nothing that travels carries PHI: units name files by pseudonym, and the paths
they carry are the ones every node reads anyway.

A worker killed mid-shard (a node lost, the kernel's OOM killer) is Ray's to retry:
each task has ``max_retries``, and only the attempt that finishes returns rows. Arrays are
named by item id and written under a temporary name, so a retried unit replaces what a dead
attempt left. A shard that still dies after its retries is split into single units, so a
poison unit, alone, is rejected (code ``worker-died``) and the rest of its shard is ingested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from itertools import islice

import ray
from ray.exceptions import NodeDiedError, OutOfMemoryError, WorkerCrashedError

from clinical.ingest.options import IngestOptions
from clinical.ingest.reasons import Reason
from clinical.ingest.units import Unit
from clinical.ingest.worker import Outcome, run_unit, unit_rejections

__all__ = ["SHARD_SIZE", "RayExecutor", "RayPool"]

#: Units per Ray task: enough to amortise a task's overhead, few enough to spread a small ingest.
SHARD_SIZE = 16

#: What a task fails with when its worker process or node died, rather than its code raising.
_DEATHS = (WorkerCrashedError, NodeDiedError, OutOfMemoryError)


class RayPool:
    """The engine's pool on a Ray cluster: scanning through :attr:`executor`, decoding through :meth:`run`.

    ``address`` is what :func:`ray.init` takes (``auto``, ``HOST:PORT``, ``ray://HOST:10001``). When
    Ray is already initialised in this process that connection is used and left open; otherwise
    the one opened here is closed by :meth:`RayExecutor.shutdown`.
    """

    def __init__(self, address: str, *, shard_size: int = SHARD_SIZE, max_retries: int = 3) -> None:
        if shard_size < 1 or max_retries < 0:
            raise ValueError(f"shard_size must be >= 1 and max_retries >= 0; got {shard_size}, {max_retries}.")
        self.executor = RayExecutor(address, max_retries=max_retries)
        self.shard_size = shard_size
        self.max_retries = max_retries

    def run(self, units: list[Unit], options: IngestOptions, cohort: str) -> Iterator[Outcome]:
        """The outcome of every unit, shard by shard as they finish; a few shards per CPU in flight."""
        task = ray.remote(_run_shard).options(max_retries=self.max_retries, retry_exceptions=False)
        shards = iter([units[i:i + self.shard_size] for i in range(0, len(units), self.shard_size)])
        limit = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        running: dict[ray.ObjectRef, list[Unit]] = {}
        alone: list[list[Unit]] = []  # units of shards that died after their retries, each to run by itself
        while True:
            while len(running) < limit and (shard := alone.pop() if alone else next(shards, None)) is not None:
                running[task.remote(shard, options, cohort)] = shard
            if not running:
                return
            [ready], _ = ray.wait(list(running), num_returns=1)
            shard = running.pop(ready)
            try:
                yield from ray.get(ready)
            except _DEATHS as error:
                if len(shard) > 1:
                    alone.extend([unit] for unit in shard)
                else:
                    reason = (f"decoder worker died on the cluster ({type(error).__name__}, "
                              f"{self.max_retries + 1} attempts); rerun with retry_failed=True to try again")
                    yield [], unit_rejections(shard[0], "decode", reason, Reason.WORKER_DIED)


class RayExecutor(Executor):
    """A :class:`concurrent.futures.Executor` whose calls are Ray tasks; :meth:`map` sends chunks, not calls.

    ``resources`` are what each task asks of the cluster, as :func:`ray.remote` takes them
    (``{"num_cpus": 4, "num_gpus": 1}``; default one CPU). A task whose worker dies is run again
    up to ``max_retries`` times.
    """

    def __init__(self, address: str, *, max_retries: int, resources: Mapping[str, float] | None = None) -> None:
        self._owned = not ray.is_initialized()
        if self._owned:
            ray.init(address=address, log_to_driver=False)
        self._options = {"max_retries": max_retries, **(resources or {})}

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` as a Ray task."""
        return ray.remote(fn).options(**self._options).remote(*args, **kwargs).future()

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None, chunksize: int = 1) -> Iterator:
        """``fn`` over the zipped ``iterables``, ``chunksize`` calls per task, results in order."""
        task = ray.remote(_map_chunk).options(**self._options)
        calls = zip(*iterables, strict=False)  # like Executor.map: to the shortest (itertools.repeat is endless)
        refs = [task.remote(fn, chunk) for chunk in iter(lambda: list(islice(calls, max(1, chunksize))), [])]
        for ref in refs:
            yield from ray.get(ref, timeout=timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Disconnect from the cluster when this executor connected (the cluster itself keeps running)."""
        if self._owned and ray.is_initialized():
            ray.shutdown()


def _run_shard(units: Sequence[Unit], options: IngestOptions, cohort: str) -> list[Outcome]:
    """Ray task: decode the units of one shard with :func:`~clinical.ingest.worker.run_unit` (which never raises)."""
    return [run_unit(unit, options, cohort) for unit in units]


def _map_chunk(fn: Callable, chunk: list[tuple]) -> list:
    """Ray task: ``fn`` over one chunk of argument tuples."""
    return [fn(*args) for args in chunk]

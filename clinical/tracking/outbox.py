"""Logging that never costs training.

Every call to the tracking server goes through an :class:`Outbox`. When the
server answers, the call is made at once; when it does not, the call waits
in order in the outbox (and in a JSON file beside the run's checkpoints) and
is retried before the next one and at the end of the fit. A run that started
against a live server therefore finishes training even if the server goes
away, and logs everything once it is back; if it is still away when the fit
ends, :func:`replay_outbox` sends the file later.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

__all__ = ["Outbox", "replay_outbox"]

logger = logging.getLogger(__name__)

#: MLflow's own HTTP retries back off for minutes; during training we would
#: rather queue the call and go on, so each attempt is quick.
QUICK_REQUESTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

#: Calls the outbox knows how to send again (by name, so the queue can be written as JSON).
_CALLS = ("log_batch", "set_tag", "log_artifact", "log_artifacts", "set_terminated", "log_text")


class Outbox:
    """Ordered, persistent queue of tracking calls for one run."""

    def __init__(self, client: MlflowClient, run_id: str, *, spool: Path | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.spool = spool
        self.pending: list[dict[str, Any]] = []

    def send(self, call: str, **kwargs: Any) -> bool:
        """Make one call now if the server answers (after everything queued before it); else queue it.

        Returns True when it was sent.
        """
        if call not in _CALLS:
            raise ValueError(f"Outbox call must be one of {_CALLS}; got {call!r}.")
        self.pending.append({"call": call, "kwargs": kwargs})
        sent = self.flush()
        if not sent:
            self._write_spool()
        return sent

    def flush(self) -> bool:
        """Send what is queued, oldest first; stop at the first failure. True when nothing is left."""
        with _quick_requests():
            while self.pending:
                entry = self.pending[0]
                try:
                    _dispatch(self.client, self.run_id, entry)
                except Exception as error:  # any failure to log must not stop training
                    logger.warning(
                        "Tracking server unavailable (%s); %d call(s) queued, training goes on.",
                        type(error).__name__,
                        len(self.pending),
                    )
                    return False
                self.pending.pop(0)
        self._write_spool()
        return True

    def drain(self, *, timeout: float, interval: float = 5.0) -> bool:
        """Retry until everything is sent or ``timeout`` seconds pass; True when all was sent."""
        deadline = time.monotonic() + timeout
        while not self.flush():
            if time.monotonic() >= deadline:
                logger.error(
                    "%d tracking call(s) could not be sent; they are kept in %s. "
                    "Send them later with clinical.tracking.replay_outbox(path).",
                    len(self.pending),
                    self.spool,
                )
                return False
            time.sleep(interval)
        return True

    def _write_spool(self) -> None:
        if self.spool is None:
            return
        if not self.pending:
            self.spool.unlink(missing_ok=True)
            return
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.spool.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": self.run_id, "pending": self.pending}, default=str))
        tmp.replace(self.spool)


def replay_outbox(path: str | Path, *, client: MlflowClient | None = None) -> int:
    """Send the calls a run could not send (from its spool file); return how many were sent."""
    data = json.loads(Path(path).read_text())
    outbox = Outbox(client or MlflowClient(), data["run_id"], spool=Path(path))
    outbox.pending = list(data["pending"])
    count = len(outbox.pending)
    if not outbox.flush():
        left = len(outbox.pending)
        raise ConnectionError(f"The tracking server still does not answer; {left} call(s) remain in {path}.")
    return count


def _dispatch(client: MlflowClient, run_id: str, entry: dict[str, Any]) -> None:
    call, kwargs = entry["call"], entry["kwargs"]
    if call == "log_batch":
        client.log_batch(
            run_id,
            metrics=[Metric(**m) for m in kwargs.get("metrics", [])],
            params=[Param(**p) for p in kwargs.get("params", [])],
            tags=[RunTag(**t) for t in kwargs.get("tags", [])],
        )
    else:
        getattr(client, call)(run_id, **kwargs)


@contextmanager
def _quick_requests() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in QUICK_REQUESTS}
    os.environ.update(QUICK_REQUESTS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

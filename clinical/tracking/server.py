"""Where runs go: checking a tracking server before hours of training, and starting one locally.

A run refuses to start when the configured server does not answer (see
:func:`require_tracking_server`); once started, a server that goes away is
handled by the callback, which keeps training and logs when it is back.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import mlflow

from clinical.errors import ConfigurationError

__all__ = [
    "LocalMlflowServer",
    "TrackingUnavailableError",
    "free_port",
    "require_tracking_server",
    "run_url",
    "server_is_up",
    "wait_until_up",
]

logger = logging.getLogger(__name__)


class TrackingUnavailableError(ConfigurationError):
    """The configured MLflow tracking server does not answer."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_is_up(uri: str, *, timeout: float = 2.0, path: str = "/health") -> bool:
    """True when ``uri + path`` answers 200. Non-HTTP URIs (SQLite, files) are always up."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + path, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_up(uri: str, *, path: str = "/health", timeout: float = 180.0) -> None:
    """Poll ``uri + path`` until it answers 200 (a server we started is ready); raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not server_is_up(uri, timeout=2.0, path=path):
        if time.monotonic() > deadline:
            raise TrackingUnavailableError(f"{_without_credentials(uri)}{path} did not answer within {timeout:g} s.")
        time.sleep(0.5)


def require_tracking_server(uri: str | None = None, *, timeout: float = 5.0) -> str:
    """Return the tracking URI in force, or raise before any work starts if its server does not answer.

    Raises
    ------
    TrackingUnavailableError
        With the URI (never credentials: user info is stripped) and what to do.
    """
    uri = uri or mlflow.get_tracking_uri()
    if not server_is_up(uri, timeout=timeout):
        shown = _without_credentials(uri)
        raise TrackingUnavailableError(
            f"The MLflow tracking server at {shown} does not answer (GET /health failed within {timeout:g} s). "
            "Start it (infra/mlflow-server.sh start), or set MLFLOW_TRACKING_URI to a server that runs, "
            "or unset it to log to the local SQLite store mlflow.db."
        )
    return uri


class LocalMlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite store and a local artifact root.

    Used by the tests and the demo; ``infra/mlflow-server.sh`` does the same for people.

    >>> with LocalMlflowServer(tmp_dir) as server:   # doctest: +SKIP
    ...     mlflow.set_tracking_uri(server.uri)
    """

    def __init__(self, root: str | Path, *, port: int | None = None, startup_timeout: float = 180.0) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalMlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{(self.root / 'mlflow.db').resolve()}",
            "--artifacts-destination", str((self.root / "artifacts").resolve()),
        ]  # fmt: skip
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server owns it until stop()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, log_path = self.process.returncode, self.root / "server.log"
                raise TrackingUnavailableError(f"mlflow server exited with code {code} at start; see {log_path}.")
            if server_is_up(self.uri, timeout=1.0):
                logger.info("MLflow server up at %s", self.uri)
                return self
            time.sleep(0.5)
        self.stop()
        raise TrackingUnavailableError(f"mlflow server did not answer on {self.uri} within {self.startup_timeout:g} s.")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> LocalMlflowServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _without_credentials(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    return f"{scheme}{sep}{rest.split('@', 1)[-1]}" if sep else uri


def run_url(run_id: str, *, tracking_uri: str | None = None) -> str:
    """Where a person opens a run: the UI page on a tracking server, else the ``runs:/`` URI."""
    uri = tracking_uri or mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return f"runs:/{run_id}"
    run = mlflow.tracking.MlflowClient(uri).get_run(run_id)
    return f"{_without_credentials(uri).rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"

"""Flower's deployment engine on one machine: a SuperLink, one SuperNode per site, and ``flwr run`` against it.

Each process is the real Flower command (``flower-superlink``,
``flower-supernode``, ``flwr run``) so a local federation behaves as a
distributed one: sites are separate processes that can die, and the server
only ever sees their messages. Used by the tests, the Prefect flow and
``infra/flower.sh``'s Python twin; production sites start their own SuperNode.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinical.errors import ConfigurationError
from clinical.federated.settings import RunSettings, SiteSettings

__all__ = [
    "APP_DIR",
    "LocalFederation",
    "flwr_home_config",
    "node_config",
    "read_summary",
    "run_app",
    "run_local_deployment",
    "write_toml",
]

logger = logging.getLogger(__name__)

#: The Flower app folder (its pyproject names the server and client apps).
APP_DIR = Path(__file__).with_name("app")
CONNECTION = "clinical-local"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(name: str) -> str:
    """The Flower command next to this interpreter (a venv's bin), else on PATH."""
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise ConfigurationError(f"The Flower command {name!r} is not installed; install flwr into this environment.")
    return found


def write_toml(values: dict[str, Any], path: Path) -> Path:
    """Write flat ``values`` as TOML: the file form of ``--node-config`` and ``--run-config``.

    A file, because Flower's inline ``key=value`` form cannot hold spaces and quotes
    together (site names such as "Children's Hospital", a JSON recipe). JSON strings,
    numbers and booleans are valid TOML values, so ``json.dumps`` writes each one.
    """
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    return path


def node_config(site: SiteSettings, path: Path) -> Path:
    """Write the ``--node-config`` file of a SuperNode serving ``site``."""
    return write_toml({"cohort-dir": site.cohort_dir, "split-path": site.split_path, "site": site.site,
                       "fold": site.fold, "fault": site.fault}, path)


def flwr_home_config(home: Path, control_address: str) -> Path:
    """Write a Flower config in ``home`` whose default SuperLink connection is ``control_address`` (insecure)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                    f'address = "{control_address}"\ninsecure = true\n')
    return path


@dataclass
class LocalFederation:
    """A SuperLink and one SuperNode per site on 127.0.0.1, each a subprocess; use as a context manager.

    Parameters
    ----------
    sites
        Where each site's data is (one SuperNode each).
    workdir
        Folder for logs (``superlink.log``, ``supernode-<i>.log``) and the Flower home.
    """

    sites: list[SiteSettings]
    workdir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.ports['control']}"

    def env(self) -> dict[str, str]:
        """Environment of the Flower processes: this venv first on PATH, a private Flower home."""
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["FLWR_HOME"] = str(self.workdir / "flwr-home")
        return env

    def start(self, *, timeout: float = 120.0) -> LocalFederation:
        """Start the SuperLink, wait until it listens, then start the SuperNodes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {name: _free_port() for name in ("serverappio", "fleet", "control")}
        flwr_home_config(self.workdir / "flwr-home", self.control_address)
        self._spawn("superlink", [
            _command("flower-superlink"), "--insecure", "--isolation", "subprocess",
            "--database", str(self.workdir / "state.db"),
            "--serverappio-api-address", f"127.0.0.1:{self.ports['serverappio']}",
            "--fleet-api-address", f"127.0.0.1:{self.ports['fleet']}",
            "--control-api-address", self.control_address,
        ])
        _wait_port(self.ports["fleet"], timeout)
        _wait_port(self.ports["control"], timeout)
        for index, site in enumerate(self.sites):
            self.start_node(index, site)
        return self

    def start_node(self, index: int, site: SiteSettings) -> None:
        """Start the SuperNode of site ``index``."""
        self._spawn(f"supernode-{index}", [
            _command("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.ports['fleet']}",
            "--clientappio-api-address", f"127.0.0.1:{_free_port()}",
            "--node-config", str(node_config(site, self.workdir / f"node-{index}.toml")),
        ])

    def kill_node(self, index: int) -> None:
        """Kill SuperNode ``index`` and the ClientApp it runs (SIGKILL: a crash, not a shutdown)."""
        process = self.processes[f"supernode-{index}"]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        logger.info("Killed SuperNode %d.", index)

    def stop(self) -> None:
        """Terminate every process this federation started (and their children)."""
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(process.pid, signal.SIGKILL)
            logger.debug("Stopped %s.", name)

    def log(self, name: str) -> str:
        """The output so far of process ``name`` (``superlink``, ``supernode-0``, ...)."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                                cwd=self.workdir, start_new_session=True)

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_app(
    federation: LocalFederation, settings: RunSettings, *, app_dir: Path = APP_DIR
) -> subprocess.Popen:
    """Start ``flwr run <app> --stream`` against ``federation``; return the process (output in ``flwr-run.log``)."""
    overrides = write_toml(settings.run_config(), federation.workdir / "run-config.toml")
    log = (federation.workdir / "flwr-run.log").open("wb")
    command = [_command("flwr"), "run", str(app_dir), CONNECTION, "--run-config", str(overrides), "--stream"]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=federation.env(), cwd=federation.workdir,
                            start_new_session=True)


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise ConfigurationError(f"No Flower server listened on 127.0.0.1:{port} within {timeout:.0f} s.")


def read_summary(out_dir: str | Path) -> dict[str, Any]:
    """The ``federated.json`` a finished run wrote."""
    return json.loads((Path(out_dir) / "federated.json").read_text())


def run_local_deployment(
    settings: RunSettings, sites: list[SiteSettings], *, workdir: str | Path, timeout: float = 24 * 3600.0
) -> dict[str, Any]:
    """Start a local federation of ``sites``, run the app on it to the end, stop it; return ``federated.json``.

    Raises
    ------
    ConfigurationError
        When ``settings.out_dir`` is empty, or ``flwr run`` fails (the message names its log).
    """
    if not settings.out_dir:
        raise ConfigurationError("settings.out_dir must name the folder for global.pt and federated.json.")
    with LocalFederation(list(sites), Path(workdir)) as federation:
        code = run_app(federation, settings).wait(timeout=timeout)
    if code != 0:
        raise ConfigurationError(f"flwr run exited with code {code}; see {Path(workdir) / 'flwr-run.log'}.")
    return read_summary(settings.out_dir)

"""Federated training on Flower's simulation engine: every site a virtual node in this process (quick experiments).

The server and client apps are the same as under the deployment engine; only
where their settings come from differs (Flower's ``run_simulation`` carries no
run config, so the settings are handed to the apps directly).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.simulation import run_simulation

from clinical.errors import ConfigurationError
from clinical.federated.client_app import build_client_app
from clinical.federated.server_app import build_server_app
from clinical.federated.settings import FAULTS, RunSettings, SiteSettings

__all__ = ["simulate"]

logger = logging.getLogger(__name__)


def simulate(
    settings: RunSettings,
    *,
    cohort_dir: str | Path,
    split_path: str | Path,
    sites: Sequence[str],
    out: str | Path,
    fold: int = 0,
    faults: dict[str, str] | None = None,
    cpus_per_site: float = 1.0,
) -> dict[str, Any]:
    """Run a federation of ``sites`` (one virtual node each) on one cohort and split; return its summary.

    Parameters
    ----------
    settings
        The run's settings (recipe, classes, rounds, strategy); ``out_dir`` is replaced by ``out``.
    cohort_dir, split_path
        The cohort holding every site's items and its split; each node keeps its own site's rows.
    sites
        Site names as in the manifest's ``site`` column; one node per site.
    out
        Folder for ``global.pt`` and ``federated.json`` (bytes per round, metrics, rejections).
    faults
        Site name → fault (``"nan"``, ``"inf"``, ``"shape"``) for fault experiments.
    cpus_per_site
        CPU cores the simulation engine reserves per node (at most this many nodes train at once).

    Raises
    ------
    ConfigurationError
        For an empty site list, or a fault for an unknown site or of an unknown kind.
    """
    if not sites:
        raise ConfigurationError("simulate needs at least one site.")
    faults = dict(faults or {})
    unknown = sorted(set(faults) - set(sites))
    if unknown or any(fault not in FAULTS for fault in faults.values()):
        raise ConfigurationError(f"faults must map sites {list(sites)} to one of {FAULTS[1:]}; got {faults}.")
    run = replace(settings, out_dir=str(out))
    site_list = list(sites)

    def site_settings(context: Context) -> tuple[RunSettings, SiteSettings]:
        site = site_list[int(context.node_config["partition-id"])]
        return run, SiteSettings(cohort_dir=str(cohort_dir), split_path=str(split_path), site=site, fold=fold,
                                 fault=faults.get(site, ""))

    logger.info("Simulating %d sites for %d rounds (%s).", len(site_list), run.num_rounds, run.strategy)
    run_simulation(server_app=build_server_app(lambda _context: run), client_app=build_client_app(site_settings),
                   num_supernodes=len(site_list),
                   backend_config={"client_resources": {"num_cpus": cpus_per_site, "num_gpus": 0.0}})
    summary_path = Path(out) / "federated.json"
    if not summary_path.exists():
        raise ConfigurationError(f"The simulation ended without writing {summary_path.name}; see the log above.")
    return json.loads(summary_path.read_text())

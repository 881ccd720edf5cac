"""The settings of a federated run, read from Flower's run config and node config.

The run config (``[tool.flwr.app.config]`` of the app's pyproject, overridden by
``flwr run --run-config``) is the same for the server and every site; the node
config (``flower-supernode --node-config``) says where one site's own cohort and
split are. Flower only carries scalars, so the training recipe travels as the
JSON of a :class:`~clinical.training.TrainConfig`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clinical.errors import ConfigurationError
from clinical.training import TrainConfig

__all__ = ["FAULTS", "STRATEGIES", "RunSettings", "SiteSettings"]

STRATEGIES = ("fedavg", "fedprox")
#: Deliberate faults a site can be told to inject (for fault tests): corrupt its update with NaN, inf or a wrong shape.
FAULTS = ("", "nan", "inf", "shape")


@dataclass(frozen=True)
class RunSettings:
    """What the server and every site agree on for one federated run."""

    train_config: TrainConfig
    classes: tuple[str, ...]
    num_rounds: int = 3
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    min_nodes: int = 2
    round_timeout: float = 600.0
    out_dir: str = ""
    initial_weights: str = ""
    evaluate: bool = True

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> RunSettings:
        """Parse Flower's run config (keys in kebab case, see the app's pyproject).

        Raises
        ------
        ConfigurationError
            For an unknown strategy, fewer than one round or node, or a train config that is not valid JSON.
        """
        try:
            values = json.loads(str(run_config.get("train-config", "{}")) or "{}")
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"train-config must be the JSON of a TrainConfig: {error}.") from None
        settings = cls(
            train_config=TrainConfig.build(**values),
            classes=tuple(c for c in str(run_config.get("classes", "")).split(",") if c),
            num_rounds=int(run_config.get("num-server-rounds", 3)),
            strategy=str(run_config.get("strategy", "fedavg")).lower(),
            proximal_mu=float(run_config.get("proximal-mu", 0.0)),
            min_nodes=int(run_config.get("min-nodes", 2)),
            round_timeout=float(run_config.get("round-timeout", 600.0)),
            out_dir=str(run_config.get("out-dir", "")),
            initial_weights=str(run_config.get("initial-weights", "")),
            evaluate=bool(run_config.get("evaluate", True)),
        )
        if settings.strategy not in STRATEGIES:
            raise ConfigurationError(f"strategy must be one of {STRATEGIES}; got {settings.strategy!r}.")
        if settings.num_rounds < 1 or settings.min_nodes < 1:
            raise ConfigurationError(
                f"num-server-rounds and min-nodes must be >= 1; got {settings.num_rounds} and {settings.min_nodes}."
            )
        if len(settings.classes) < 2:
            raise ConfigurationError(
                f"classes must name at least two classes, comma-separated; got {settings.classes}."
            )
        return settings

    def run_config(self) -> dict[str, Any]:
        """The inverse of :meth:`from_run_config` (what ``flwr run --run-config`` or the simulation takes)."""
        return {
            "train-config": json.dumps(self.train_config.model_dump(mode="json")),
            "classes": ",".join(self.classes),
            "num-server-rounds": self.num_rounds,
            "strategy": self.strategy,
            "proximal-mu": self.proximal_mu,
            "min-nodes": self.min_nodes,
            "round-timeout": self.round_timeout,
            "out-dir": self.out_dir,
            "initial-weights": self.initial_weights,
            "evaluate": self.evaluate,
        }


@dataclass(frozen=True)
class SiteSettings:
    """Where one site's data is: its cohort folder, its split file, its site name and fold."""

    cohort_dir: str
    split_path: str
    site: str = ""
    fold: int = 0
    fault: str = ""

    @classmethod
    def from_node_config(cls, node_config: dict[str, Any], run_config: dict[str, Any]) -> SiteSettings:
        """Read ``cohort-dir``, ``split-path``, ``site``, ``fold`` and ``fault`` from the node config.

        Under the simulation engine the node config only holds ``partition-id``: the
        site is then the partition's entry of the run config's ``sites`` (comma-separated)
        and the cohort and split come from the run config.

        Raises
        ------
        ConfigurationError
            When the cohort or split is not given, or the fault is unknown.
        """
        merged = {**run_config, **node_config}
        site = str(merged.get("site", ""))
        if not site and "partition-id" in node_config and merged.get("sites"):
            sites = str(merged["sites"]).split(",")
            site = sites[int(node_config["partition-id"]) % len(sites)]
        fault = str(merged.get("fault", ""))
        if "partition-id" in node_config and merged.get("faults"):
            # simulation: "faults" maps partition ids to faults, e.g. "2:nan"
            table = dict(part.split(":", 1) for part in str(merged["faults"]).split(",") if ":" in part)
            fault = table.get(str(node_config["partition-id"]), fault)
        settings = cls(cohort_dir=str(merged.get("cohort-dir", "")), split_path=str(merged.get("split-path", "")),
                       site=site, fold=int(merged.get("fold", 0)), fault=fault)
        if not settings.cohort_dir or not settings.split_path:
            raise ConfigurationError(
                "A site needs cohort-dir and split-path in its node config "
                "(flower-supernode --node-config 'cohort-dir=\"...\" split-path=\"...\" site=\"...\"')."
            )
        if settings.fault not in FAULTS:
            raise ConfigurationError(f"fault must be one of {FAULTS}; got {settings.fault!r}.")
        return settings

"""Federated training on Flower and site-level fine-tuning, exchanging only the layer groups that train.

Modules
-------
``exchange``
    Which groups train in round ``r`` (the engine's freezing schedule), packing their tensors, bytes.
``validation``
    Why a site's update cannot be averaged (NaN, inf, wrong keys or shapes, bad weight).
``local``
    One site's part of a round: train the round's groups, score the global model; per-site splits.
``settings``
    The run config (server and sites) and node config (one site's data) of a federated run.
``client_app``, ``server_app``
    The Flower ClientApp and ServerApp (FedAvg / FedProx over partial updates); ``app/pyproject.toml``
    is the Flower app that ``flwr run`` ships.
``simulation``, ``deployment``
    Running them on Flower's simulation engine, or on its deployment engine on this machine.
``register``, ``site``, ``experiment``
    The global model in MLflow; site-level fine-tuning against the champion; federated against
    centralised and single-site training.

Only the light modules are imported here; the others load Flower, Ray or MLflow when imported.
"""

from __future__ import annotations

from clinical.federated.exchange import (
    full_state,
    group_state_keys,
    pack_groups,
    payload_bytes,
    round_plan,
    trainable_groups,
    unpack_into,
)
from clinical.federated.local import evaluate_site, site_part, stage_plan, train_round
from clinical.federated.settings import RunSettings, SiteSettings
from clinical.federated.validation import update_problem

__all__ = [
    "RunSettings",
    "SiteSettings",
    "evaluate_site",
    "full_state",
    "group_state_keys",
    "pack_groups",
    "payload_bytes",
    "round_plan",
    "site_part",
    "stage_plan",
    "train_round",
    "trainable_groups",
    "unpack_into",
    "update_problem",
]

"""The Flower ServerApp: FedAvg or FedProx over the groups that train, with every update checked.

Each round the server asks the engine's freezing schedule which layer groups
train (:func:`clinical.federated.exchange.trainable_groups`), sends the global
model and that list, and gets back only those groups' tensors. Updates with
NaN, inf, wrong keys or wrong shapes are rejected with a logged reason; the
others are averaged weighted by their training items (``num-examples``) and
written into the global model. Evaluation metrics from the sites are averaged
on the server, weighted the same way. The bytes each site sent are logged and
kept per round in ``federated.json`` in the run's ``out-dir``, with the global
model as ``global.pt``. With evaluation on, the round whose global model has the
best aggregated validation AUROC is kept as ``best_round.pt`` (a centralised fit keeps
its best validation epoch the same way, so the two are compared like for like).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx
from torch import nn

from clinical.federated.exchange import full_state, group_state_keys, payload_bytes, trainable_groups
from clinical.federated.settings import RunSettings
from clinical.federated.validation import update_problem
from clinical.models import create_model
from clinical.training import TrainConfig

__all__ = [
    "PartialExchange",
    "PartialFedAvg",
    "PartialFedProx",
    "app",
    "build_server_app",
    "build_strategy",
    "finite_weighted_mean",
    "initial_model",
    "run_federated",
]

logger = logging.getLogger(__name__)

WEIGHT_KEY = "num-examples"


class PartialExchange:
    """Mix-in for Flower's FedAvg family: partial uploads, update checks, bytes per round.

    Flower's ``start`` loop feeds the ``ArrayRecord`` returned by ``aggregate_train`` back
    as the global model, so this returns the whole merged model, not the partial average.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, **kwargs: Any) -> None:
        super().__init__(weighted_by_key=WEIGHT_KEY, train_metrics_aggr_fn=finite_weighted_mean,
                         evaluate_metrics_aggr_fn=finite_weighted_mean, **kwargs)
        self.model = model
        self.train_config = config
        self.state = full_state(model)
        self.full_bytes = payload_bytes(self.state)
        self.history: list[dict[str, Any]] = []
        self._round: dict[str, Any] = {}
        #: The global model of the round with the best aggregated ``val-auroc`` so far, and that round.
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_round: int | None = None
        self._best_score = -math.inf

    # --- training ------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        names = trainable_groups(self.model, self.train_config, server_round)
        config["trainable"] = names
        self._round = {"round": server_round, "trainable_groups": names,
                       "expected_keys": group_state_keys(self.model, names, self.train_config.group_granularity)}
        logger.info("Round %d trains %s.", server_round, names)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        expected = self._round["expected_keys"]
        accepted: list[tuple[dict[str, torch.Tensor], float, Message]] = []
        sent: dict[str, int] = {}
        rejected: dict[str, str] = {}
        failed: dict[str, str] = {}
        for msg in replies:
            node = str(msg.metadata.src_node_id)
            if msg.has_error():
                failed[node] = str(msg.error.reason)
                logger.warning("Round %d: node %s failed: %s", server_round, node, msg.error.reason)
                continue
            update, weight, problem = self._read_reply(msg, expected)
            sent[node] = payload_bytes(update) if update is not None else 0
            if problem is not None:
                rejected[node] = problem
                logger.warning("Round %d: update of node %s rejected: %s", server_round, node, problem)
                continue
            accepted.append((update, weight, msg))
        record = {**{k: v for k, v in self._round.items() if k != "expected_keys"},
                  "bytes_sent": sent, "bytes_sent_total": sum(sent.values()), "full_model_bytes": self.full_bytes,
                  "bytes_per_site_fraction": (max(sent.values()) / self.full_bytes) if sent else 0.0,
                  "accepted": [str(m.metadata.src_node_id) for _, _, m in accepted],
                  "rejected": rejected, "failed": failed}
        logger.info("Round %d: %d update(s) accepted, %d rejected, %d failed; %d bytes sent per site "
                    "(%.4f of the full model's %d).", server_round, len(accepted), len(rejected), len(failed),
                    max(sent.values()) if sent else 0, record["bytes_per_site_fraction"], self.full_bytes)
        self.history.append(record)
        if not accepted:
            logger.warning("Round %d: no update to aggregate; the global model is unchanged.", server_round)
            return None, None
        total = sum(weight for _, weight, _ in accepted)
        for key in expected:
            mean = sum(update[key].to(torch.float64) * (weight / total) for update, weight, _ in accepted)
            self.state[key] = mean.to(self.state[key].dtype)
        metrics = self.train_metrics_aggr_fn([m.content for _, _, m in accepted], WEIGHT_KEY)
        metrics["bytes-sent-total"] = record["bytes_sent_total"]
        record["train_metrics"] = dict(metrics)
        return ArrayRecord(self.state), metrics

    def _read_reply(
        self, msg: Message, expected: list[str]
    ) -> tuple[dict[str, torch.Tensor] | None, float, str | None]:
        content = msg.content
        if len(content.array_records) != 1 or len(content.metric_records) != 1:
            return None, 0.0, "a reply must hold one ArrayRecord and one MetricRecord"
        metrics = next(iter(content.metric_records.values()))
        try:
            update = next(iter(content.array_records.values())).to_torch_state_dict()
        except (TypeError, ValueError) as error:
            return None, 0.0, f"the arrays cannot be read as tensors ({error})"
        weight = metrics.get(WEIGHT_KEY)
        problem = update_problem(update, self.state, expected_keys=expected, num_examples=weight)
        return update, float(weight) if problem is None else 0.0, problem

    # --- evaluation ----------------------------------------------------------------------------
    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = [msg for msg in replies if not msg.has_error() and _finite_weight(msg)]
        metrics = super().aggregate_evaluate(server_round, replies)
        if metrics is not None:
            for record in self.history:
                if record["round"] == server_round:
                    record["evaluate_metrics"] = dict(metrics)
            score = float(metrics.get("val-auroc", math.nan))
            if math.isfinite(score) and score > self._best_score:
                # the sites scored the global model this round's aggregation wrote into ``state``
                self._best_score, self.best_round = score, server_round
                self.best_state = {key: value.clone() for key, value in self.state.items()}
        return metrics


class PartialFedAvg(PartialExchange, FedAvg):
    """FedAvg (weighted by training items) over the round's trainable groups."""


class PartialFedProx(PartialExchange, FedProx):
    """FedProx: FedAvg on the server, ``proximal-mu`` sent to the sites for their proximal term."""


def finite_weighted_mean(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Per metric, the mean over the sites where it is finite, weighted by ``weight_key``.

    Flower's default turns the average into NaN when one site's metric is undefined
    (e.g. AUROC on a site whose validation patients hold one class); this leaves that site out
    of that metric only.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for record in records:
        metrics = next(iter(record.metric_records.values()))
        weight = float(metrics[weight_key])
        for key, value in metrics.items():
            if key != weight_key and isinstance(value, (int, float)) and math.isfinite(value):
                sums[key] = sums.get(key, 0.0) + weight * float(value)
                weights[key] = weights.get(key, 0.0) + weight
    return MetricRecord({key: sums[key] / weights[key] for key in sums if weights[key] > 0})


def _finite_weight(msg: Message) -> bool:
    records = list(msg.content.metric_records.values())
    weight = records[0].get(WEIGHT_KEY) if records else None
    return isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0


def initial_model(settings: RunSettings) -> nn.Module:
    """The starting global model: ``initial-weights`` (a path or ``models:/`` URI) or the recipe's ``pretrained``."""
    config = settings.train_config
    return create_model(config.model, spatial_dims=config.spatial_dims, in_channels=config.in_channels,
                        num_classes=len(settings.classes), pretrained=settings.initial_weights or config.pretrained)


def build_strategy(settings: RunSettings, model: nn.Module) -> PartialExchange:
    """FedAvg or FedProx with ``min-nodes`` as the minimum available, training and evaluating sites.

    With ``evaluate`` off the sites only train (the per-round federated evaluation is skipped).
    """
    common = {"min_available_nodes": settings.min_nodes, "min_train_nodes": settings.min_nodes,
              "min_evaluate_nodes": settings.min_nodes, "fraction_evaluate": 1.0 if settings.evaluate else 0.0}
    if settings.strategy == "fedprox":
        return PartialFedProx(model, settings.train_config, proximal_mu=settings.proximal_mu, **common)
    return PartialFedAvg(model, settings.train_config, **common)


def run_federated(grid: Grid, settings: RunSettings) -> dict[str, Any]:
    """Run ``num-server-rounds`` rounds on ``grid``; write ``global.pt`` and ``federated.json`` to ``out-dir``.

    Returns the summary written to ``federated.json``: the settings, the model's groups,
    the full model's bytes, the best round (by aggregated validation AUROC; ``None`` without
    evaluation) and, per round, the trainable groups, bytes sent per site,
    accepted, rejected (with reasons) and failed sites, and the aggregated metrics.
    """
    model = initial_model(settings)
    strategy = build_strategy(settings, model)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(strategy.state), num_rounds=settings.num_rounds,
                            timeout=settings.round_timeout)
    final = result.arrays.to_torch_state_dict() if result.arrays is not None else strategy.state
    summary = {"settings": settings.run_config(), "full_model_bytes": strategy.full_bytes,
               "groups": [g.name for g in model.layer_groups(settings.train_config.group_granularity)],
               "best_round": strategy.best_round, "rounds": strategy.history}
    if settings.out_dir:
        out = Path(settings.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(final, out / "global.pt")
        if strategy.best_state is not None:
            torch.save(strategy.best_state, out / "best_round.pt")
        (out / "federated.json").write_text(json.dumps(summary, indent=2, default=str))
        logger.info("Federated run finished; the global model is in %s.", out / "global.pt")
    return summary


def build_server_app(settings: Callable[[Context], RunSettings] | None = None) -> ServerApp:
    """A ServerApp reading its settings from the run config (or from ``settings``, as the simulation does)."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_federated(grid, settings(context) if settings else RunSettings.from_run_config(dict(context.run_config)))

    return server


app = build_server_app()

"""The Flower ClientApp: one site, training on its own cohort and split with the engine.

``train`` loads the global model, trains the round's trainable groups for the
configured local epochs (:func:`clinical.federated.local.train_round`) and
replies with those groups' tensors only, the number of training items (the
weight of the site in the average) and the bytes it sent. ``evaluate`` scores
the global model on the site's validation patients. Run it with
``flower-supernode --node-config 'cohort-dir="..." split-path="..." site="..."'``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clinical.cohort.manifest import read_manifest
from clinical.federated.exchange import payload_bytes
from clinical.federated.local import evaluate_site, site_part, train_round
from clinical.federated.settings import RunSettings, SiteSettings
from clinical.models import create_model
from clinical.splits import read_split

__all__ = ["app", "build_client_app", "context_settings", "corrupt"]

logger = logging.getLogger(__name__)

SettingsFn = Callable[[Context], tuple[RunSettings, SiteSettings]]


def context_settings(context: Context) -> tuple[RunSettings, SiteSettings]:
    """The run's and this site's settings from Flower's run config and node config."""
    run_config = dict(context.run_config)
    return RunSettings.from_run_config(run_config), SiteSettings.from_node_config(dict(context.node_config), run_config)


def _global_model(msg: Message, run: RunSettings) -> torch.nn.Module:
    config = run.train_config
    net = create_model(config.model, spatial_dims=config.spatial_dims, in_channels=config.in_channels,
                       num_classes=len(run.classes))
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict(), strict=True)
    return net


def corrupt(update: dict[str, torch.Tensor], fault: str) -> dict[str, torch.Tensor]:
    """A deliberately broken copy of ``update`` (fault tests only): NaN, inf, or a wrongly shaped first tensor."""
    if not fault:
        return update
    broken = dict(update)
    key = next(k for k, v in update.items() if v.is_floating_point())
    if fault == "shape":
        broken[key] = torch.zeros((*update[key].shape, 2), dtype=update[key].dtype)
    else:
        value = update[key].clone()
        value.view(-1)[0] = float("nan") if fault == "nan" else float("inf")
        broken[key] = value
    logger.warning("This site is set to corrupt its update (%s); the server must reject it.", fault)
    return broken


def build_client_app(settings: SettingsFn = context_settings) -> ClientApp:
    """A ClientApp whose sites read their settings with ``settings`` (the simulation passes its own)."""
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        """Train the round's groups on this site; reply with their tensors and the item count."""
        run, site = settings(context)
        net = _global_model(msg, run)
        config_record = msg.content["config"]
        server_round = int(config_record["server-round"])
        trainable = [str(name) for name in config_record["trainable"]]
        mu = float(config_record.get("proximal-mu", 0.0))
        manifest, split = site_part(read_manifest(site.cohort_dir), read_split(site.split_path)[0], site.site or None)
        config = run.train_config.model_copy(update={"seed": run.train_config.seed + server_round})
        update, metrics, n_train = train_round(net, config, trainable=trainable, manifest=manifest,
                                               cohort_dir=site.cohort_dir, split=split, fold=site.fold,
                                               classes=run.classes, proximal_mu=mu)
        update = corrupt(update, site.fault)
        sent = payload_bytes(update)
        metrics = {"num-examples": n_train, "bytes-sent": sent, "train-loss": metrics["train_loss"]}
        logger.info("Round %d: trained %s on %d items, sending %d bytes.", server_round, trainable, n_train, sent)
        return Message(content=RecordDict({"arrays": ArrayRecord(update), "metrics": MetricRecord(metrics)}),
                       reply_to=msg)


    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Score the global model on this site's validation patients."""
        run, site = settings(context)
        net = _global_model(msg, run)
        manifest, split = site_part(read_manifest(site.cohort_dir), read_split(site.split_path)[0], site.site or None)
        metrics, _ = evaluate_site(net, run.train_config, manifest=manifest, cohort_dir=site.cohort_dir, split=split,
                                   fold=site.fold, classes=run.classes, role="val")
        reply = {"num-examples": int(metrics["n_items"]),
                 **{f"val-{k}": metrics.get(k, math.nan) for k in ("auroc", "auprc", "balanced_accuracy")}}
        return Message(content=RecordDict({"metrics": MetricRecord(reply)}), reply_to=msg)

    return client


app = build_client_app()

"""What a site sends per round (the trainable groups only, and how many bytes), and the update checks."""

from __future__ import annotations

import math

import pytest
import torch

from clinical.errors import ConfigurationError
from clinical.federated.exchange import (
    full_state,
    group_state_keys,
    pack_groups,
    payload_bytes,
    trainable_groups,
    unpack_into,
)
from clinical.federated.local import stage_plan
from clinical.federated.server_app import finite_weighted_mean
from clinical.federated.settings import RunSettings, SiteSettings
from clinical.federated.validation import update_problem
from clinical.models import create_model
from clinical.training import TrainConfig


@pytest.fixture(scope="module")
def resnet18():
    return create_model("resnet18", spatial_dims=2, in_channels=1, num_classes=2)


def _config(**overrides) -> TrainConfig:
    return TrainConfig.build(**({"model": "resnet18", "unfreeze_every": 2} | overrides))


def test_rounds_follow_the_engine_freezing_schedule(resnet18):
    config = _config(max_trainable_groups=3)
    plan = [trainable_groups(resnet18, config, r) for r in range(1, 8)]
    assert plan[:2] == [["head"], ["head"]]
    assert plan[2:4] == [["stage4", "head"]] * 2
    assert plan[4:] == [["stage3", "stage4", "head"]] * 3
    assert trainable_groups(resnet18, _config(schedule="full"), 1) == [g.name for g in resnet18.layer_groups()]
    assert trainable_groups(resnet18, _config(schedule="linear-probe"), 9) == ["head"]


def test_patience_driven_or_round_zero_schedules_are_refused(resnet18):
    with pytest.raises(ConfigurationError, match="unfreeze_every"):
        trainable_groups(resnet18, TrainConfig.build(model="resnet18", unfreeze_patience=2), 1)
    with pytest.raises(ConfigurationError, match="from 1"):
        trainable_groups(resnet18, _config(), 0)


def test_group_keys_partition_the_whole_state(resnet18):
    names = [g.name for g in resnet18.layer_groups()]
    keys = [k for name in names for k in group_state_keys(resnet18, [name])]
    assert sorted(keys) == sorted(resnet18.state_dict())
    assert len(keys) == len(set(keys))
    with pytest.raises(ConfigurationError, match="Unknown layer group"):
        group_state_keys(resnet18, ["layer4"])


def test_bytes_sent_with_freezing_against_the_full_model(resnet18):
    full = payload_bytes(full_state(resnet18))
    head = payload_bytes(pack_groups(resnet18, ["head"]))
    top_two = payload_bytes(pack_groups(resnet18, ["stage4", "head"]))
    # resnet18, 2 classes: the head is 1,026 parameters of 11.2 M; stage4 alone is 8.4 M (75 %).
    assert head <= full / 5
    assert head == 1026 * 4
    assert 0.70 < top_two / full < 0.80


@pytest.mark.parametrize(("name", "top"), [("resnet50", ["stage4.2", "head"]),
                                           ("densenet121", ["stage4.2", "stage4.3", "head"])])
def test_block_groups_train_more_than_the_head_within_a_fifth(name, top):
    net = create_model(name, spatial_dims=2, in_channels=1, num_classes=2)
    config = _config(model=name, group_granularity="block", unfreeze_every=1, max_trainable_groups=len(top))
    plan = [trainable_groups(net, config, r) for r in range(1, len(top) + 2)]
    assert plan[0] == ["head"] and plan[-1] == plan[-2] == top
    keys = [k for g in net.layer_groups("block") for k in group_state_keys(net, [g.name], "block")]
    assert sorted(keys) == sorted(net.state_dict())
    full = payload_bytes(full_state(net))
    sent = payload_bytes(pack_groups(net, top, "block"))
    # ResNet-50's last bottleneck is 19.0 % of it; DenseNet-121's last two chunks of dense layers 17.5 %
    assert payload_bytes(pack_groups(net, ["head"], "block")) * 100 < sent <= full / 5
    # at stage granularity the same depth sends the whole last stage: far more than a fifth
    assert payload_bytes(pack_groups(net, ["stage4", "head"])) > full / 4


def test_pack_and_unpack_round_trip(resnet18):
    other = create_model("resnet18", spatial_dims=2, in_channels=1, num_classes=2)
    update = pack_groups(resnet18, ["stage4", "head"])
    unpack_into(other, update)
    for key, value in update.items():
        assert torch.equal(other.state_dict()[key], value)
    with pytest.raises(ConfigurationError, match="shape"):
        unpack_into(other, {"head.weight": torch.zeros(3, 3)})


def test_update_checks_give_a_reason(resnet18):
    reference = full_state(resnet18)
    keys = group_state_keys(resnet18, ["head"])
    good = {k: reference[k].clone() for k in keys}
    assert update_problem(good, reference, expected_keys=keys, num_examples=10) is None
    nan = {**good, "head.weight": good["head.weight"].clone().fill_(math.nan)}
    assert "NaN" in update_problem(nan, reference, expected_keys=keys, num_examples=10)
    inf = {**good, "head.bias": torch.full_like(good["head.bias"], math.inf)}
    assert "inf" in update_problem(inf, reference, expected_keys=keys, num_examples=10)
    shape = {**good, "head.weight": torch.zeros(3, 512)}
    assert "shape" in update_problem(shape, reference, expected_keys=keys, num_examples=10)
    missing = {"head.weight": good["head.weight"]}
    assert "missing" in update_problem(missing, reference, expected_keys=keys, num_examples=10)
    extra = {**good, "net.fc.weight": torch.zeros(1)}
    assert "unexpected" in update_problem(extra, reference, expected_keys=keys, num_examples=10)
    assert "num-examples" in update_problem(good, reference, expected_keys=keys, num_examples=math.nan)
    assert "num-examples" in update_problem(good, reference, expected_keys=keys, num_examples=0)


def test_stage_plan_trains_only_the_top_groups_and_keeps_frozen_statistics():
    net = create_model("resnet18", spatial_dims=2, in_channels=1, num_classes=2)
    plan = stage_plan(net, _config(), ["stage4", "head"])
    assert plan.lrs == pytest.approx({"head": 1e-3, "stage4": 5e-4})  # the recipe's lr × layer_decay ** depth
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    plan.apply(net)
    net(torch.randn(4, 1, 32, 32)).sum().backward()
    assert net.net.conv1.weight.grad is None and net.net.layer3[0].conv1.weight.grad is None
    assert net.head.weight.grad is not None and net.net.layer4[0].conv1.weight.grad is not None
    for key in group_state_keys(net, ["stem", "stage1", "stage2", "stage3"]):
        assert torch.equal(net.state_dict()[key], before[key]), key
    with pytest.raises(ConfigurationError, match="top groups"):
        stage_plan(net, _config(), ["stage3", "head"])


def test_metric_aggregation_leaves_undefined_site_metrics_out():
    from flwr.app import MetricRecord, RecordDict

    records = [RecordDict({"m": MetricRecord({"num-examples": 10, "auroc": 0.8})}),
               RecordDict({"m": MetricRecord({"num-examples": 30, "auroc": 0.6})}),
               RecordDict({"m": MetricRecord({"num-examples": 60, "auroc": math.nan})})]
    assert finite_weighted_mean(records, "num-examples")["auroc"] == pytest.approx(0.65)


def test_settings_round_trip_and_refusals():
    settings = RunSettings(train_config=_config(image_size=(32, 32)), classes=("negative", "positive"),
                           strategy="fedprox", proximal_mu=0.1)
    assert RunSettings.from_run_config(settings.run_config()) == settings
    with pytest.raises(ConfigurationError, match="strategy"):
        RunSettings.from_run_config({**settings.run_config(), "strategy": "krum"})
    with pytest.raises(ConfigurationError, match="cohort-dir"):
        SiteSettings.from_node_config({}, {})
    sim = SiteSettings.from_node_config({"partition-id": 1}, {"sites": "a,b", "cohort-dir": "c", "split-path": "s",
                                                              "faults": "1:nan"})
    assert (sim.site, sim.fault) == ("b", "nan")

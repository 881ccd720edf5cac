"""Freezing schedule, parameter groups, learning rates and the optimizer rebuild."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from test_training_helpers import TINY

from clinical.errors import ConfigurationError
from clinical.models import create_model
from clinical.training import FreezeSchedule, StageLR, build_optimizer, no_decay


def _model_and_schedule(mode: str = "progressive", **kwargs):
    torch.manual_seed(0)
    model = create_model(TINY, spatial_dims=2, in_channels=1, num_classes=2)
    options = {"unfreeze_every": 1} if mode == "progressive" else {}
    schedule = FreezeSchedule(model.layer_groups(), mode=mode, lr=1e-2, layer_decay=0.5, **options | kwargs)
    return model, schedule


def _step(model, optimizer, batch=8):
    x, y = torch.randn(batch, 1, 16, 16), torch.randint(0, 2, (batch,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _norm_buffers(group):
    return {id(m): (m.running_mean.clone(), m.running_var.clone()) for mod in group.modules for m in mod.modules()
            if isinstance(m, torch.nn.BatchNorm2d)}


def test_stage_zero_trains_the_head_only_and_freezes_norm_statistics():
    model, schedule = _model_and_schedule()
    model.train()
    schedule.apply(model)
    optimizer = build_optimizer(schedule.current, model, weight_decay=0.05)
    frozen = schedule.current.frozen
    assert [g.name for g in frozen] == ["stem", "stage1", "stage2"]
    weights_before = [p.detach().clone() for g in frozen for p in g.parameters()]
    stats_before = [_norm_buffers(g) for g in frozen]
    head_before = model.head.weight.detach().clone()
    _step(model, optimizer)
    assert all(p.grad is None and not p.requires_grad for g in frozen for p in g.parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights_before, [p for g in frozen for p in g.parameters()],
                                                  strict=True))
    for group, before in zip(frozen, stats_before, strict=True):
        after = _norm_buffers(group)
        assert all(torch.equal(before[k][0], after[k][0]) and torch.equal(before[k][1], after[k][1]) for k in before)
    assert not torch.equal(head_before, model.head.weight)


def test_trainable_norm_statistics_do_update():
    model, schedule = _model_and_schedule("full")
    model.train()
    schedule.apply(model)
    before = _norm_buffers(schedule.groups[0])
    _step(model, build_optimizer(schedule.current, model, weight_decay=0.0))
    after = _norm_buffers(schedule.groups[0])
    assert any(not torch.equal(before[k][0], after[k][0]) for k in before)


def test_learning_rates_follow_base_times_decay_to_the_depth():
    model, schedule = _model_and_schedule("full")
    optimizer = build_optimizer(schedule.current, model, weight_decay=0.05)
    depth = {"head": 0, "stage2": 1, "stage1": 2, "stem": 3}
    seen = set()
    for group in optimizer.param_groups:
        assert group["depth"] == depth[group["name"]]
        assert group["lr"] == pytest.approx(1e-2 * 0.5 ** depth[group["name"]])
        seen.add(group["name"])
    assert seen == set(depth)
    assert schedule.report()["group_lrs"] == {n: pytest.approx(1e-2 * 0.5**d) for n, d in depth.items()}


def test_no_weight_decay_on_norms_and_biases():
    model, schedule = _model_and_schedule("full")
    optimizer = build_optimizer(schedule.current, model, weight_decay=0.05)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    flat = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    norms = [p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert norms and all(id(p) in flat for p in norms)
    assert id(model.head.bias) in flat and id(model.head.weight) in decayed
    assert all(id(p) in decayed for n, p in model.named_parameters() if not no_decay(n, p))
    assert len(decayed | flat) == len(list(model.parameters()))


def test_rebuild_keeps_the_optimizer_state_of_parameters_already_training():
    model, schedule = _model_and_schedule()
    model.train()
    schedule.apply(model)
    optimizer = build_optimizer(schedule.current, model, weight_decay=0.05)
    _step(model, optimizer)
    moments = optimizer.state[model.head.weight]["exp_avg"].clone()
    assert schedule.end_epoch(0, 0.6)
    schedule.apply(model)
    rebuilt = build_optimizer(schedule.current, model, weight_decay=0.05, previous=optimizer)
    assert torch.equal(rebuilt.state[model.head.weight]["exp_avg"], moments)
    new = next(schedule.groups[2].parameters())
    assert new.requires_grad and new not in rebuilt.state
    assert {g["name"] for g in rebuilt.param_groups} == {"head", "stage2"}
    _step(model, rebuilt)
    assert float(rebuilt.state[model.head.weight]["step"]) == 2.0


def test_progressive_schedule_unfreezes_from_the_top_every_n_epochs():
    _, schedule = _model_and_schedule(unfreeze_every=2)
    trained = []
    for epoch in range(8):
        trained.append(len(schedule.current.trainable))
        schedule.end_epoch(epoch, 0.5)
    assert trained == [1, 1, 2, 2, 3, 3, 4, 4]
    assert schedule.final and [g.name for g in schedule.current.trainable] == ["head", "stage2", "stage1", "stem"]


def test_progressive_schedule_on_plateau_and_its_state_round_trip():
    _, schedule = _model_and_schedule(unfreeze_every=None, unfreeze_patience=2, max_trainable=3)
    events = [schedule.end_epoch(e, s) for e, s in enumerate([0.6, 0.7, 0.7, 0.69, 0.8, 0.8, 0.8, 0.5, 0.4])]
    assert events == [False, False, False, True, False, False, True, False, False]
    assert len(schedule.current.trainable) == 3 and schedule.final
    _, other = _model_and_schedule(unfreeze_every=None, unfreeze_patience=2, max_trainable=3)
    other.load_state_dict(schedule.state_dict())
    assert other.state_dict() == schedule.state_dict()


def test_baselines_and_bad_schedules():
    _, full = _model_and_schedule("full")
    _, probe = _model_and_schedule("linear-probe")
    assert len(full.current.trainable) == 4 and full.final
    assert [g.name for g in probe.current.trainable] == ["head"] and probe.final
    assert not probe.end_epoch(0, 0.1)
    with pytest.raises(ConfigurationError, match="exactly one"):
        _model_and_schedule(unfreeze_every=None)
    with pytest.raises(ConfigurationError, match="Unknown schedule"):
        _model_and_schedule("partial")


def test_stage_lr_warms_up_then_decays_and_restarts_each_stage():
    lr = StageLR(steps_per_epoch=10, warmup_epochs=1)
    lr.start_stage(0, 4)
    factors = [lr.factor(s) for s in range(40)]
    assert factors[0] < factors[5] < factors[9] <= 1.0
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert factors[-1] < 0.01
    lr.start_stage(4, 6)
    assert lr.factor(40) < lr.factor(45) and lr.factor(59) < 0.05
    model, schedule = _model_and_schedule("full")
    optimizer = build_optimizer(schedule.current, model, weight_decay=0.0)
    lr.apply(optimizer, 50)
    assert all(math.isclose(g["lr"], g["base_lr"] * lr.factor(50)) for g in optimizer.param_groups)


def test_block_granularity_unfreezes_one_residual_block_at_a_time():
    from clinical.training import TrainConfig

    model = create_model("resnet18", spatial_dims=2, in_channels=1, num_classes=2)
    config = TrainConfig.build(group_granularity="block", unfreeze_every=1)
    schedule = FreezeSchedule(model.layer_groups(config.group_granularity), mode="progressive", lr=1e-2,
                              layer_decay=0.5, unfreeze_every=config.unfreeze_every)
    schedule.end_epoch(0, 0.0)
    assert schedule.report()["trainable_groups"] == ["head", "stage4.1"]
    model.train()
    schedule.apply(model)
    model(torch.randn(2, 1, 32, 32)).sum().backward()
    # the last stage's first block stays frozen while its second block trains
    assert model.net.layer4[0].conv1.weight.grad is None and model.net.layer4[1].conv1.weight.grad is not None
    assert schedule.current.lrs["stage4.1"] == pytest.approx(5e-3)
    with pytest.raises(ConfigurationError, match="group_granularity"):
        TrainConfig.build(group_granularity="layer")


def test_a_stage_plan_depends_on_the_stage_only():
    """``plan(k)`` is what the schedule trains once it reaches stage k, without stepping or editing its state."""
    _, schedule = _model_and_schedule(unfreeze_every=1, max_trainable=3)
    plans = [schedule.plan(k) for k in range(5)]
    assert schedule.stage == 0
    assert [[g.name for g in p.trainable] for p in plans] == [
        ["head"], ["head", "stage2"], ["head", "stage2", "stage1"], ["head", "stage2", "stage1"],
        ["head", "stage2", "stage1"],
    ]
    assert [p.stage for p in plans] == [0, 1, 2, 2, 2]  # past the last stage is the last stage
    assert plans[1].lrs == pytest.approx({"head": 1e-2, "stage2": 5e-3})
    assert [g.name for g in plans[2].frozen] == ["stem"]
    for epoch in range(2):
        schedule.end_epoch(epoch, 0.5)
        assert schedule.current == schedule.plan(epoch + 1)
    _, full = _model_and_schedule("full")
    assert full.plan(3) == full.plan(0) and len(full.plan(0).trainable) == 4
    with pytest.raises(ConfigurationError, match="from 0"):
        schedule.plan(-1)

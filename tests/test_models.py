"""The model zoo: every registered network builds, runs forward and backward, and exposes its groups."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from clinical.errors import ConfigurationError
from clinical.models import ClassifierModel, LayerGroup, create_model, list_models
from clinical.models.groups import parameter_shares

DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def _zoo(dims: int) -> list[str]:
    """The project's registered models; other tests register their own (named ``*-test``)."""
    return [name for name in list_models(spatial_dims=dims) if not name.endswith("-test")]


ALL = [(name, dims) for dims in (2, 3) for name in _zoo(dims)]


def _input(name: str, dims: int, channels: int) -> torch.Tensor:
    if dims == 2:
        return torch.randn(2, channels, 32, 32)
    # MONAI's 3D DenseNet halves the depth five times, so it needs 32 slices.
    depth = 32 if name == "densenet121" else 8
    return torch.randn(2, channels, depth, 32, 32)


def test_registry_lists_the_zoo():
    assert _zoo(2) == ["densenet121", "resnet18", "resnet34", "resnet50"]
    assert _zoo(3) == [
        "densenet121",
        "mc3_18",
        "r2plus1d_18",
        "r3d_18",
        "resnet18",
        "resnet34",
        "resnet50",
    ]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("name", "dims"), ALL)
def test_builds_runs_and_backpropagates(name, dims, channels):
    torch.manual_seed(0)
    model = create_model(name, spatial_dims=dims, in_channels=channels, num_classes=3)
    assert isinstance(model, ClassifierModel)
    assert (model.name, model.spatial_dims, model.in_channels, model.num_classes) == (name, dims, channels, 3)
    x = _input(name, dims, channels)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features)
    logits = model.forward_head(features)
    assert logits.shape == (2, 3)
    logits.square().mean().backward()
    first_conv = model.net.get_submodule(model.config.first_conv)
    assert first_conv.in_channels == channels
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert model.head.weight.grad is not None

    groups = model.layer_groups()
    assert [g.name for g in groups] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert all(isinstance(g, LayerGroup) for g in groups)
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "a parameter is in no group"
    assert groups[-1].modules == (model.head,)
    # Groups run from input to output: the stem holds the first convolution.
    assert any(p is first_conv.weight for p in groups[0].parameters())
    assert isinstance(model.get_submodule(model.gradcam_layer), nn.Module)


@pytest.mark.parametrize(("name", "dims"), ALL)
def test_block_groups_refine_the_stage_groups(name, dims):
    model = create_model(name, spatial_dims=dims, in_channels=1, num_classes=2)
    stages, blocks = model.layer_groups("stage"), model.layer_groups("block")
    assert len(blocks) > len(stages)
    ids = [id(p) for g in blocks for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    stage_of = {id(p): g.name for g in stages for p in g.parameters()}
    order = [g.name for g in stages]
    owners = []
    for block in blocks:
        (owner,) = {stage_of[id(p)] for p in block.parameters()}  # a block never straddles two stages
        assert block.name.split(".")[0] == owner
        owners.append(order.index(owner))
    assert owners == sorted(owners) and set(owners) == set(range(len(stages)))
    with pytest.raises(ConfigurationError, match="granularity"):
        model.layer_groups("layer")


def _groups_row(name: str, dims: int) -> str:
    model = create_model(name, spatial_dims=dims, in_channels=1, num_classes=2)
    stages, blocks = parameter_shares(model.layer_groups()), parameter_shares(model.layer_groups("block"))
    top, share = 0, 0.0
    for value in reversed(blocks.values()):
        if share + value > 0.2:
            break
        top, share = top + 1, share + value
    last = list(blocks.values())[-2]
    return (f"| `{name}` | {dims}D | {len(stages)} / {len(blocks)} | {stages['stage4']:.1%} | {last:.1%} | {top} "
            f"| {share:.1%} |").replace("%", " %")


def test_docs_state_each_models_group_shares():
    """The table in docs/models.md that says which models can train more than the head within a fifth."""
    text = DOCS.read_text()
    table = re.search(r"<!-- groups-table:begin -->\n(.*?)<!-- groups-table:end -->", text, re.S).group(1)
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    expected = [_groups_row(name, dims) for name, dims in sorted(ALL, key=lambda x: (x[1], x[0]))]
    assert rows == expected, "\n".join(expected)


def test_reset_classifier_and_head_only_training():
    model = create_model("resnet18", num_classes=2)
    model.reset_classifier(5)
    assert model.num_classes == 5
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    for group in model.layer_groups()[:-1]:
        group.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable == list(model.head.parameters())


def test_groups_give_layerwise_learning_rates():
    model = create_model("resnet50", num_classes=2)
    groups = model.layer_groups()
    param_groups = [
        {"params": list(g.parameters()), "lr": 0.1 * 0.5 ** (len(groups) - 1 - i)} for i, g in enumerate(groups)
    ]
    optimizer = torch.optim.SGD(param_groups)  # raises if a parameter appears twice
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(0.1)


def test_features_are_the_pooled_backbone_output():
    model = create_model("resnet18", in_channels=3).eval()
    x = torch.randn(2, 3, 64, 64)
    net = model.net
    expected = net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))))
    torch.testing.assert_close(model.forward_features(x), expected.flatten(1))


def test_gradcam_target_works_with_monai():
    from monai.visualize import GradCAM

    model = create_model("resnet18", num_classes=2).eval()
    cam = GradCAM(nn_module=model, target_layers=model.gradcam_layer)
    heatmap = cam(x=torch.randn(1, 1, 64, 64), class_idx=1)
    assert heatmap.shape == (1, 1, 64, 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet1000"}, "Unknown model 'resnet1000'"),
        ({"name": "r2plus1d_18", "spatial_dims": 2}, "exists for spatial_dims [3], not 2"),
        ({"name": "resnet18", "in_channels": 0}, "'in_channels' must be a positive integer; got 0"),
        ({"name": "resnet18", "num_classes": 2.5}, "'num_classes' must be a positive integer; got 2.5"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        create_model(**kwargs)


def test_wrong_input_shape_is_named():
    model = create_model("resnet18", in_channels=1)
    with pytest.raises(ConfigurationError, match=r"C=1; got shape \[2, 3, 32, 32\]"):
        model(torch.randn(2, 3, 32, 32))

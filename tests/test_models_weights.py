"""Pretrained weights: formats, prefixes, channel folding, 2D→3D inflation, strictness.

Every state dict is built here from randomly initialised upstream networks; nothing downloads.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from monai.networks import nets as monai_nets

from clinical.errors import WeightsError
from clinical.models import (
    adapt_input_channels,
    create_model,
    inflate_2d_to_3d,
    load_pretrained,
    register_weights_loader,
    save_backbone,
)


def _randomise_bn(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give BatchNorm non-trivial running statistics so that eval-mode comparisons mean something."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def tv_resnet18():
    torch.manual_seed(0)
    return _randomise_bn(torchvision.models.resnet18(weights=None, num_classes=7))


def _features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features of a torchvision ResNet."""
    fc, net.fc = net.fc, torch.nn.Identity()
    try:
        with torch.no_grad():
            return net(x)
    finally:
        net.fc = fc


def test_rgb_weights_fold_to_grey(tv_resnet18):
    grey = torch.rand(2, 1, 64, 64)
    model = create_model("resnet18", in_channels=1, num_classes=2, pretrained=tv_resnet18.state_dict()).eval()
    with torch.no_grad():
        ours = model.forward_features(grey)
    torch.testing.assert_close(ours, _features(tv_resnet18, grey.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)
    report = model.weights_report
    assert report.adapted == ("conv1.weight",)
    assert report.reinitialised == ("fc.weight", "fc.bias")  # 7 classes in the file, 2 asked for


def test_grey_weights_replicate_to_rgb():
    torch.manual_seed(1)
    grey_net = torchvision.models.resnet18(weights=None)
    grey_net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    _randomise_bn(grey_net)
    model = create_model("resnet18", in_channels=3, num_classes=1000, pretrained=grey_net.state_dict()).eval()
    grey = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(grey.repeat(1, 3, 1, 1)), grey_net(grey), rtol=1e-4, atol=1e-5)
    assert model.weights_report.reinitialised == ()  # same class count: the head is loaded too


def test_channel_folding_math():
    weight = torch.randn(4, 3, 5, 5)
    assert adapt_input_channels(weight, 1).shape == (4, 1, 5, 5)
    torch.testing.assert_close(adapt_input_channels(weight, 1), weight.sum(1, keepdim=True))
    torch.testing.assert_close(adapt_input_channels(weight[:, :1], 3), weight[:, :1].repeat(1, 3, 1, 1) / 3)
    # Any count: an image replicated on every channel gives the same response.
    for channels in (2, 4, 5):
        folded = adapt_input_channels(weight, channels)
        torch.testing.assert_close(folded.sum(1), weight.sum(1))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": torch.tensor(0.1)}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {**{f"model.{k}": v for k, v in sd.items()}, "loss.pos_weight": torch.ones(1)}},
        lambda sd: {"state_dict": {f"model.module.{k}": v for k, v in sd.items()}},
    ],
    ids=["state_dict", "model", "dataparallel", "lightning", "lightning+dataparallel"],
)
def test_checkpoint_containers_and_prefixes(tmp_path, tv_resnet18, wrap):
    path = tmp_path / "weights.pt"
    torch.save(wrap(tv_resnet18.state_dict()), path)
    model = create_model("resnet18", in_channels=3, num_classes=7, pretrained=path).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv_resnet18(x))
    assert model.weights_report.source == "weights.pt"
    assert model.weights_report.reinitialised == ()


def test_lightning_extra_keys_are_reported_not_loaded(tv_resnet18):
    state = {"state_dict": {**{f"model.{k}": v for k, v in tv_resnet18.state_dict().items()}, "loss.w": torch.ones(1)}}
    report = load_pretrained(create_model("resnet18", in_channels=3), state)
    assert report.unexpected == ("loss.w",)


def test_torchxrayvision_densenet_naming():
    """TorchXRayVision's DenseNet: torchvision ``features.`` names, one input channel, 18 pathologies."""
    torch.manual_seed(2)
    xrv = torchvision.models.densenet121(weights=None, num_classes=18)
    xrv.features.conv0 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    _randomise_bn(xrv)
    state = {**xrv.state_dict(), "op_threshs": torch.rand(18)}
    model = create_model("densenet121", in_channels=1, num_classes=2, pretrained=state).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        classifier, xrv.classifier = xrv.classifier, torch.nn.Identity()
        torch.testing.assert_close(model.forward_features(x), xrv(x))
        xrv.classifier = classifier
    report = model.weights_report
    assert report.unexpected == ("op_threshs",)
    assert report.reinitialised == ("classifier.weight", "classifier.bias")

    # torchvision < 0.4 naming (``norm.1``) loads into the same model.
    old = {
        k.replace("norm1", "norm.1").replace("conv2", "conv.2") if "denselayer" in k else k: v
        for k, v in xrv.state_dict().items()
    }
    assert any(".norm.1." in k for k in old)
    again = create_model("densenet121", in_channels=1, num_classes=18, pretrained=old).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), xrv(x))


def test_torchxrayvision_resnet50_naming():
    """TorchXRayVision's ResNet-50 wraps a torchvision ResNet-50 as ``model`` with a grey first conv."""
    torch.manual_seed(3)
    inner = torchvision.models.resnet50(weights=None, num_classes=18)
    inner.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    _randomise_bn(inner)
    state = {f"model.{k}": v for k, v in inner.state_dict().items()}
    model = create_model("resnet50", in_channels=1, num_classes=18, pretrained=state).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), inner(x))


def test_medicalnet_resnet50_3d():
    """MedicalNet checkpoints: ``module.``-prefixed MONAI-style 3D ResNets with a segmentation head."""
    torch.manual_seed(4)
    net = monai_nets.resnet50(
        spatial_dims=3,
        n_input_channels=1,
        conv1_t_stride=2,
        shortcut_type="B",
        bias_downsample=False,
        feed_forward=False,
    )
    _randomise_bn(net)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.randn(32, 2048, 3, 3, 3)
    state["module.conv_seg.0.bias"] = torch.randn(32)
    model = create_model("resnet50", spatial_dims=3, in_channels=1, pretrained={"state_dict": state}).eval()
    x = torch.rand(2, 1, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), net(x))
    assert model.weights_report.unexpected == ("module.conv_seg.0.bias", "module.conv_seg.0.weight")
    assert model.weights_report.reinitialised == ("fc.weight", "fc.bias")


def test_video_weights_fold_to_grey():
    torch.manual_seed(5)
    video = _randomise_bn(torchvision.models.video.r2plus1d_18(weights=None))
    model = create_model("r2plus1d_18", spatial_dims=3, in_channels=1, num_classes=400, pretrained=video.state_dict())
    x = torch.rand(1, 1, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), video(x.repeat(1, 3, 1, 1, 1)), rtol=1e-4, atol=1e-5)


def test_backbone_round_trip(tmp_path, tv_resnet18):
    source = create_model("resnet18", in_channels=1, num_classes=7, pretrained=tv_resnet18.state_dict()).eval()
    path = save_backbone(source, tmp_path / "backbone.pt", meta={"method": "simclr"})
    model = create_model("resnet18", in_channels=1, num_classes=3, pretrained=path).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), source.forward_features(x))
    assert model.weights_report.reinitialised == ("fc.weight", "fc.bias")
    assert model.weights_report.unexpected == ()
    # The file is a plain torchvision state dict under "state_dict": torchvision reads it directly.
    plain = torchvision.models.resnet18(weights=None)
    plain.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    plain.load_state_dict(torch.load(path, weights_only=True)["state_dict"], strict=False)
    with pytest.raises(WeightsError, match="holds a resnet18 backbone; it cannot initialise a resnet34"):
        create_model("resnet34", pretrained=path)


def test_whole_model_state_dict_round_trip(tv_resnet18):
    source = create_model("resnet18", in_channels=3, num_classes=7, pretrained=tv_resnet18.state_dict()).eval()
    copy = create_model("resnet18", in_channels=3, num_classes=7, pretrained=source.state_dict()).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), source(x))
    assert copy.weights_report.reinitialised == ()


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_2d_weights_inflate_to_3d(name):
    """Centre inflation: a volume of identical slices gives the 2D network's output on one slice, exactly."""
    torch.manual_seed(6)
    net2d = _randomise_bn(getattr(torchvision.models, name)(weights=None))
    model = create_model(
        name, spatial_dims=3, in_channels=3, num_classes=1000, pretrained=net2d.state_dict(), inflation="center"
    ).eval()
    image = torch.rand(1, 3, 32, 32)
    volume = image.unsqueeze(2).repeat(1, 1, 32, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(volume), net2d(image), rtol=1e-4, atol=1e-4)
    assert len(model.weights_report.adapted) == sum(1 for v in net2d.state_dict().values() if v.ndim == 4)


def test_mean_inflation_matches_2d_inside_the_volume():
    """I3D inflation: on identical slices each inflated convolution equals the 2D one away from the depth borders."""
    torch.manual_seed(7)
    conv2d = torch.nn.Conv2d(3, 8, 3, padding=1)
    conv3d = torch.nn.Conv3d(3, 8, 3, padding=1)
    conv3d.weight.data = inflate_2d_to_3d(conv2d.weight.data, 3, mode="mean")
    conv3d.bias.data = conv2d.bias.data
    image = torch.rand(1, 3, 16, 16)
    out = conv3d(image.unsqueeze(2).repeat(1, 1, 6, 1, 1))
    for depth in range(1, 5):
        torch.testing.assert_close(out[:, :, depth], conv2d(image))
    assert not torch.allclose(out[:, :, 0], conv2d(image))  # the border sees zero padding


def test_resnet_3d_takes_2d_weights_with_default_inflation(tv_resnet18):
    model = create_model("resnet18", spatial_dims=3, in_channels=1, pretrained=tv_resnet18.state_dict())
    conv = model.net.conv1.weight
    assert conv.shape == (64, 1, 7, 7, 7)
    torch.testing.assert_close(conv.sum(2)[:, 0], tv_resnet18.conv1.weight.sum(1))


def test_shape_mismatch_names_key_and_shapes(tv_resnet18):
    state = dict(tv_resnet18.state_dict())
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    with pytest.raises(
        WeightsError,
        match=r"'layer2.0.conv1.weight' has shape \[128, 64, 5, 5\] but the model "
        r"expects \[128, 64, 3, 3\]",
    ):
        create_model("resnet18", in_channels=3, pretrained=state)


def test_missing_backbone_keys_raise(tv_resnet18):
    state = {k: v for k, v in tv_resnet18.state_dict().items() if not k.startswith("layer4")}
    with pytest.raises(WeightsError, match=r"lacks \d+ of the \d+ backbone tensors of resnet18 \(2D\), e\.g\. layer4"):
        create_model("resnet18", in_channels=3, pretrained=state)


def test_other_architecture_raises():
    state = torchvision.models.resnet50(weights=None).state_dict()
    with pytest.raises(WeightsError, match=r"'layer1\.0\.conv1\.weight' has shape"):
        create_model("resnet18", in_channels=3, pretrained=state)
    video = torchvision.models.video.r3d_18(weights=None).state_dict()
    with pytest.raises(WeightsError, match="lacks"):
        create_model("resnet18", spatial_dims=3, pretrained=video)


def test_sources_files_uris_and_hooks(tmp_path, tv_resnet18):
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("resnet18", pretrained=tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"Could not read weights from junk\.pt"):
        create_model("resnet18", pretrained=tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="No weights loader for 'nowhere' URIs"):
        create_model("resnet18", pretrained="nowhere:/x@champion")
    with pytest.raises(WeightsError, match="No tensors found"):
        create_model("resnet18", pretrained={"epoch": 1})

    asked = []

    def loader(uri: str):
        asked.append(uri)
        return {"state_dict": tv_resnet18.state_dict()}

    register_weights_loader("memory", loader)
    model = create_model("resnet18", in_channels=3, num_classes=7, pretrained="memory:/backbone@champion")
    assert asked == ["memory:/backbone@champion"]
    assert model.weights_report.source == "memory:/backbone@champion"

    model = create_model("resnet18", in_channels=3, num_classes=7, pretrained=lambda: tv_resnet18.state_dict())
    assert model.weights_report.source == "<<lambda>>"
    with pytest.raises(WeightsError, match="'inflation' must be 'mean' or 'center'"):
        create_model("resnet18", pretrained=tv_resnet18.state_dict(), inflation="edge")

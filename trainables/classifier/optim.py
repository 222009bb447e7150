"""What the optimizer does: its parameter groups, the learning-rate schedule, the loss, and how a
PBT mutation reaches the optimizer's state (one rule, for a resumed clone and a retrain's replay)."""

from __future__ import annotations

import torch
from torch import nn

from trainables.classifier.config import TrialConfig
from trainables.models import backbone_units

__all__ = ["Schedule", "build_optimizer", "fresh_groups", "inverse_frequency_weights", "loss_fn", "take_mutation"]


def build_optimizer(cfg: TrialConfig, net: nn.Module) -> torch.optim.Optimizer:
    """Groups: head then backbone (at lr * backbone_lr_mult), each with and without weight decay.

    Built from the parameters that train after any head-only phase (frozen_fraction applied), so
    the optimizer's state keeps one shape across phases and checkpoints; a parameter frozen for
    now has no gradient, and torch's optimizers skip it (no step, no decay, no momentum)."""
    backbone = {name for unit in backbone_units(net) for name in unit}
    groups = [
        {"params": [], "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": [], "weight_decay": 0.0, "lr": cfg.lr},
        {"params": [], "weight_decay": cfg.weight_decay, "lr": cfg.lr * cfg.backbone_lr_mult},
        {"params": [], "weight_decay": 0.0, "lr": cfg.lr * cfg.backbone_lr_mult},
    ]
    for name, parameter in net.named_parameters():
        if parameter.requires_grad:
            groups[2 * (name in backbone) + (parameter.ndim <= 1)]["params"].append(parameter)
    # The head's decayed group first: its lr is the one reported per epoch.
    groups = [group for group in groups if group["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, momentum=cfg.momentum)


class Schedule:
    """The learning-rate schedule, stepped where its kind needs it: per optimizer step (onecycle),
    on the epoch's validation loss (plateau), or per epoch (constant, cosine)."""

    def __init__(self, cfg: TrialConfig, optimizer: torch.optim.Optimizer, steps: int):
        self.kind = cfg.lr_schedule
        self.optimizer = optimizer
        # Each group's rate as a share of the head's (backbone_lr_mult), kept through any schedule.
        self.shares = [group["lr"] / cfg.lr for group in optimizer.param_groups]
        lr_scheduler = torch.optim.lr_scheduler
        if self.kind == "cosine":
            self.scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.max_epochs)
        elif self.kind == "plateau":
            self.scheduler = lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
            )
        elif self.kind == "onecycle":
            self.scheduler = lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=[group["lr"] for group in optimizer.param_groups],
                total_steps=max(1, cfg.max_epochs * steps),
                cycle_momentum=False,
            )
        else:
            self.scheduler = lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

    def after_step(self) -> None:
        if self.kind == "onecycle":
            self.scheduler.step()

    def after_epoch(self, val_loss: float | None) -> None:
        if self.kind == "plateau":
            if val_loss is not None:
                self.scheduler.step(val_loss)
        elif self.kind != "onecycle":
            self.scheduler.step()

    def set_head_lr(self, lr: float) -> None:
        """Replay a recorded rate: the head's group gets ``lr``, every other group its share."""
        for group, share in zip(self.optimizer.param_groups, self.shares):
            group["lr"] = lr * share

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)



def loss_fn(cfg: TrialConfig, weights: torch.Tensor | None) -> nn.Module:
    """The training loss: cross-entropy, per-class ``weights`` (class_weights) and label smoothing."""
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)


def inverse_frequency_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class loss weights n / (present classes * n_c) from training ``labels`` (0 for a class
    with no training image): a weighted mean loss counts every present class equally."""
    counts = torch.bincount(torch.as_tensor(labels).long(), minlength=num_classes).double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64, device=counts.device)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()



def fresh_groups(cfg: TrialConfig, net: nn.Module, steps: int) -> list[dict]:
    """The parameter groups an optimizer and schedule newly built for ``cfg`` start with: the
    hyperparameters a mutation to ``cfg`` brings (``take_mutation``)."""
    optimizer = build_optimizer(cfg, net)
    Schedule(cfg, optimizer, steps)  # adds the schedule's own keys (initial_lr, max_lr, ...) to the groups
    return [dict(group) for group in optimizer.param_groups]


def take_mutation(optimizer: torch.optim.Optimizer, schedule: Schedule, fresh: list[dict], saved_lr: float, lr: float) -> None:
    """After loading a state saved under other PBT_MUTABLE values: the optimizer's groups take the
    hyperparameters they were built with (``fresh``: weight decay, momentum), and every learning
    rate keeps its place in the schedule, scaled by ``lr / saved_lr``. Dropout, label smoothing and
    augmentation need nothing: the network, loss and augmentation were built from the new config."""
    ratio = lr / saved_lr
    for group, built in zip(optimizer.param_groups, fresh):
        for key, value in built.items():
            if key in ("lr", "initial_lr", "max_lr", "min_lr"):
                if key in group:
                    group[key] *= ratio
            elif key != "params" and isinstance(value, (int, float)) and not isinstance(value, bool):
                group[key] = value
    if hasattr(schedule.scheduler, "base_lrs"):
        schedule.scheduler.base_lrs = [base * ratio for base in schedule.scheduler.base_lrs]


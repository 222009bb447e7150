"""One classifier trial: ``train_classifier(config, data, report, checkpoints)`` resumes from the
last checkpoint (a PBT clone from its parent's, with its own config), runs the epoch loop with
validation, and reports and checkpoints every epoch."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import torch

from trainables import distributed, gpu
from trainables.classifier.config import PBT_MUTABLE, TrialConfig
from trainables.classifier.loop import apply_mutation, run_epochs, set_up
from trainables.classifier.numerics import latency_ms, upload, validate
from trainables.contract import Checkpoints, TrialData
from trainables.cost import count_parameters
from trainables.streaming import device_images

__all__ = ["train_classifier"]


def train_classifier(
    config: Mapping[str, Any],
    data: TrialData,
    report: Callable[[dict], Any],
    checkpoints: Checkpoints | None = None,
) -> None:
    """Train per ``config`` on ``data``; call ``report`` once per epoch with the epoch's metrics."""
    cfg = TrialConfig.from_mapping(config)
    # In memory: both sets as tensors on the device. Streamed: read per batch from the data cache.
    stream = getattr(data, "loading", "memory") == "stream"

    def to_device(device: torch.device, size: int) -> tuple:
        if stream:
            train_x = device_images(data.train_images, device, size, stream)
            val_x = device_images(data.val_images, device, cfg.image_size, stream)
            train_y, val_y = (torch.as_tensor(y).to(device) for y in (data.train_labels, data.val_labels))
            return train_x, train_y, val_x, val_y
        train = upload(dataclasses.replace(cfg, image_size=size), device, data.train_images, data.train_labels)
        return (*train, *upload(cfg, device, data.val_images, data.val_labels))

    run = set_up(cfg, len(data.classes), to_device)
    device, net, normalize, precision, step = run.device, run.net, run.normalize, run.precision, run.step
    val_x, val_y = run.more
    params, latency = count_parameters(net), None  # costs: count; ms, measured after the first epoch
    # Every epoch says where and how it ran (trainables/gpu.py).
    where = {"device": gpu.device_label(device), "precision": precision.name, "workers": distributed.workers()}
    distributed.broadcast_parameters(net)  # one worker: nothing

    first_epoch, train_time = 1, 0.0
    state = checkpoints.load() if checkpoints is not None else None
    mutable = {key: getattr(cfg, key) for key in PBT_MUTABLE}
    if state is not None:
        net.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.schedule.load_state_dict(state["schedule"])
        if state.get("mutable", mutable) != mutable:  # a PBT clone: the parent's state, this config
            apply_mutation(run, state["mutable"]["lr"], cfg)
        torch.set_rng_state(state["rng"])
        first_epoch, train_time = state["epoch"] + 1, state["train_time_s"]
        step.micro_batch = state.get("micro_batch", step.micro_batch)  # what fitted before the restart
        if "scaler" in state and precision.scaler is not None:
            precision.scaler.load_state_dict(state["scaler"])

    def validation() -> tuple[float, float, float]:
        return validate(net, normalize, val_x, val_y, precision)

    for epoch in run_epochs(run, cfg, first_epoch, cfg.max_epochs, validate=validation):
        if epoch.diverged is not None:
            # Not a crash and not worth a retry: report it as this trial's last result and stop.
            nan = float("nan")
            report({"epoch": epoch.number, "diverged": True, "error": epoch.diverged, "train_loss": nan,
                    "val_loss": nan, "val_acc": 0.0, "val_balanced_acc": 0.0, "lr": epoch.lr,
                    "train_time_s": train_time} | where)  # fmt: skip
            return
        val_loss, val_acc, val_balanced_acc = epoch.validation
        train_time += epoch.seconds
        if latency is None:  # once per trial (process); outside the epoch's timings
            latency = latency_ms(net, normalize, val_x, precision)
        if checkpoints is not None:
            checkpoints.save(
                {
                    "epoch": epoch.number,
                    "train_time_s": train_time,
                    "model": net.state_dict(),
                    "optimizer": run.optimizer.state_dict(),
                    "schedule": run.schedule.state_dict(),
                    "rng": torch.get_rng_state(),
                    "micro_batch": step.micro_batch,
                    "mutable": mutable,
                }
                | ({"scaler": precision.scaler.state_dict()} if precision.scaler is not None else {})
            )
        report(
            {
                "epoch": epoch.number,
                "train_loss": epoch.train_loss,
                "train_acc": epoch.train_acc,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "val_balanced_acc": val_balanced_acc,  # mean per-class recall on validation
                "lr": epoch.lr,
                "epoch_time_s": epoch.seconds,
                "train_time_s": train_time,
                "images_per_s": len(run.train_x) / epoch.training_seconds,  # training only, not validation
                "micro_batch": step.micro_batch,  # below batch_size after out-of-memory errors
                "params": params,  # parameters of the model (count), frozen ones included
                "latency_ms": latency,  # median batch-1 inference time on this device (trainables/cost.py)
                "peak_memory_mb": gpu.peak_memory_mb(device),  # CUDA: reserved this epoch; CPU: process RSS
            }
            | where
        )

"""One trial: train an image classifier for up to ``max_epochs``, reporting after every epoch.

``train_classifier(config, data, report)`` is all a caller needs: tests pass ``list.append`` as
``report``; the engine passes one that forwards to Ray Tune together with the epoch's checkpoint.
Data stays on the device as tensors (no DataLoader: the sets are small and already resized), and
each epoch's shuffling and augmentation are seeded by (seed, epoch), so a resumed trial replays the
same batches. Only training batches are augmented (trainables/augment.py); validation, the test
evaluation and predictions see the images as they are (resized to ``image_size`` when set).

Learning-rate schedules: ``constant``; ``cosine`` (per epoch, to 0 at ``max_epochs``); ``plateau``
(ReduceLROnPlateau on the epoch's val_loss); ``onecycle`` (OneCycleLR stepped per optimizer step
over ``max_epochs * steps_per_epoch`` steps, peaking at ``lr``; momentum is not cycled, so a
searched momentum/beta1 keeps its value). ``fit_classifier`` has no validation set: for
``plateau`` it replays the per-epoch ``lr`` the trial recorded (``lr_per_epoch``).

Two-phase fine-tuning (``head_epochs`` > 0): epochs 1..head_epochs train the head alone (the whole
backbone frozen, its BatchNorm in eval mode); from then on the backbone is frozen only up to
``frozen_fraction``. The phase follows from the epoch number, so a trial resumed from a checkpoint
comes back in the phase it was in. The backbone's parameters train at ``lr * backbone_lr_mult``.

On CUDA (the one GPU Ray assigned: it sets CUDA_VISIBLE_DEVICES), training runs in mixed precision
(bfloat16 where it is native, compute capability >= 8.0, else float16 with a gradient scaler:
trainables/gpu.py) and channels-last. Every epoch records ``device``, ``precision``,
``peak_memory_mb`` and ``workers``.
A CUDA out-of-memory error in a training step is not fatal at once: the step's gradients are
dropped and it is redone with half the micro-batch and gradient accumulation, so the optimizer
still steps once on ``batch_size`` images; below ``MIN_MICRO_BATCH`` the trial raises
``TrialInfeasible``. The optimizer's own update is outside that retry (it was not begun when a
micro-batch fails; an out-of-memory error inside it is ``TrialInfeasible``: smaller micro-batches
cannot shrink it, and a half-done update must not be done twice). Validation halves its batch
instead; the data set's upload and the latency measurement that run out of memory make the trial
infeasible, each with a message saying where.

With a process group up (``--workers-per-trial``: search/workers.py), each worker trains on its
stride of every batch and the gradients are averaged over the workers once per step, after every
worker's accumulation succeeded (trainables/distributed.py says why not DDP's backward hooks).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from trainables._config import config_from_mapping
from trainables._names import did_you_mean
from trainables.augment import Augmentation, epoch_generator, resize_images
from trainables.cost import count_parameters, measure_latency_ms
from trainables.data import TrialData
from trainables import distributed, gpu
from trainables.models import backbone_units, build_model, freeze_prefix, input_normalization, set_train_mode
from trainables.streaming import device_images, epoch_batches

__all__ = [
    "MIN_MICRO_BATCH",
    "NOT_RETRIED",
    "OPTIMIZERS",
    "balanced_accuracy",
    "build_classifier",
    "check_against_run",
    "Checkpoints",
    "Classifier",
    "evaluate",
    "fit_classifier",
    "inverse_frequency_weights",
    "load_classifier",
    "LR_SCHEDULES",
    "measure_step_memory",
    "train_classifier",
    "TrialConfig",
    "TrialDiverged",
    "TrialInfeasible",
    "trials_per_gpu",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
LR_SCHEDULES = ("constant", "cosine", "plateau", "onecycle")
# Smallest micro-batch tried after out-of-memory errors (images; BatchNorm needs at least 2).
MIN_MICRO_BATCH = 2


class TrialDiverged(FloatingPointError):
    """The training loss became NaN or infinite; retrying the same configuration will not help."""


class TrialInfeasible(RuntimeError):
    """Even the smallest micro-batch runs out of GPU memory: this configuration cannot train here.

    The message starts with "infeasible: out of memory", which the run's records show as the status.
    """


# Failures that a retry from the last checkpoint would only reproduce.
NOT_RETRIED = (TrialDiverged, TrialInfeasible)

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
    # 0 = the run's image_size. At most the run's image_size (search.spaces.dry_run checks it).
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


class Checkpoints(Protocol):
    """Where a trial keeps its per-epoch state: ``save`` before each report, ``load`` on resume."""

    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...


def train_classifier(
    config: Mapping[str, Any],
    data: TrialData,
    report: Callable[[dict], Any],
    checkpoints: Checkpoints | None = None,
) -> None:
    """Train per ``config`` on ``data``; call ``report`` once per epoch with the epoch's metrics."""
    cfg = TrialConfig.from_mapping(config)
    num_classes = len(data.classes)
    # In memory: both sets as tensors on the device. Streamed: read per batch from the data cache.
    stream = getattr(data, "loading", "memory") == "stream"

    def upload(device: torch.device, size: int) -> tuple:
        if stream:
            train_x = device_images(data.train_images, device, size, stream)
            val_x = device_images(data.val_images, device, cfg.image_size, stream)
            train_y, val_y = (torch.as_tensor(y).to(device) for y in (data.train_labels, data.val_labels))
            return train_x, train_y, val_x, val_y
        train = _upload(dataclasses.replace(cfg, image_size=size), device, data.train_images, data.train_labels)
        return (*train, *_upload(cfg, device, data.val_images, data.val_labels))

    run = _set_up(cfg, num_classes, upload)
    device, net, normalize, precision = run.device, run.net, run.normalize, run.precision
    train_x, train_y, (val_x, val_y) = run.train_x, run.train_y, run.more
    optimizer, schedule, step = run.optimizer, run.schedule, run.step
    params, latency_ms = count_parameters(net), None  # costs: count; ms, measured after the first epoch
    # Every epoch says where and how it ran (trainables/gpu.py).
    where = {"device": gpu.device_label(device), "precision": precision.name, "workers": distributed.workers()}
    distributed.broadcast_parameters(net)  # one worker: nothing

    first_epoch, train_time = 1, 0.0
    state = checkpoints.load() if checkpoints is not None else None
    mutable = {key: getattr(cfg, key) for key in PBT_MUTABLE}
    if state is not None:
        net.load_state_dict(state["model"])
        fresh = [dict(group) for group in optimizer.param_groups]
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if state.get("mutable", mutable) != mutable:  # a PBT clone: the parent's state, this config
            take_mutation(optimizer, schedule, fresh, state["mutable"]["lr"], cfg.lr)
        torch.set_rng_state(state["rng"])
        first_epoch, train_time = state["epoch"] + 1, state["train_time_s"]
        step.micro_batch = state.get("micro_batch", step.micro_batch)  # what fitted before the restart
        if "scaler" in state and precision.scaler is not None:
            precision.scaler.load_state_dict(state["scaler"])

    for epoch in range(first_epoch, cfg.max_epochs + 1):
        started = time.perf_counter()
        gpu.reset_peak_memory(device)
        set_phase(net, cfg, epoch)
        lr = optimizer.param_groups[0]["lr"]
        try:
            train_loss, train_acc = _train_epoch(step, train_x, train_y, cfg, epoch, schedule.after_step)
        except TrialDiverged as error:
            # Not a crash and not worth a retry: report it as this trial's last result and stop.
            nan = float("nan")
            report({"epoch": epoch, "diverged": True, "error": str(error), "train_loss": nan,
                    "val_loss": nan, "val_acc": 0.0, "val_balanced_acc": 0.0, "lr": lr,
                    "train_time_s": train_time} | where)  # fmt: skip
            return
        training_seconds = time.perf_counter() - started
        distributed.average_buffers(net)  # one worker: nothing
        val_loss, val_acc, val_balanced_acc = _validate(net, normalize, val_x, val_y, num_classes, precision)
        schedule.after_epoch(val_loss)
        seconds = time.perf_counter() - started
        train_time += seconds
        if latency_ms is None:  # once per trial (process); outside the epoch's timings
            latency_ms = _latency_ms(net, normalize, val_x, precision)
        if checkpoints is not None:
            checkpoints.save(
                {
                    "epoch": epoch,
                    "train_time_s": train_time,
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "rng": torch.get_rng_state(),
                    "micro_batch": step.micro_batch,
                    "mutable": mutable,
                }
                | ({"scaler": precision.scaler.state_dict()} if precision.scaler is not None else {})
            )
        report(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "val_balanced_acc": val_balanced_acc,  # mean per-class recall on validation
                "lr": lr,
                "epoch_time_s": seconds,
                "train_time_s": train_time,
                "images_per_s": len(train_x) / training_seconds,  # training only, not validation
                "micro_batch": step.micro_batch,  # below batch_size after out-of-memory errors
                "params": params,  # parameters of the model (count), frozen ones included
                "latency_ms": latency_ms,  # median batch-1 inference time on this device (trainables/cost.py)
                "peak_memory_mb": gpu.peak_memory_mb(device),  # CUDA: reserved this epoch; CPU: process RSS
            }
            | where
        )


@dataclass
class Classifier:
    """A trained network with the input normalisation it was trained with, ready to evaluate."""

    net: nn.Module
    normalize: "_Normalizer"
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
            out.append(torch.softmax(self.net(self.normalize(_at_trial_size(x, self.config))), 1).cpu())
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
    net, _, precision = _network(build, len(classes), device)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    mean, std = input_normalization(net, cfg.weights)
    normalize = _Normalizer(mean, std, device, precision.memory_format)
    return Classifier(net=net, normalize=normalize, classes=tuple(classes), config=cfg)


def fit_classifier(
    config: Mapping[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    epochs: int | None = None,
    report: Callable[[dict], Any] | None = None,
    lr_per_epoch: Sequence[float] | None = None,
    pbt_schedule: Sequence[tuple[int, Mapping[str, Any]]] = (),
    stream: bool = False,
) -> Classifier:
    """Train per ``config`` on all of ``images`` for ``epochs`` epochs, without validation.

    ``stream``: ``images`` is a view of the data cache, read batch by batch as a streamed trial
    reads it (trainables/streaming.py: the same batches, so the same model), never copied whole.

    ``pbt_schedule``: a PBT trial's later configs, ``(first epoch, config)`` in order; from each first
    epoch on, its PBT_MUTABLE values apply (as they did when PBT's clone continued there).

    The learning-rate schedule still spans ``config["max_epochs"]``: stopping at epoch ``epochs``
    replays a trial's first ``epochs`` epochs exactly as they ran (same rates, same seeded batch
    order and augmentation, same two phases), on this data. ``report`` gets each epoch's training
    loss and accuracy.

    ``lr_schedule`` "plateau" follows validation loss, which is not there: ``lr_per_epoch`` (the
    head's ``lr`` the trial reported for epochs 1, 2, ...) is then replayed, each parameter group
    at its share of it; without it the rate stays at ``lr`` (no plateau is ever detected).
    Ignored for the other schedules, which need no validation to replay.
    """
    cfg = TrialConfig.from_mapping(config)
    epochs = cfg.max_epochs if epochs is None else epochs
    if not 1 <= epochs <= cfg.max_epochs:
        raise ValueError(f"`epochs` is {epochs}, but must be 1 <= epochs <= max_epochs (= {cfg.max_epochs}).")
    replay = list(lr_per_epoch) if cfg.lr_schedule == "plateau" and lr_per_epoch is not None else None
    if replay is not None and len(replay) < epochs:
        raise ValueError(f"`lr_per_epoch` holds {len(replay)} rates, but {epochs} epochs are to be trained.")

    def upload(device: torch.device, size: int) -> tuple:
        return device_images(images, device, size, stream=stream), torch.as_tensor(np.asarray(labels)).to(device)

    run = _set_up(cfg, len(classes), upload)
    net, normalize, train_x, train_y = run.net, run.normalize, run.train_x, run.train_y
    optimizer, schedule, weights, step = run.optimizer, run.schedule, run.weights, run.step
    train_time = 0.0
    later = {first: TrialConfig.from_mapping(dict(later_config)) for first, later_config in pbt_schedule}
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        if epoch in later:
            mutated = later[epoch]
            take_mutation(optimizer, schedule, [dict(g) for g in _optimizer(mutated, net).param_groups], cfg.lr, mutated.lr)
            set_dropout(net, mutated.dropout if mutated.use_dropout else 0.0)
            step.loss_fn = _loss_fn(mutated, weights)
            cfg = mutated
        set_phase(net, cfg, epoch)
        if replay is not None:
            schedule.set_head_lr(replay[epoch - 1])
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = _train_epoch(step, train_x, train_y, cfg, epoch, schedule.after_step)
        schedule.after_epoch(None)
        train_time += time.perf_counter() - started
        if report is not None:
            report({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "lr": lr, "train_time_s": train_time})
    return Classifier(net=net, normalize=normalize, classes=tuple(classes), config=cfg)


@dataclass
class _Training:
    """What ``_set_up`` built for a training loop."""

    device: torch.device
    net: nn.Module
    normalize: "_Normalizer"
    precision: "_Precision"
    train_x: Any  # a tensor on the device, or streamed images (trainables/streaming.py)
    train_y: torch.Tensor
    more: tuple  # what else ``upload`` put on the device (train_classifier: the validation set)
    optimizer: torch.optim.Optimizer
    schedule: "_Schedule"
    weights: torch.Tensor | None  # per-class loss weights (class_weights), else None
    step: "_Step"


def _set_up(cfg: TrialConfig, num_classes: int, upload: Callable[[torch.device, int], tuple]) -> _Training:
    """The set-up ``train_classifier`` and ``fit_classifier`` share, in this order: threads and seed,
    the device, the network, the data on the device, the optimizer, its schedule, the loss and the step.

    ``upload(device, size)`` puts the data on ``device``, the training images at ``size`` px (0: as
    stored, for random crops and rotations, which read the stored size and sample at image_size:
    augment.py), and returns ``(train_x, train_y, *more)``."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = gpu.training_device()
    net, normalize, precision = _network(cfg, num_classes, device)
    stored = Augmentation.from_config(cfg).reads_stored_size
    train_x, train_y, *more = upload(device, 0 if stored else cfg.image_size)
    optimizer = _optimizer(cfg, net)
    schedule = _Schedule(cfg, optimizer, steps_per_epoch(len(train_x), cfg.batch_size))
    weights = inverse_frequency_weights(train_y, num_classes) if cfg.class_weights else None
    step = _Step(net, optimizer, _loss_fn(cfg, weights), normalize, precision, micro_batch=min(cfg.batch_size, len(train_x)))
    return _Training(device, net, normalize, precision, train_x, train_y, tuple(more), optimizer, schedule, weights, step)


def take_mutation(optimizer, schedule: "_Schedule", fresh: list[dict], saved_lr: float, lr: float) -> None:
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


def set_dropout(net: nn.Module, rate: float) -> None:
    """Set the dropout rate of a built network: its nn.Dropout modules and a timm model's drop_rate."""
    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate
    if hasattr(net, "drop_rate"):
        net.drop_rate = rate


def _at_trial_size(images: torch.Tensor, cfg: TrialConfig) -> torch.Tensor:
    """Images at the trial's resolution (``image_size``; 0 keeps the run's)."""
    return resize_images(images, cfg.image_size) if cfg.image_size else images


def set_phase(net: nn.Module, cfg: TrialConfig, epoch: int) -> float:
    """Freeze what ``epoch`` of a two-phase schedule trains: in epochs 1..head_epochs the whole
    backbone, after that the first ``frozen_fraction`` of it. Returns the frozen fraction."""
    if cfg.head_epochs == 0:
        return cfg.frozen_fraction  # one phase: build_model froze the prefix already
    fraction = 1.0 if epoch <= cfg.head_epochs else cfg.frozen_fraction
    freeze_prefix(net, fraction)
    return fraction


def inverse_frequency_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class loss weights n / (present classes * n_c) from training ``labels`` (0 for a class
    with no training image): a weighted mean loss counts every present class equally."""
    counts = torch.bincount(torch.as_tensor(labels).long(), minlength=num_classes).double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64, device=counts.device)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


def _loss_fn(cfg: TrialConfig, weights: torch.Tensor | None) -> nn.Module:
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Optimizer steps in one epoch over ``images``: batches of ``batch_size``, a last batch of one
    image skipped (as _train_epoch does: BatchNorm cannot train on one image)."""
    batch = min(batch_size, images)
    full, rest = divmod(images, batch) if batch else (0, 0)
    return full + (1 if rest >= 2 else 0)


class _Schedule:
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


def _network(cfg: TrialConfig, num_classes: int, device: torch.device) -> tuple[nn.Module, "_Normalizer", "_Precision"]:
    """The model on ``device`` (channels-last on CUDA), its input normalisation and its precision."""
    net = build_model(
        cfg.model,
        num_classes=num_classes,
        weights=cfg.weights,
        frozen_fraction=cfg.frozen_fraction,
        conv_blocks=cfg.conv_blocks,
        base_width=cfg.base_width,
        dropout=cfg.dropout if cfg.use_dropout else 0.0,
    ).to(device)
    precision = _Precision(device)
    net = net.to(memory_format=precision.memory_format)
    mean, std = input_normalization(net, cfg.weights)
    return net, _Normalizer(mean, std, device, precision.memory_format), precision


class _Normalizer:
    """uint8 images to normalised float tensors, on the device the images already live on."""

    def __init__(self, mean, std, device, memory_format=torch.contiguous_format):
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, -1, 1, 1)
        self.shift = (torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, -1, 1, 1)
        self.memory_format = memory_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() * self.scale - self.shift).contiguous(memory_format=self.memory_format)


class _Precision:
    """Mixed precision and memory layout for a device: bf16 autocast where the GPU runs it natively
    (gpu.precision_for), else fp16 with a gradient scaler; channels-last on CUDA. On the CPU:
    float32. ``name`` forces one of gpu.PRECISIONS (tests run the fp16 + scaler path on the CPU)."""

    def __init__(self, device: torch.device, name: str | None = None):
        self.device_type = device.type
        capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        self.name = name or gpu.precision_for(device.type, capability)
        self.dtype = autocast_dtype(self.name)
        self.scaler = torch.amp.GradScaler(device.type) if self.name == "fp16" else None
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of one of gpu.PRECISIONS: None (float32), bfloat16 or float16."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _upload(cfg: TrialConfig, device: torch.device, *arrays) -> list[torch.Tensor]:
    """The arrays as tensors on ``device``, images at the trial's size. Out of memory here means the
    data set alone does not fit the trial's share of the GPU: no micro-batch helps, so infeasible."""
    try:
        tensors = [torch.as_tensor(np.asarray(a)).to(device) for a in arrays]  # arrays or cache views
        return [_at_trial_size(t, cfg) if t.ndim == 4 else t for t in tensors]
    except torch.cuda.OutOfMemoryError as error:
        reason = (str(error).strip().splitlines() or ["CUDA out of memory"])[0]
    sizes = sum(np.asarray(a).nbytes for a in arrays) / 2**20
    raise TrialInfeasible(f"infeasible: out of memory uploading the data set ({sizes:.0f} MiB) to the GPU: {reason}")


def _latency_ms(net, normalize, images, precision) -> float:
    """measure_latency_ms on one validation image; out of memory even at batch 1 is infeasible."""
    try:
        return measure_latency_ms(net, normalize(images[:1]), autocast=precision.autocast)
    except torch.cuda.OutOfMemoryError as error:
        reason = (str(error).strip().splitlines() or ["CUDA out of memory"])[0]
    raise TrialInfeasible(f"infeasible: out of memory measuring batch-1 latency: {reason}")


class _Step:
    """One optimizer step on a batch, split into micro-batches whose gradients add up.

    ``micro_batch`` starts at the batch size and halves after each CUDA out-of-memory error in a
    forward or backward pass; the gradients are then dropped and the accumulation redone from its
    start. The optimizer (and the gradient scaler's unscale, inf check and update) runs once, after
    the accumulation succeeded: a retry never meets a half-stepped optimizer or an already
    unscaled scaler, so the effective batch size stays ``batch_size`` and the weights move once.
    An out-of-memory error inside the optimizer's update is ``TrialInfeasible``. (The aborted
    forward passes did move BatchNorm running statistics, as any micro-batching changes
    BatchNorm's per-batch statistics; accepted.)
    """

    def __init__(self, net, optimizer, loss_fn, normalize, precision: _Precision, micro_batch: int):
        self.net, self.optimizer, self.loss_fn = net, optimizer, loss_fn
        self.normalize, self.precision, self.micro_batch = normalize, precision, micro_batch

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        """Train on one batch; return the batch's summed loss and correct predictions."""
        while True:
            outcome, reason = distributed.OK, "CUDA out of memory on another worker"
            try:
                result = self._accumulate(images, labels)
            except torch.cuda.OutOfMemoryError as error:
                outcome, reason = distributed.OUT_OF_MEMORY, (str(error).strip().splitlines() or ["CUDA out of memory"])[0]
            except TrialDiverged as error:
                outcome, reason = distributed.DIVERGED, str(error)
            # Workers of one trial retry or stop together (one worker: its own outcome).
            outcome = distributed.worst_outcome(outcome, images.device)
            if outcome == distributed.OK:
                break
            if outcome == distributed.DIVERGED:
                raise TrialDiverged(reason if "loss" in reason else "training loss is not finite on another worker")
            # Outside the except block: the error's traceback, which holds the failed step's
            # tensors, is gone, so their memory can be returned before the retry.
            self.optimizer.zero_grad(set_to_none=True)
            smaller = next_micro_batch(self.micro_batch)
            if smaller is None:
                raise TrialInfeasible(
                    f"infeasible: out of memory at micro-batch {self.micro_batch} (batch size {len(images)}): {reason}"
                )
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.micro_batch = smaller
        distributed.average_gradients(self.optimizer)  # one worker: nothing
        self._update(len(images))
        return result

    def _update(self, batch: int) -> None:
        """The optimizer's step on the accumulated gradients: once, never retried."""
        try:
            if self.precision.scaler is not None:
                self.precision.scaler.step(self.optimizer)
                self.precision.scaler.update()
            else:
                self.optimizer.step()
            return
        except torch.cuda.OutOfMemoryError as error:
            reason = (str(error).strip().splitlines() or ["CUDA out of memory"])[0]
        raise TrialInfeasible(
            f"infeasible: out of memory in the optimizer step (batch size {batch}; the model, its "
            f"gradients and optimizer state do not fit, whatever the micro-batch): {reason}"
        )

    def _accumulate(self, images, labels) -> tuple[float, int]:
        self.optimizer.zero_grad(set_to_none=True)
        total_loss, correct = 0.0, 0
        # A class-weighted mean loss divides by the summed weights of its labels, not their count.
        weights = getattr(self.loss_fn, "weight", None)
        size = (lambda y: float(len(y))) if weights is None else (lambda y: weights[y].sum().item())
        batch_size = max(size(labels), 1e-12)
        for chunk in micro_batches(len(images), self.micro_batch):
            x, y = self.normalize(images[chunk]), labels[chunk]
            with self.precision.autocast():
                logits = self.net(x)
                loss = self.loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise TrialDiverged(f"training loss is {loss.item()}")
            # Mean loss of the chunk, weighted by its share of the batch: the gradients sum to the
            # batch's mean-loss gradient.
            share = size(y) / batch_size
            scaled = loss * share
            if self.precision.scaler is not None:
                scaled = self.precision.scaler.scale(scaled)
            scaled.backward()
            total_loss += loss.item() * share * len(images)
            correct += (logits.argmax(1) == y).sum().item()
        return total_loss, correct


def next_micro_batch(micro_batch: int, floor: int = MIN_MICRO_BATCH) -> int | None:
    """Half the micro-batch after an out-of-memory error, or None below ``floor``."""
    half = micro_batch // 2
    return half if half >= floor else None


def micro_batches(batch: int, micro_batch: int) -> list[slice]:
    """Slices of at most ``micro_batch`` positions covering ``range(batch)``; a trailing single
    image joins the previous slice (BatchNorm cannot train on one image)."""
    starts = list(range(0, batch, micro_batch))
    if len(starts) > 1 and batch - starts[-1] < 2:
        starts.pop()
    ends = starts[1:] + [batch]
    return [slice(a, b) for a, b in zip(starts, ends)]


def _train_epoch(step: _Step, images, labels, cfg: TrialConfig, epoch: int, after_step: Callable[[], None] | None = None):
    set_train_mode(step.net)
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(images), generator=generator).to(images.device)
    augment, augment_generator = Augmentation.from_config(cfg), epoch_generator(cfg.seed, epoch)
    batch = min(cfg.batch_size, len(images))
    rank, workers = distributed.rank(), distributed.workers()
    total_loss, correct, seen = 0.0, 0, 0
    for start, (index, x) in zip(range(0, len(images), batch), epoch_batches(images, order, batch)):
        if len(index) < 2 * workers:  # BatchNorm cannot train on a single image (per worker)
            continue
        index = distributed.shard(index, rank, workers)  # the whole batch on one worker
        x = distributed.shard(x, rank, workers)  # the same positions of the batch's images
        try:
            loss, right = step(augment(x, augment_generator), labels[index])
        except TrialDiverged as error:
            raise TrialDiverged(f"{error} at epoch {epoch}, step {start // batch}") from None
        if after_step is not None:
            after_step()
        total_loss += loss
        correct += right
        seen += len(index)
    total_loss, correct, seen = distributed.sum_over_workers(total_loss, correct, seen, device=images.device)
    return total_loss / seen, correct / seen


@torch.inference_mode()
def evaluate(
    net: nn.Module, normalize, images: torch.Tensor, labels: torch.Tensor, batch: int = 512, precision=None
):
    """Mean cross-entropy and accuracy of ``net`` on ``images`` (never augmented)."""
    total_loss, predictions = _predict(net, normalize, images, labels, batch, precision)
    return total_loss / len(images), (predictions == labels).sum().item() / len(images)


def _validate(net, normalize, images, labels, num_classes: int, precision=None) -> tuple[float, float, float]:
    """Mean cross-entropy, accuracy and balanced accuracy on the validation images, in one pass."""
    total_loss, predictions = _predict(net, normalize, images, labels, 512, precision)
    accuracy = (predictions == labels).sum().item() / len(images)
    return total_loss / len(images), accuracy, balanced_accuracy(labels, predictions, num_classes)


def _predict(net, normalize, images, labels, batch: int, precision) -> tuple[float, torch.Tensor]:
    """Summed cross-entropy over ``images`` and the predicted classes; on a CUDA out-of-memory
    error, again at half the batch (down to 1 image, then TrialInfeasible)."""
    while True:
        try:
            return _predict_batches(net, normalize, images, labels, batch, precision)
        except torch.cuda.OutOfMemoryError as error:
            reason = (str(error).strip().splitlines() or ["CUDA out of memory"])[0]
        if batch == 1:
            raise TrialInfeasible(f"infeasible: out of memory evaluating one image: {reason}")
        batch = max(1, batch // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@torch.inference_mode()
def _predict_batches(net, normalize, images, labels, batch: int, precision) -> tuple[float, torch.Tensor]:
    net.eval()
    total_loss, predictions = 0.0, []
    for start in range(0, len(images), batch):
        if precision is not None:
            with precision.autocast():
                logits = net(normalize(images[start : start + batch])).float()
        else:
            logits = net(normalize(images[start : start + batch]))
        y = labels[start : start + batch]
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        predictions.append(logits.argmax(1))
    return total_loss, torch.cat(predictions)


def balanced_accuracy(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> float:
    """Mean recall over the classes present in ``labels``: scikit-learn's ``balanced_accuracy_score``
    (as analysis.retrain's test_balanced_acc). ``num_classes`` is kept for callers; unused."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    labels = torch.as_tensor(labels).long().cpu().numpy()
    predictions = torch.as_tensor(predictions).long().cpu().numpy()
    if len(labels) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        return float(balanced_accuracy_score(labels, predictions))


def measure_step_memory(config: Mapping[str, Any], data: TrialData) -> int:
    """Peak CUDA memory, in bytes, that a trial of ``config`` reserves over its whole cycle: the data
    set uploaded (and resized) to the GPU, two training steps at the full batch size (the second
    holds the optimizer's state as well), validation at its batch of 512 and the batch-1 latency
    pass. Reserved, not allocated: the caching allocator's blocks are what other trials cannot
    use. Not the CUDA context (gpu.context_bytes measures that)."""
    if not torch.cuda.is_available():
        raise RuntimeError("measuring a training step's GPU memory needs a CUDA GPU, and none is visible")
    cfg = TrialConfig.from_mapping(config)
    device = torch.device("cuda")
    gpu.release()
    before = torch.cuda.memory_reserved(device)
    net, normalize, precision = _network(cfg, len(data.classes), device)
    images, labels, val, val_labels = _upload(cfg, device, data.train_images, data.train_labels, data.val_images, data.val_labels)
    batch = min(cfg.batch_size, len(images))
    step = _Step(net, _optimizer(cfg, net), _loss_fn(cfg, None), normalize, precision, micro_batch=batch)
    set_train_mode(net)
    step(images[:batch], labels[:batch])
    step(images[:batch], labels[:batch])
    _validate(net, normalize, val, val_labels, len(data.classes), precision)
    measure_latency_ms(net, normalize(val[:1]), runs=2, warmup=1, autocast=precision.autocast)
    if step.micro_batch < batch:  # it ran out of memory: the measurement is of a smaller step
        raise TrialInfeasible(f"infeasible: out of memory measuring batch size {batch} alone on the GPU")
    peak = torch.cuda.max_memory_reserved(device) - before
    del net, step, images, labels, val, val_labels
    gpu.release()
    return int(peak)


# Kept here for callers of the earlier location; the figure lives in trainables/gpu.py.
CUDA_CONTEXT_BYTES = gpu.CUDA_CONTEXT_BYTES


def trials_per_gpu(
    peak_bytes: int, gpu_bytes: int, context_bytes: int = CUDA_CONTEXT_BYTES, headroom: float = 0.1, most: int = 8
) -> int:
    """How many trials of measured ``peak_bytes`` fit on one GPU of ``gpu_bytes``.

    Each trial costs its peak plus a CUDA context; ``headroom`` (a share of the GPU) stays free for
    fragmentation and batches larger than the measured one. At least 1 (a trial that does not fit
    alone falls back to micro-batches), at most ``most`` (beyond that the GPU's compute is the limit).
    """
    if peak_bytes <= 0 or gpu_bytes <= 0:
        raise ValueError(f"peak_bytes and gpu_bytes must be > 0, but got ({peak_bytes}, {gpu_bytes})")
    if not 0 <= headroom < 1:
        raise ValueError(f"The value of `headroom` is {headroom!r}, but must be 0 <= headroom < 1.")
    fitting = int(gpu_bytes * (1 - headroom) // (peak_bytes + context_bytes))
    return max(1, min(most, fitting))


def _optimizer(cfg: TrialConfig, net: nn.Module) -> torch.optim.Optimizer:
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

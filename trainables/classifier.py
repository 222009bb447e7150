"""One trial: train an image classifier for up to ``max_epochs``, reporting after every epoch.

``train_classifier(config, data, report)`` is all a caller needs: tests pass ``list.append`` as
``report``; the engine passes one that forwards to Ray Tune together with the epoch's checkpoint.
Data stays on the device as tensors (no DataLoader: the sets are small and already resized), and
each epoch's shuffling is seeded by (seed, epoch), so a resumed trial replays the same batches.

On CUDA (the one GPU Ray assigned: it sets CUDA_VISIBLE_DEVICES), training runs in mixed precision
(bfloat16 where the GPU supports it, else float16 with a gradient scaler) and channels-last.
A CUDA out-of-memory error is not fatal at once: the step is redone with half the micro-batch and
gradient accumulation, so the optimizer still steps on ``batch_size`` images; below
``MIN_MICRO_BATCH`` the trial raises ``TrialInfeasible``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch
from torch import nn

from trainables._names import did_you_mean
from trainables.cost import count_parameters, measure_latency_ms
from trainables.data import TrialData
from trainables.models import build_model, input_normalization, set_train_mode

__all__ = [
    "MIN_MICRO_BATCH",
    "NOT_RETRIED",
    "OPTIMIZERS",
    "build_classifier",
    "Checkpoints",
    "Classifier",
    "fit_classifier",
    "measure_step_memory",
    "train_classifier",
    "TrialConfig",
    "TrialDiverged",
    "TrialInfeasible",
    "trials_per_gpu",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
LR_SCHEDULES = ("constant", "cosine")
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


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial's training depends on. A space may set any of these."""

    model: str = "scratch_resnet"  # timm name or "scratch_resnet"
    weights: str = "none"  # none | imagenet | offline | checkpoint path
    frozen_fraction: float = 0.0  # share of backbone units frozen, in forward order (models.py)
    conv_blocks: int = 3  # scratch_resnet: residual blocks
    base_width: int = 32  # scratch_resnet: channels of the first block
    dropout: float = 0.0  # before the classifier
    optimizer: str = "adam"  # one of OPTIMIZERS
    lr: float = 1e-3  # per optimizer step, at the start of the schedule
    lr_schedule: str = "constant"  # constant | cosine (per epoch, to 0 at max_epochs)
    weight_decay: float = 0.0  # L2 for sgd/adam/rmsprop, decoupled for adamw; not on biases or norms
    momentum: float = 0.9  # sgd and rmsprop
    nesterov: bool = False  # sgd
    beta1: float = 0.9  # adam and adamw
    beta2: float = 0.999  # adam and adamw
    alpha: float = 0.99  # rmsprop: smoothing of the squared-gradient average
    batch_size: int = 64  # images per optimizer step
    label_smoothing: float = 0.0
    max_epochs: int = 4
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
        ]
        for ok, name, rule in rules:
            if not ok:
                raise ValueError(f"The value of `{name}` is {getattr(self, name)!r}, but must be {rule}.")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TrialConfig":
        """Build from a trial's config, rejecting unknown keys and converting numbers."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in fields:
                raise ValueError(f"unknown trial parameter {key!r}" + did_you_mean(key, fields))
            kind = type(fields[key].default)
            if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = float(value)
            elif kind is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            elif kind is bool and isinstance(value, (int, np.integer)) and value in (0, 1):
                value = bool(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise TypeError(f"trial parameter {key!r} is {value!r}, but must be {kind.__name__}")
            kwargs[key] = value
        return cls(**kwargs)


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
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    net, normalize, precision = _network(cfg, len(data.classes), device)
    params, latency_ms = count_parameters(net), None  # costs: count; ms, measured after the first epoch
    train_x = torch.as_tensor(data.train_images).to(device)
    train_y = torch.as_tensor(data.train_labels).to(device)
    val_x = torch.as_tensor(data.val_images).to(device)
    val_y = torch.as_tensor(data.val_labels).to(device)

    optimizer = _optimizer(cfg, net)
    schedule = _schedule(cfg, optimizer)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    first_epoch, train_time = 1, 0.0
    step = _Step(net, optimizer, loss_fn, normalize, precision, micro_batch=min(cfg.batch_size, len(train_x)))
    state = checkpoints.load() if checkpoints is not None else None
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        first_epoch, train_time = state["epoch"] + 1, state["train_time_s"]
        step.micro_batch = state.get("micro_batch", step.micro_batch)  # what fitted before the restart
        if "scaler" in state and precision.scaler is not None:
            precision.scaler.load_state_dict(state["scaler"])

    for epoch in range(first_epoch, cfg.max_epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        try:
            train_loss, train_acc = _train_epoch(step, train_x, train_y, cfg, epoch)
        except TrialDiverged as error:
            # Not a crash and not worth a retry: report it as this trial's last result and stop.
            nan = float("nan")
            report({"epoch": epoch, "diverged": True, "error": str(error), "train_loss": nan,
                    "val_loss": nan, "val_acc": 0.0, "lr": lr, "train_time_s": train_time})  # fmt: skip
            return
        schedule.step()
        training_seconds = time.perf_counter() - started
        val_loss, val_acc = evaluate(net, normalize, val_x, val_y, precision=precision)
        seconds = time.perf_counter() - started
        train_time += seconds
        if latency_ms is None:  # once per trial (process); outside the epoch's timings
            latency_ms = measure_latency_ms(net, normalize(val_x[:1]), autocast=precision.autocast)
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
                "lr": lr,
                "epoch_time_s": seconds,
                "train_time_s": train_time,
                "images_per_s": len(train_x) / training_seconds,  # training only, not validation
                "micro_batch": step.micro_batch,  # below batch_size after out-of-memory errors
                "params": params,  # parameters of the model (count), frozen ones included
                "latency_ms": latency_ms,  # median batch-1 inference time on this device (trainables/cost.py)
            }
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
        """Softmax over classes for (N, 3, S, S) uint8 images, as an (N, classes) float array."""
        self.net.eval()
        device = next(self.net.parameters()).device
        x = torch.as_tensor(np.asarray(images)).to(device)
        out = [torch.softmax(self.net(self.normalize(x[i : i + batch])), 1) for i in range(0, len(x), batch)]
        return torch.cat(out).cpu().numpy()


def build_classifier(config: Mapping[str, Any], classes: tuple[str, ...], state_dict: dict | None = None) -> Classifier:
    """The network ``config`` describes for ``classes``, with ``state_dict`` loaded when given."""
    cfg = TrialConfig.from_mapping(config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
) -> Classifier:
    """Train per ``config`` on all of ``images`` for ``epochs`` epochs, without validation.

    The learning-rate schedule still spans ``config["max_epochs"]``: stopping at epoch ``epochs``
    replays a trial's first ``epochs`` epochs exactly as they ran (same rates, same seeded batch
    order), on this data. ``report`` gets each epoch's training loss and accuracy.
    """
    cfg = TrialConfig.from_mapping(config)
    epochs = cfg.max_epochs if epochs is None else epochs
    if not 1 <= epochs <= cfg.max_epochs:
        raise ValueError(f"`epochs` is {epochs}, but must be 1 <= epochs <= max_epochs (= {cfg.max_epochs}).")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net, normalize, precision = _network(cfg, len(classes), device)
    train_x = torch.as_tensor(np.asarray(images)).to(device)
    train_y = torch.as_tensor(np.asarray(labels)).to(device)
    optimizer = _optimizer(cfg, net)
    schedule = _schedule(cfg, optimizer)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    step = _Step(net, optimizer, loss_fn, normalize, precision, micro_batch=min(cfg.batch_size, len(train_x)))
    train_time = 0.0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = _train_epoch(step, train_x, train_y, cfg, epoch)
        schedule.step()
        train_time += time.perf_counter() - started
        if report is not None:
            report({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "lr": lr, "train_time_s": train_time})
    return Classifier(net=net, normalize=normalize, classes=tuple(classes), config=cfg)


def _network(cfg: TrialConfig, num_classes: int, device: torch.device) -> tuple[nn.Module, "_Normalizer", "_Precision"]:
    """The model on ``device`` (channels-last on CUDA), its input normalisation and its precision."""
    net = build_model(
        cfg.model,
        num_classes=num_classes,
        weights=cfg.weights,
        frozen_fraction=cfg.frozen_fraction,
        conv_blocks=cfg.conv_blocks,
        base_width=cfg.base_width,
        dropout=cfg.dropout,
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
    """Mixed precision and memory layout for a device: bf16 autocast where the GPU supports it,
    else fp16 with a gradient scaler; channels-last on CUDA. On the CPU: float32, as before."""

    def __init__(self, device: torch.device):
        self.device_type = device.type
        self.dtype = autocast_dtype(device.type, device.type == "cuda" and torch.cuda.is_bf16_supported())
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)


def autocast_dtype(device_type: str, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype for a device: None (float32) off CUDA, bfloat16 if supported, else float16."""
    if device_type != "cuda":
        return None
    return torch.bfloat16 if bf16_supported else torch.float16


class _Step:
    """One optimizer step on a batch, split into micro-batches whose gradients add up.

    ``micro_batch`` starts at the batch size and halves after each CUDA out-of-memory error; the
    step is then redone from its start (no optimizer step had happened), so the effective batch
    size stays ``batch_size``. (The aborted forward passes did move BatchNorm running statistics,
    as any micro-batching changes BatchNorm's per-batch statistics; accepted.)
    """

    def __init__(self, net, optimizer, loss_fn, normalize, precision: _Precision, micro_batch: int):
        self.net, self.optimizer, self.loss_fn = net, optimizer, loss_fn
        self.normalize, self.precision, self.micro_batch = normalize, precision, micro_batch

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        """Train on one batch; return the batch's summed loss and correct predictions."""
        while True:
            try:
                return self._accumulate(images, labels)
            except torch.cuda.OutOfMemoryError as error:
                reason = (str(error).strip().splitlines() or ["CUDA out of memory"])[0]
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

    def _accumulate(self, images, labels) -> tuple[float, int]:
        self.optimizer.zero_grad(set_to_none=True)
        total_loss, correct = 0.0, 0
        for chunk in micro_batches(len(images), self.micro_batch):
            x, y = self.normalize(images[chunk]), labels[chunk]
            with self.precision.autocast():
                logits = self.net(x)
                loss = self.loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise TrialDiverged(f"training loss is {loss.item()}")
            # Mean loss of the chunk, weighted by its share of the batch: the gradients sum to the
            # batch's mean-loss gradient.
            scaled = loss * (len(y) / len(images))
            if self.precision.scaler is not None:
                scaled = self.precision.scaler.scale(scaled)
            scaled.backward()
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
        if self.precision.scaler is not None:
            self.precision.scaler.step(self.optimizer)
            self.precision.scaler.update()
        else:
            self.optimizer.step()
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


def _train_epoch(step: _Step, images, labels, cfg: TrialConfig, epoch: int):
    set_train_mode(step.net)
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(images), generator=generator).to(images.device)
    batch = min(cfg.batch_size, len(images))
    total_loss, correct, seen = 0.0, 0, 0
    for start in range(0, len(images), batch):
        index = order[start : start + batch]
        if len(index) < 2:  # BatchNorm cannot train on a single image
            continue
        try:
            loss, right = step(images[index], labels[index])
        except TrialDiverged as error:
            raise TrialDiverged(f"{error} at epoch {epoch}, step {start // batch}") from None
        total_loss += loss
        correct += right
        seen += len(index)
    return total_loss / seen, correct / seen


@torch.inference_mode()
def evaluate(
    net: nn.Module, normalize, images: torch.Tensor, labels: torch.Tensor, batch: int = 512, precision=None
):
    """Mean cross-entropy and accuracy of ``net`` on ``images``."""
    net.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(images), batch):
        if precision is not None:
            with precision.autocast():
                logits = net(normalize(images[start : start + batch])).float()
        else:
            logits = net(normalize(images[start : start + batch]))
        y = labels[start : start + batch]
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / len(images), correct / len(images)


def measure_step_memory(config: Mapping[str, Any], data: TrialData) -> int:
    """Peak CUDA memory, in bytes, of one training step of ``config`` at its full batch size,
    including the model, optimizer state and the data set kept on the GPU (not the CUDA context)."""
    if not torch.cuda.is_available():
        raise RuntimeError("measuring a training step's GPU memory needs a CUDA GPU, and none is visible")
    cfg = TrialConfig.from_mapping(config)
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    net, normalize, precision = _network(cfg, len(data.classes), device)
    images = torch.as_tensor(data.train_images).to(device)
    labels = torch.as_tensor(data.train_labels).to(device)
    val = torch.as_tensor(data.val_images).to(device)
    batch = min(cfg.batch_size, len(images))
    step = _Step(
        net,
        _optimizer(cfg, net),
        nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        normalize,
        precision,
        micro_batch=batch,
    )
    set_train_mode(net)
    step(images[:batch], labels[:batch])
    step(images[:batch], labels[:batch])  # the second step holds the optimizer's state as well
    peak = torch.cuda.max_memory_allocated(device) - before
    del net, step, images, labels, val
    torch.cuda.empty_cache()
    return int(peak)


# Per-process memory the allocator does not count: the CUDA context and cuDNN/cuBLAS workspaces.
CUDA_CONTEXT_BYTES = 600 * 2**20


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
    decay, no_decay = [], []
    for parameter in net.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, momentum=cfg.momentum)


def _schedule(cfg: TrialConfig, optimizer: torch.optim.Optimizer):
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.max_epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

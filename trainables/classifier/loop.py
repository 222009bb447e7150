"""The one epoch loop that a trial (``train_classifier``) and its refit (``fit_classifier``) both
run, so that a retrain replays its trial: the shared set-up, PBT mutations, the two phases, the
learning-rate replay, the seeded batches of an epoch and its optional validation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from trainables import distributed, gpu
from trainables.augment import Augmentation, epoch_generator
from trainables.classifier.config import TrialConfig, dropout_rate
from trainables.classifier.model import network, set_dropout, set_phase
from trainables.classifier.numerics import Normalizer, Precision
from trainables.classifier.optim import (
    Schedule,
    build_optimizer,
    fresh_groups,
    inverse_frequency_weights,
    loss_fn,
    take_mutation,
)
from trainables.classifier.step import Step, steps_per_epoch
from trainables.contract import TrialDiverged
from trainables.models import set_train_mode
from trainables.streaming import epoch_batches

__all__ = ["Epoch", "Training", "apply_mutation", "run_epochs", "set_up", "train_epoch"]


@dataclass
class Training:
    """What ``set_up`` built for a training loop."""

    device: torch.device
    net: nn.Module
    normalize: Normalizer
    precision: Precision
    train_x: Any  # a tensor on the device, or streamed images (trainables/streaming.py)
    train_y: torch.Tensor
    more: tuple  # what else ``upload`` put on the device (train_classifier: the validation set)
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    weights: torch.Tensor | None  # per-class loss weights (class_weights), else None
    step: Step
    steps: int  # optimizer steps per epoch


def set_up(cfg: TrialConfig, num_classes: int, upload: Callable[[torch.device, int], tuple]) -> Training:
    """The set-up ``train_classifier`` and ``fit_classifier`` share, in this order: threads and seed,
    the device, the network, the data on the device, the optimizer, its schedule, the loss and the step.

    ``upload(device, size)`` puts the data on ``device``, the training images at ``size`` px (0: as
    stored, for random crops and rotations, which read the stored size and sample at image_size:
    augment.py), and returns ``(train_x, train_y, *more)``."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = gpu.training_device()
    net, normalize, precision = network(cfg, num_classes, device)
    stored = Augmentation.from_config(cfg).reads_stored_size
    train_x, train_y, *more = upload(device, 0 if stored else cfg.image_size)
    optimizer = build_optimizer(cfg, net)
    steps = steps_per_epoch(len(train_x), cfg.batch_size)
    schedule = Schedule(cfg, optimizer, steps)
    weights = inverse_frequency_weights(train_y, num_classes) if cfg.class_weights else None
    step = Step(net, optimizer, loss_fn(cfg, weights), normalize, precision, micro_batch=min(cfg.batch_size, len(train_x)))
    return Training(device, net, normalize, precision, train_x, train_y, tuple(more), optimizer, schedule, weights, step, steps)


def apply_mutation(run: Training, parent_lr: float, cfg: TrialConfig) -> None:
    """From now on, train per ``cfg``'s PBT_MUTABLE values (a PBT clone's config, or the next
    config of a retrain's replay) with the state trained so far under ``parent_lr``: the optimizer
    takes ``cfg``'s hyperparameters with every rate kept in its place in the schedule
    (``take_mutation``), the network ``cfg``'s dropout, the loss ``cfg``'s label smoothing.
    Augmentation needs nothing: each epoch builds it from the epoch's config."""
    take_mutation(run.optimizer, run.schedule, fresh_groups(cfg, run.net, run.steps), parent_lr, cfg.lr)
    set_dropout(run.net, dropout_rate(cfg))
    run.step.loss_fn = loss_fn(cfg, run.weights)


@dataclass(frozen=True)
class Epoch:
    """What one epoch of ``run_epochs`` did."""

    number: int  # 1, 2, ...
    config: TrialConfig  # the config it trained under (a PBT replay changes it)
    lr: float  # the head's rate at the epoch's start
    train_loss: float = float("nan")  # mean over the epoch's training images
    train_acc: float = 0.0
    training_seconds: float = 0.0  # training only
    seconds: float = 0.0  # training and validation
    validation: tuple[float, float, float] | None = None  # (loss, accuracy, balanced accuracy)
    diverged: str | None = None  # TrialDiverged's message: the loop stops after this epoch


def run_epochs(
    run: Training,
    cfg: TrialConfig,
    first: int,
    last: int,
    validate: Callable[[], tuple[float, float, float]] | None = None,
    mutations: Mapping[int, TrialConfig] | None = None,
    head_lrs: Sequence[float] | None = None,
) -> Iterator[Epoch]:
    """Train epochs ``first..last`` and yield each when it is done (the caller checkpoints and
    reports it before the next one starts).

    ``validate()``: (loss, accuracy, balanced accuracy) after each epoch, also what plateau steps
    on; None (a refit): no validation. ``mutations``: ``{epoch: config}``, from that epoch on the
    config's PBT_MUTABLE values apply (``apply_mutation``). ``head_lrs``: the head's rate of
    epochs 1, 2, ... replayed (a plateau trial's recorded rates). An epoch whose loss stops being
    finite is yielded with ``diverged`` set, and the loop ends."""
    mutations = mutations or {}
    for number in range(first, last + 1):
        started = time.perf_counter()
        gpu.reset_peak_memory(run.device)
        if number in mutations:
            apply_mutation(run, cfg.lr, mutations[number])
            cfg = mutations[number]
        set_phase(run.net, cfg, number)
        if head_lrs is not None:
            run.schedule.set_head_lr(head_lrs[number - 1])
        lr = run.optimizer.param_groups[0]["lr"]
        try:
            train_loss, train_acc = train_epoch(run.step, run.train_x, run.train_y, cfg, number, run.schedule.after_step)
        except TrialDiverged as error:
            yield Epoch(number, cfg, lr, diverged=str(error))
            return
        training_seconds = time.perf_counter() - started
        distributed.average_buffers(run.net)  # one worker: nothing
        validation = validate() if validate is not None else None
        run.schedule.after_epoch(validation[0] if validation is not None else None)
        seconds = time.perf_counter() - started
        yield Epoch(number, cfg, lr, train_loss, train_acc, training_seconds, seconds, validation)


def train_epoch(step: Step, images, labels, cfg: TrialConfig, epoch: int, after_step: Callable[[], None] | None = None):
    """One epoch of optimizer steps in the order and with the augmentation seeded by (seed, epoch),
    each worker on its stride of every batch; returns the mean training loss and accuracy."""
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


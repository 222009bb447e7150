"""One optimizer step on a batch: micro-batches whose gradients add up, halved and redone after a
CUDA out-of-memory error, down to MIN_MICRO_BATCH; below that the trial is infeasible."""

from __future__ import annotations

import torch

from trainables import distributed
from trainables.classifier.numerics import Precision
from trainables.contract import TrialDiverged, TrialInfeasible, out_of_memory_reason

__all__ = ["MIN_MICRO_BATCH", "Step", "micro_batches", "next_micro_batch", "steps_per_epoch"]

# Smallest micro-batch tried after out-of-memory errors (images; BatchNorm needs at least 2).
MIN_MICRO_BATCH = 2


class Step:
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

    def __init__(self, net, optimizer, loss_fn, normalize, precision: Precision, micro_batch: int):
        self.net, self.optimizer, self.loss_fn = net, optimizer, loss_fn
        self.normalize, self.precision, self.micro_batch = normalize, precision, micro_batch

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        """Train on one batch; return the batch's summed loss and correct predictions."""
        while True:
            outcome, reason = distributed.OK, "CUDA out of memory on another worker"
            try:
                result = self._accumulate(images, labels)
            except torch.cuda.OutOfMemoryError as error:
                outcome, reason = distributed.OUT_OF_MEMORY, out_of_memory_reason(error)
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
            reason = out_of_memory_reason(error)
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


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Optimizer steps in one epoch over ``images``: batches of ``batch_size``, a last batch of one
    image skipped (as loop.train_epoch does: BatchNorm cannot train on one image)."""
    batch = min(batch_size, images)
    full, rest = divmod(images, batch) if batch else (0, 0)
    return full + (1 if rest >= 2 else 0)


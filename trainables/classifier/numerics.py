"""Numerics on the device: mixed precision and memory layout, input normalisation, the data set's
upload at the trial's resolution, and evaluation (loss, accuracy, balanced accuracy, latency), each
halving its batch or declaring the trial infeasible on a CUDA out-of-memory error."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainables import gpu
from trainables.augment import resize_images
from trainables.classifier.config import TrialConfig
from trainables.contract import TrialInfeasible, out_of_memory_reason
from trainables.cost import measure_latency_ms
from trainables.metrics import balanced_accuracy

__all__ = [
    "Normalizer",
    "Precision",
    "at_trial_size",
    "autocast_dtype",
    "evaluate",
    "latency_ms",
    "predict",
    "upload",
    "validate",
]


class Normalizer:
    """uint8 images to normalised float tensors, on the device the images already live on."""

    def __init__(self, mean, std, device, memory_format=torch.contiguous_format):
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, -1, 1, 1)
        self.shift = (torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, -1, 1, 1)
        self.memory_format = memory_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() * self.scale - self.shift).contiguous(memory_format=self.memory_format)


class Precision:
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


def upload(cfg: TrialConfig, device: torch.device, *arrays) -> list[torch.Tensor]:
    """The arrays as tensors on ``device``, images at the trial's size. Out of memory here means the
    data set alone does not fit the trial's share of the GPU: no micro-batch helps, so infeasible."""
    try:
        tensors = [torch.as_tensor(np.asarray(a)).to(device) for a in arrays]  # arrays or cache views
        return [at_trial_size(t, cfg) if t.ndim == 4 else t for t in tensors]
    except torch.cuda.OutOfMemoryError as error:
        reason = out_of_memory_reason(error)
    sizes = sum(np.asarray(a).nbytes for a in arrays) / 2**20
    raise TrialInfeasible(f"infeasible: out of memory uploading the data set ({sizes:.0f} MiB) to the GPU: {reason}")


def latency_ms(net, normalize, images, precision) -> float:
    """measure_latency_ms on one validation image; out of memory even at batch 1 is infeasible."""
    try:
        return measure_latency_ms(net, normalize(images[:1]), autocast=precision.autocast)
    except torch.cuda.OutOfMemoryError as error:
        reason = out_of_memory_reason(error)
    raise TrialInfeasible(f"infeasible: out of memory measuring batch-1 latency: {reason}")



def at_trial_size(images: torch.Tensor, cfg: TrialConfig) -> torch.Tensor:
    """Images at the trial's resolution (``image_size``; 0 keeps the run's)."""
    return resize_images(images, cfg.image_size) if cfg.image_size else images



@torch.inference_mode()
def evaluate(
    net: nn.Module, normalize, images: torch.Tensor, labels: torch.Tensor, batch: int = 512, precision=None
):
    """Mean cross-entropy and accuracy of ``net`` on ``images`` (never augmented)."""
    total_loss, predictions = predict(net, normalize, images, labels, batch, precision)
    return total_loss / len(images), (predictions == labels).sum().item() / len(images)


def validate(net, normalize, images, labels, precision=None) -> tuple[float, float, float]:
    """Mean cross-entropy, accuracy and balanced accuracy on the validation images, in one pass."""
    total_loss, predictions = predict(net, normalize, images, labels, 512, precision)
    accuracy = (predictions == labels).sum().item() / len(images)
    return total_loss / len(images), accuracy, balanced_accuracy(labels, predictions)


def predict(net, normalize, images, labels, batch: int, precision) -> tuple[float, torch.Tensor]:
    """Summed cross-entropy over ``images`` and the predicted classes; on a CUDA out-of-memory
    error, again at half the batch (down to 1 image, then TrialInfeasible)."""
    while True:
        try:
            return predict_batches(net, normalize, images, labels, batch, precision)
        except torch.cuda.OutOfMemoryError as error:
            reason = out_of_memory_reason(error)
        if batch == 1:
            raise TrialInfeasible(f"infeasible: out of memory evaluating one image: {reason}")
        batch = max(1, batch // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@torch.inference_mode()
def predict_batches(net, normalize, images, labels, batch: int, precision) -> tuple[float, torch.Tensor]:
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


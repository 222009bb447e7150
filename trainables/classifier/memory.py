"""How much GPU memory one classifier trial needs, measured on the GPU over a whole trial cycle: the
number the engine packs trials by (search/gpu_packing.py, with trainables.gpu.trials_per_gpu)."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from trainables import gpu
from trainables.classifier.config import TrialConfig
from trainables.classifier.model import network
from trainables.classifier.numerics import upload, validate
from trainables.classifier.optim import build_optimizer, loss_fn
from trainables.classifier.step import Step
from trainables.contract import TrialData, TrialInfeasible
from trainables.cost import measure_latency_ms
from trainables.models import set_train_mode

__all__ = ["measure_step_memory"]


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
    net, normalize, precision = network(cfg, len(data.classes), device)
    images, labels, val, val_labels = upload(cfg, device, data.train_images, data.train_labels, data.val_images, data.val_labels)
    batch = min(cfg.batch_size, len(images))
    step = Step(net, build_optimizer(cfg, net), loss_fn(cfg, None), normalize, precision, micro_batch=batch)
    set_train_mode(net)
    step(images[:batch], labels[:batch])
    step(images[:batch], labels[:batch])
    validate(net, normalize, val, val_labels, precision)
    measure_latency_ms(net, normalize(val[:1]), runs=2, warmup=1, autocast=precision.autocast)
    if step.micro_batch < batch:  # it ran out of memory: the measurement is of a smaller step
        raise TrialInfeasible(f"infeasible: out of memory measuring batch size {batch} alone on the GPU")
    peak = torch.cuda.max_memory_reserved(device) - before
    del net, step, images, labels, val, val_labels
    gpu.release()
    return int(peak)

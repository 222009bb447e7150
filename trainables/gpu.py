"""What a trial needs to know about its GPU: which precision is native there, how much of its
memory the trial may take, what it used, and how to give it back.

Pure decisions are module-level functions that tests call with plain numbers
(``precision_for((7, 5))`` is "fp16": a T4 only emulates bf16); the few functions that touch a
device (``cap_memory``, ``release``, ``peak_memory_mb``) do nothing, or report the CPU's figure,
when no GPU is visible. Nothing here imports Ray: the engine calls ``cap_memory`` and ``release``
around every trial it runs (search/trial.py, search/workers.py), and the classifier records ``device_label``,
``precision_for`` and ``peak_memory_mb`` in every epoch's metrics.
"""

from __future__ import annotations

import gc
import os
import resource
import sys

import torch

__all__ = [
    "BF16_NATIVE_CAPABILITY",
    "CUDA_CONTEXT_BYTES",
    "trials_per_gpu",
    "PRECISIONS",
    "cap_memory",
    "context_bytes",
    "device_label",
    "memory_fraction",
    "peak_memory_mb",
    "precision_for",
    "release",
    "reset_peak_memory",
    "training_device",
]

# Compute capability from which bfloat16 runs on tensor cores (Ampere: A100, A10, RTX 30xx, and
# later: L4, H100). Below it (T4 7.5, V100 7.0) torch reports bf16 as "supported" but emulates it.
BF16_NATIVE_CAPABILITY = (8, 0)
PRECISIONS = ("fp32", "bf16", "fp16")  # fp16 always with a gradient scaler

# Per-process GPU memory the caching allocator does not count (CUDA context, cuDNN/cuBLAS
# workspaces): used when it cannot be measured on the GPU itself (see ``context_bytes``).
CUDA_CONTEXT_BYTES = 600 * 2**20


def precision_for(device_type: str, capability: tuple[int, int] | None) -> str:
    """"bf16" on a GPU of compute capability >= 8.0, "fp16" (with a gradient scaler) on an older
    GPU, "fp32" off CUDA."""
    if device_type != "cuda":
        return "fp32"
    if capability is None:
        raise ValueError("a CUDA device needs its compute capability, e.g. (8, 0), to choose its precision")
    return "bf16" if tuple(capability) >= BF16_NATIVE_CAPABILITY else "fp16"


def training_device() -> torch.device:
    """Where this process trains: the GPU (the one Ray assigned: it sets CUDA_VISIBLE_DEVICES), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_label(device: torch.device) -> str:
    """"cpu", or "cuda:" and the GPU's name (e.g. "cuda:NVIDIA H100 80GB HBM3")."""
    if device.type != "cuda":
        return device.type
    return f"cuda:{torch.cuda.get_device_name(device)}"


def memory_fraction(share: float, context: int, total: int) -> float | None:
    """The fraction of a GPU's ``total`` bytes that a trial's caching allocator may reserve when the
    trial holds ``share`` of the GPU and its CUDA context already takes ``context`` bytes outside
    the allocator: ``(share * total - context) / total``. None for a whole GPU (share >= 1: no cap).

    ValueError when the share cannot even hold the context: such a trial would fail on its first
    allocation, and the error names the fix."""
    if not 0 < share:
        raise ValueError(f"`share` is {share!r}, but must be > 0 (the trial's GPU fraction)")
    if total <= 0 or context < 0:
        raise ValueError(f"`total` and `context` must be > 0 and >= 0, but got ({total}, {context})")
    if share >= 1:
        return None
    usable = share * total - context
    if usable <= 0:
        raise ValueError(
            f"a GPU share of {share} is {share * total / 2**20:.0f} MiB, less than the CUDA context of "
            f"{context / 2**20:.0f} MiB: give each trial more of the GPU (a larger --gpus-per-trial)"
        )
    return usable / total


def context_bytes(device: int = 0) -> int:
    """This process's GPU memory outside the caching allocator (its CUDA context and library
    workspaces), measured: the process's own usage as the driver reports it (NVML, when the
    ``pynvml`` module is there) less what the allocator reserved. ``CUDA_CONTEXT_BYTES`` when it
    cannot be measured."""
    try:
        import pynvml  # nvidia-ml-py; not a dependency of this project

        pynvml.nvmlInit()
        index = _physical_index(device)
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        used = [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid == os.getpid()]
        if used and used[0]:
            return max(0, int(used[0]) - torch.cuda.memory_reserved(device))
    except Exception:  # no NVML, no permission, a container's PID namespace: fall back
        pass
    return CUDA_CONTEXT_BYTES


def _physical_index(device: int) -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    return int(ids[device]) if ids and ids[device].isdigit() else device


def cap_memory(share: float) -> float | None:
    """Cap this process's CUDA caching allocator at its ``share`` of its GPU (the current device:
    the one Ray assigned) less its measured context (``torch.cuda.set_per_process_memory_fraction``),
    so that an out-of-memory error is the trial's own and never a neighbour's spike. Returns the
    fraction set; None where nothing is capped (no GPU visible, or a whole GPU). A reused process
    is capped again for each trial."""
    if share <= 0 or not torch.cuda.is_available():
        return None
    torch.cuda.init()
    device = torch.cuda.current_device()
    if share >= 1:
        torch.cuda.set_per_process_memory_fraction(1.0, device)  # undo a cap a previous trial set
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = memory_fraction(share, context_bytes(device), total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def release() -> None:
    """Return this process's cached GPU memory to the driver, so that the next trial a reused
    process runs (Ray's ``reuse_actors``) starts empty. Call once the trial's tensors are gone."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """On CUDA: the allocator's peak reserved memory since ``reset_peak_memory`` (MiB; what the
    trial held of the GPU, cache included). On the CPU: the process's peak resident set (MiB, since
    the process started: the OS keeps no per-epoch peak)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


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


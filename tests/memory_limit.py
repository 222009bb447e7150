"""A GPU with little memory, simulated on the CPU, to test out-of-memory handling for real.

While a ``MemoryLimit(images)`` is active, every module in training mode raises CUDA's own
``torch.cuda.OutOfMemoryError`` on inputs of more than ``images`` images (a global forward
pre-hook). ``install`` is a Ray ``worker_process_setup_hook`` that activates a limit of one image in
every worker of a search: no micro-batch fits, so every trial is infeasible.
"""

from __future__ import annotations

import torch


class MemoryLimit:
    def __init__(self, images: int, in_eval: bool = False):
        # in_eval: the limit holds in eval mode too (validation, latency), not only in training.
        self.images, self.largest_ok, self.in_eval = images, 0, in_eval
        self.handle = None

    def _hook(self, module, inputs):
        if (module.training or self.in_eval) and inputs and torch.is_tensor(inputs[0]) and inputs[0].ndim == 4:
            if inputs[0].shape[0] > self.images:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (test limit: {self.images} images)")
            self.largest_ok = max(self.largest_ok, inputs[0].shape[0])

    def __enter__(self) -> "MemoryLimit":
        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def install() -> None:
    MemoryLimit(images=1).__enter__()

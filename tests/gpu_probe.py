"""A trainable for tests on logical GPUs (tests/logical_gpus.py): it trains nothing and reports
which GPUs Ray gave its process and what CUDA_VISIBLE_DEVICES it sees, from every worker of a
multi-worker trial. Tests may import Ray; trainables/ may not, so this lives here."""

from __future__ import annotations

import json
import os
import time


def probe(config, data, report, checkpoints=None):
    import ray
    import torch

    started = time.time()
    seen = {"gpu_ids": sorted(str(i) for i in ray.get_gpu_ids()), "visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "pid": os.getpid()}
    everyone = [seen]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        everyone = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everyone, seen)
    time.sleep(3)  # long enough for trials that share a GPU to overlap
    report({"epoch": 1, "val_acc": 0.5, "started": started, "ended": time.time(), "seen": json.dumps(everyone)})

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
    # A barrier in a shared directory: trials that run at once all arrive; trials that cannot
    # (their GPU shares were not placed together) would wait out the timeout and see fewer.
    peers, barrier = config.get("peers", 0), config.get("barrier")
    arrived = 0
    if barrier and (not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0):
        os.makedirs(barrier, exist_ok=True)
        open(os.path.join(barrier, str(os.getpid())), "w").close()
        deadline = time.time() + 120
        while len(os.listdir(barrier)) < peers and time.time() < deadline:
            time.sleep(0.2)
        arrived = len(os.listdir(barrier))
    report({"epoch": 1, "val_acc": 0.5, "started": started, "ended": time.time(), "seen": json.dumps(everyone), "peers": arrived})

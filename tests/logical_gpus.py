"""Run as its own process (``python -m tests.logical_gpus OUT``): a Ray session that declares two
GPUs on this CPU machine, and two real searches on it with the probe trainable
(tests/gpu_probe.py): four trials at 0.25 GPU each, then one trial of two workers with one GPU
each. Writes each trial's last record to OUT/result.json for tests/test_gpus.py. Its own process
because the pytest process holds the shared 2-CPU, 0-GPU session (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SPACE = '''TRAINABLE = "tests.gpu_probe:probe"
DATASET = "digits"
DATA_FRACTION = 0.2
IMAGE_SIZE = 8
MAX_EPOCHS = 1
SCHEDULER = "fifo"


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)
    return {"peers": _PEERS, "barrier": _BARRIER}
'''


def main(out: Path) -> None:
    import ray

    from analysis.records import read_trials
    from search.config.settings import settings_from_mapping
    from search.config.spaces import load_space
    from search.engine import run_search
    from search.ray_session import start_local
    from search.workers import TORCH_BACKEND_ENV

    os.environ[TORCH_BACKEND_ENV] = "gloo"  # the declared GPUs are not visible to torch
    out.mkdir(parents=True, exist_ok=True)
    start_local(num_cpus=4, num_gpus=2, logging_level="warning", log_to_driver=False)
    results = {}
    try:
        for name, overrides, peers in [
            ("shared", {"trials": 4, "gpus_per_trial": 0.25, "concurrency": 4}, 4),
            ("workers", {"trials": 1, "gpus_per_trial": 1.0, "workers_per_trial": 2}, 1),
        ]:
            path = out / f"{name}_space.py"
            path.write_text(f"_PEERS = {peers}\n_BARRIER = {str(out / (name + '_barrier'))!r}\n" + SPACE)
            space = load_space(path)
            values = {"trainable": "tests.gpu_probe:probe", "dataset": "digits", "data_fraction": 0.2, "image_size": 8,
                      "max_epochs": 1, "scheduler": "fifo", "storage": str(out), "name": name} | overrides  # fmt: skip
            run_dir = run_search(space, settings_from_mapping(values, "test"), out=lambda line: None)
            results[name] = [{"status": r.status.get("status"), **(r.metrics[-1] if r.metrics else {})} for r in read_trials(run_dir)]
    finally:
        ray.shutdown()
    (out / "result.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

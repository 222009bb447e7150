"""Start-up: time from the command to the first trial's first optimizer step, and how it splits
into imports, Ray start, data preparation and model build, measured in one run.

    python benchmarks/startup.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO


def _python(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    bare = _python("pass")
    cli = _python("import search.cli") - bare
    engine = _python("import search.engine") - bare
    ray_start = _python(
        "import time, ray; t = time.perf_counter(); "
        "ray.init(address='local', _node_ip_address='127.0.0.1', include_dashboard=False, logging_level='error'); "
        "print(time.perf_counter() - t)"
    ) - _python("import ray")  # fmt: skip
    sys.path.insert(0, str(REPO))
    from trainables.data import load_dataset
    from trainables.models import build_model
    from trainables.split import split_indices

    started = time.perf_counter()
    images = load_dataset("digits", 32)
    split_indices(images.labels, 0.2, 0.2, seed=0)
    data = time.perf_counter() - started
    started = time.perf_counter()
    build_model("tf_efficientnet_lite0", 10, weights="offline")
    model = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        subprocess.run(
            [sys.executable, "-m", "search", "run", "spaces/resnet.py", "--no-retrain", "--model", "tf_efficientnet_lite0",
             "--weights", "offline", "--trials", "1", "--max-epochs", "1", "--data-fraction", "0.3",
             "--storage", tmp, "--name", "s"],
            cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
        first = json.loads(next((Path(tmp) / "s").glob("trials/*/metrics.jsonl")).read_text().splitlines()[0])
        to_first_step = first["recorded_at"] - started - first["epoch_time_s"]
    print(f"command to the first trial's first step: {to_first_step:5.1f} s")
    print(f"  python itself                         {bare:5.2f} s")
    print(f"  import search.cli (for --help)        {cli:5.2f} s")
    print(f"  import search.engine (torch, ray, ...) {engine:5.2f} s")
    print(f"  ray.init (local, loopback)            {ray_start:5.2f} s")
    print(f"  data: load and split digits at 32 px  {data:5.2f} s")
    print(f"  model: EfficientNet-Lite0 + weights   {model:5.2f} s")
    print(f"  the rest (dry run, worker start, first trial's imports): "
          f"{to_first_step - bare - engine - ray_start - data - model:5.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()

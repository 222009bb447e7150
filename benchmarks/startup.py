"""Start-up: time from the command to the first trial's first optimizer step, and how it splits
into imports, Ray start, data preparation and model build, measured in one run; what each
concurrent trial worker costs to start; and what joining a running Ray (``--address``) saves.

    python benchmarks/startup.py                      # all three parts
    python benchmarks/startup.py --parts workers,address --repeats 3

- ``startup``: the split of one command's start, as above (one run).
- ``workers``: a 2-trial, 1-epoch run of fixed from-scratch CNNs at concurrency 2 (one worker per
  trial, both started at once): per trial, the time from its start (status.json's ``started_at``)
  to its first result, less the epoch itself (``epoch_time_s``): the worker's start, its imports,
  the data and the model. Per repetition and min / median / max.
- ``address``: the same 2-trial, 1-epoch ``scratch_cnn.py`` command run with a Ray it starts
  itself (A) and joining one started beforehand with ``ray start --head`` (B), in the order
  A B B A per repetition: wall times min / median / max and the median saving. The head is
  started with ``--block`` in a process group of its own and stopped by signalling that group
  (never ``ray stop``, which would stop every Ray session of this user on the machine), and it
  is joined by its explicit address (``--address auto`` could find another session here).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, SCRATCH_CONFIGS, fixed_space, run_cli


def _python(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def startup() -> None:
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



def _spread(values: list[float]) -> str:
    return f"min {min(values):.1f} / median {statistics.median(values):.1f} / max {max(values):.1f} s"


def workers(repeats: int) -> None:
    costs = []
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            space = fixed_space(Path(tmp) / "fixed.py", SCRATCH_CONFIGS[:2], {"model": "scratch_resnet", "image_size": 16})
            run_cli("run", str(space), "--trials", "2", "--concurrency", "2", "--max-epochs", "1",
                    "--grace-period-epochs", "1", "--no-retrain", "--storage", tmp, "--name", "w")  # fmt: skip
            these = []
            for trial in (Path(tmp) / "w" / "trials").iterdir():
                status = json.loads((trial / "status.json").read_text())
                first = json.loads((trial / "metrics.jsonl").read_text().splitlines()[0])
                started = dt.datetime.fromisoformat(status["started_at"]).timestamp()
                these.append(first["recorded_at"] - started - first["epoch_time_s"])
        costs += these
        print(f"  run {repeat + 1}: trial start to first result, less the epoch: "
              + ", ".join(f"{c:.1f} s" for c in these) + f"; load average {os.getloadavg()}", flush=True)  # fmt: skip
    print(f"per concurrent trial worker (start, imports, data, model), {len(costs)} workers: {_spread(costs)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def address(repeats: int) -> None:
    port = _free_port()
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--include-dashboard", "false", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2"],
        cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    joined = f"127.0.0.1:{port}"
    # The head requires Ray's token (~/.ray/auth_token), as the command's own session does: the
    # commands that join it must send it.
    os.environ["RAY_AUTH_MODE"] = "token"
    times: dict[str, list[float]] = {"A": [], "B": []}
    try:
        deadline = time.monotonic() + 300  # the head's start-up, outside the measurement
        probe = ["ray", "status", "--address", joined]
        while subprocess.run(probe, capture_output=True).returncode != 0:
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`ray start --head` at {joined} did not come up")
            time.sleep(2)
        for repeat in range(repeats):
            for kind in "ABBA":
                with tempfile.TemporaryDirectory() as tmp:
                    extra = ["--address", joined] if kind == "B" else []
                    seconds, _ = run_cli("run", "spaces/scratch_cnn.py", "--trials", "2", "--max-epochs", "1",
                                         "--grace-period-epochs", "1", "--no-retrain", "--storage", tmp, "--name", "a", *extra)  # fmt: skip
                times[kind].append(seconds)
            print(f"  repetition {repeat + 1}: own Ray {times['A'][-2]:.1f} s, {times['A'][-1]:.1f} s; joined "
                  f"{times['B'][-2]:.1f} s, {times['B'][-1]:.1f} s; load average {os.getloadavg()}", flush=True)  # fmt: skip
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    own, join = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"2-trial 1-epoch scratch_cnn.py command, Ray started by the command: {_spread(times['A'])}")
    print(f"the same, joining a running Ray (--address): {_spread(times['B'])}")
    print(f"saving: {own - join:.1f} s per command (medians), joined / own {join / own:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="startup,workers,address")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of workers and address")
    args = parser.parse_args()
    parts = args.parts.split(",")
    print(f"load average {os.getloadavg()}")
    if "startup" in parts:
        startup()
    if "workers" in parts:
        workers(args.repeats)
    if "address" in parts:
        address(args.repeats)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()

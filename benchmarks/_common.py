"""Helpers shared by the benchmark scripts: fixed trial configurations, a bare training loop run
by worker processes, and running the CLI while timing it."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The benchmarks import the project from this checkout, installed or not; spawned worker
# processes inherit the path through PYTHONPATH.
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))

# From-scratch CNNs of a few sizes: fixed, so the engine and the bare loop train the same things.
SCRATCH_CONFIGS = [
    {"conv_blocks": b, "base_width": w, "batch_size": 64, "optimizer": "adam", "lr": 3e-3}
    for b, w in [(2, 32), (3, 32), (2, 16), (3, 16), (1, 32), (3, 32), (2, 32), (1, 16)]
]


def fixed_space(path: Path, configs: list[dict], settings: dict) -> Path:
    """A space file whose trial number k gets ``configs[k]`` (OptunaSearch numbers trials 0, 1, ...)."""
    lines = [f"{k.upper()} = {v!r}" for k, v in settings.items()]
    # The repeat check compares searched parameters (none here): trial k is the k-th configuration.
    lines += ['REPEATS = "allow"']
    lines += [f"_CONFIGS = {configs!r}", "", "def space(trial):", "    return dict(_CONFIGS[trial.number % len(_CONFIGS)])"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(*args: str) -> tuple[float, str]:
    """Run ``python -m search ...``; return its wall time in seconds and its output."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "search", *args], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    return seconds, done.stdout


def trial_phase(run_dir: Path) -> tuple[float, float]:
    """(first trial start, last result) as UNIX times, from the run directory."""
    import datetime as dt

    starts, ends = [], []
    for trial in (run_dir / "trials").iterdir():
        status = json.loads((trial / "status.json").read_text())
        starts.append(dt.datetime.fromisoformat(status["started_at"]).timestamp())
        ends.append(max(json.loads(line)["recorded_at"] for line in (trial / "metrics.jsonl").read_text().splitlines()))
    return min(starts), max(ends)


_DATA = None


def _load(dataset: str, image_size: int, data_fraction: float) -> None:
    global _DATA
    from trainables.data import load_dataset
    from trainables.split import split_indices, trial_data

    images = load_dataset(dataset, image_size)
    _DATA = trial_data(images, split_indices(images.labels, 0.2, 0.2, seed=0, data_fraction=data_fraction))


def _train(config: dict) -> list[dict]:
    from trainables.classifier import train_classifier

    reports: list[dict] = []
    train_classifier(config, _DATA, reports.append)
    return reports


def bare_loop(configs: list[dict], concurrency: int, image_size: int, data_fraction: float = 1.0) -> float:
    """Train ``configs`` with a plain process pool of ``concurrency`` workers; return the wall time.

    The clock includes starting the workers, their imports and loading the data once per worker:
    what any parallel loop written by hand pays too.
    """
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(concurrency, initializer=_load, initargs=("digits", image_size, data_fraction)) as pool:
        pool.map(_train, configs, chunksize=1)
    return time.perf_counter() - started


def start_ray_retrying(start, attempts: int = 3, out=print) -> None:
    """``start()`` (a Ray session's start), again after Ray's 30 s wait for a new local node ran out,
    as it does on a heavily loaded machine; the processes the failed start left are ended first
    (this process's children, by id)."""
    import psutil

    for attempt in range(attempts):
        try:
            return start()
        except Exception as error:
            if "timed out during startup" not in str(error) or attempt == attempts - 1:
                raise
            out(f"Ray did not start in time ({error}); again")
            for child in psutil.Process().children(recursive=True):
                child.kill()

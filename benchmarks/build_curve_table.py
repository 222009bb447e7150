"""Build a learning-curve table from real training, with the engine itself: a grid search (FIFO)
over a space file's discrete grid, every epoch's validation accuracy, loss and time written into
one compressed file that trainables/replay.py replays.

    python benchmarks/build_curve_table.py                         # spaces/scratch_cnn_grid.py -> benchmarks/tables/scratch_digits.npz
    python benchmarks/build_curve_table.py --second-seed-points 0  # one training seed only
    python benchmarks/build_curve_table.py --space spaces/my_grid.py --out benchmarks/tables/my.npz --concurrency 8

Two passes, each one run of ``python -m search run`` through the Python API, on one data split
(the run's SEED): the whole grid trained with the space's training seed, then the first
``--second-seed-points`` points of the same seeded grid order trained again with another seed, so
the table measures noise between training seeds on a random part of the grid. A space file for it
sets ``SAMPLER = "grid"``, ``SCHEDULER = "fifo"``, ``_TRAINING_SEED = 0`` and returns
``{"seed": _TRAINING_SEED, ...}`` (see spaces/scratch_cnn_grid.py).

Resumable: each pass is a run directory under ``--work``; a pass that stopped is resumed
(``search.api.resume``), a finished one is only read. Epoch times are measured on whatever else
the machine is doing: the load average, sampled during the build, goes into the table's metadata.

The table (numpy ``.npz``, see ``trainables.replay.CurveTable``):
    parameters        JSON: {name: [values...]} of the grid, in the space's order
    points            int16 [configs, parameters]: each configuration as indices into those values
    val_acc, val_loss, epoch_time_s   float32 [configs, seeds, epochs], NaN where not trained
    params            int64 [configs]: the model's parameter count
    metadata          JSON: space file text, settings, training seeds, build time, machine, load
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.records import read_trials, unfinished_budget
from benchmarks._common import start_ray_retrying
from search import api
from search.config.spaces import load_space, resolve_settings
from search.strategies.samplers import grid_points

TRAINING_SEED_LINE = "_TRAINING_SEED = "


class LoadSampler:
    """The 1-minute load average every ``every_s`` seconds, on a thread, while the build runs."""

    def __init__(self, every_s: float = 30.0):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every_s)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def with_training_seed(text: str, seed: int) -> str:
    """The space file's text with its ``_TRAINING_SEED`` line set to ``seed``."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(TRAINING_SEED_LINE)]
    if len(hits) != 1:
        raise ValueError(f"the space file needs exactly one line starting {TRAINING_SEED_LINE!r}, found {len(hits)}")
    lines[hits[0]] = f"{TRAINING_SEED_LINE}{seed}\n"
    return "".join(lines)


def points_space(text: str, points: list[dict]) -> str:
    """A space file that gives trial number k the grid point ``points[k]`` (with the grid space's
    constants): part of a grid, in a chosen order, beside a grid search running the rest."""
    return text + f"""

# Added by benchmarks/build_curve_table.py: trial k trains _POINTS[k] of the grid above.
REPEATS = "allow"  # trial k is _POINTS[k], whatever the sampler proposed
_POINTS = {points!r}
_grid_space = space


def space(trial):
    import optuna

    point = _POINTS[trial.number % len(_POINTS)]
    return point | (_grid_space(optuna.trial.FixedTrial(point)) or {{}})
"""


def run_pass(space_path: Path, work: Path, name: str, trials: int, concurrency: int, cpus_per_trial: float, **extra) -> Path:
    """One grid search (or its resumption); its run directory."""
    run_dir = work / name
    if (run_dir / "leaderboard.csv").is_file() and not unfinished_budget(run_dir):
        print(f"{name}: finished before, read as it is", flush=True)
        return run_dir
    if (run_dir / "settings.json").is_file():
        print(f"{name}: resuming {run_dir}", flush=True)
        try:
            return api.resume(run_dir, retrain=False, verbose=True).dir
        except ValueError as error:  # stopped before its first trial: nothing to resume
            print(f"{name}: {error}; starting it again", flush=True)
            shutil.rmtree(run_dir)
    print(f"{name}: {trials} trials, {concurrency} at once", flush=True)
    return start_ray_retrying(lambda: _start(space_path, work, name, trials, concurrency, cpus_per_trial, **extra),
                              out=lambda line: print(f"{name}: {line}", flush=True))


def _start(space_path: Path, work: Path, name: str, trials: int, concurrency: int, cpus_per_trial: float, **extra) -> Path:
    return api.run(
        space_path, trials=trials, concurrency=concurrency, cpus_per_trial=cpus_per_trial, storage=str(work), name=name,
        retrain=False, verbose=True, **extra,
    ).dir


def collect(run_dirs: list[Path], values: dict[str, list], seeds: list[int], epochs: int):
    """The table's arrays from the passes' trial records."""
    names = list(values)
    index = {}
    points = np.array(np.meshgrid(*[np.arange(len(values[n])) for n in names], indexing="ij")).reshape(len(names), -1).T
    for row, point in enumerate(points):
        index[tuple(values[n][i] for n, i in zip(names, point))] = row
    shape = (len(points), len(seeds), epochs)
    arrays = {key: np.full(shape, np.nan, dtype=np.float32) for key in ("val_acc", "val_loss", "epoch_time_s")}
    params = np.zeros(len(points), dtype=np.int64)
    for run_dir in run_dirs:
        for record in read_trials(run_dir):
            if record.status.get("status") != "completed":
                continue
            row = index.get(tuple(record.config[n] for n in names))
            if row is None:
                continue  # outside the grid asked for (a table of part of a grid)
            column = seeds.index(int(record.config["seed"]))
            if np.isfinite(arrays["val_acc"][row, column, -1]):
                continue  # trained twice (a tail pass beside the grid search): the first record stands
            for metrics in record.metrics:
                epoch = int(metrics["epoch"]) - 1
                for key in arrays:
                    arrays[key][row, column, epoch] = metrics[key]
                params[row] = int(metrics.get("params", 0))
    return points.astype(np.int16), arrays, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "spaces/scratch_cnn_grid.py"), help="a grid space file")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/tables/scratch_digits.npz"))
    parser.add_argument("--work", default=str(ROOT / "runs/curve_table"), help="where the passes' run directories go")
    parser.add_argument("--concurrency", type=int, default=4, help="trials at once")
    parser.add_argument("--cpus-per-trial", type=float, default=0.5,
                        help="Ray CPUs per trial (each trains on one thread); 0.5: 4 trials on 2 cores, which a shared machine rewards")
    parser.add_argument("--second-seed-points", type=int, default=64, help="grid points trained with a second seed")
    parser.add_argument("--first-pass-points", type=int, default=0, help="0: the whole grid (fewer: a smoke test)")
    parser.add_argument("--tail", type=int, default=0,
                        help="train the last TAIL points of the grid's order in a run of their own (beside a running "
                        "build, on a machine with idle cores); the build reads them with the rest")
    parser.add_argument("--collect-only", action="store_true",
                        help="train nothing: write the table from every pass under --work (after stopping a build whose "
                        "grid search and tail passes cover the grid between them)")
    parser.add_argument("--load-note", default="", help="with --collect-only: the load seen while the passes ran, for the metadata")
    parser.add_argument("--only-second-pass", action="store_true",
                        help="run the second seed's pass alone and stop (beside a running build: it reads the result)")
    args = parser.parse_args()

    space_path, work = Path(args.space).resolve(), Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    space = load_space(space_path)
    settings = resolve_settings(space, {})
    grid = grid_points(settings, space)
    values = {name: sorted({p[name] for p in grid}, key=lambda v: (isinstance(v, str), v)) for name in grid[0]}
    first_seed = _training_seed(space.text)
    second_seed = first_seed + 1
    started, load = time.time(), LoadSampler()
    if args.tail:
        tail = work / f"space_seed{first_seed}_tail.py"
        tail.write_text(points_space(space.text, grid[-args.tail:]))
        run_pass(tail, work, f"seed{first_seed}-tail", args.tail, args.concurrency, args.cpus_per_trial, sampler="random")
        return
    if args.only_second_pass:
        copy = work / f"space_seed{second_seed}.py"
        copy.write_text(with_training_seed(space.text, second_seed))
        run_pass(copy, work, f"seed{second_seed}", args.second_seed_points, args.concurrency, args.cpus_per_trial)
        return
    if args.collect_only:
        run_dirs = [work / f"seed{first_seed}", work / f"seed{first_seed}-tail", work / f"seed{second_seed}"]
        run_dirs = [d for d in run_dirs if (d / "settings.json").is_file()]
    else:
        load.__enter__()
        run_dirs = [run_pass(space_path, work, f"seed{first_seed}", args.first_pass_points or len(grid), args.concurrency,
                             args.cpus_per_trial)]
        if args.second_seed_points:
            copy = work / f"space_seed{second_seed}.py"
            copy.write_text(with_training_seed(space.text, second_seed))
            run_dirs.append(run_pass(copy, work, f"seed{second_seed}", args.second_seed_points, args.concurrency,
                                     args.cpus_per_trial))
        if (work / f"seed{first_seed}-tail" / "settings.json").is_file():
            run_dirs.append(work / f"seed{first_seed}-tail")
        load.__exit__()
    seeds = [first_seed, second_seed]
    points, arrays, params = collect(run_dirs, values, seeds, settings.max_epochs)
    trained = np.isfinite(arrays["val_acc"][:, :, -1])
    metadata = {
        "space_file": str(space_path.relative_to(ROOT)) if space_path.is_relative_to(ROOT) else str(space_path),
        "space_text": space.text,
        "dataset": settings.dataset,
        "image_size": settings.image_size,
        "split_seed": settings.seed,
        "training_seeds": seeds,
        "trained_per_seed": trained.sum(axis=0).tolist(),
        "epochs": settings.max_epochs,
        "concurrency": args.concurrency,
        "cpus_per_trial": args.cpus_per_trial,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_wall_s": round(time.time() - started, 1) if not args.collect_only else _span(run_dirs),  # this invocation (a resumed build: its last part)
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "load_average_1min": {
            "min": min(load.samples, default=None),
            "median": float(np.median(load.samples)) if load.samples else None,
            "max": max(load.samples, default=None),
            "samples": len(load.samples),
        },
        "load_note": args.load_note,
        "timing_note": "epoch_time_s measured under the load above (a shared machine): relative costs, not idle speeds",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, parameters=json.dumps(values), points=points, params=params, metadata=json.dumps(metadata), **arrays
    )
    print(f"wrote {out}: {points.shape[0]} configurations x {len(seeds)} seed(s) x {settings.max_epochs} epochs, "
          f"trained per seed {metadata['trained_per_seed']}, {out.stat().st_size / 1e6:.2f} MB, "
          f"build {metadata['build_wall_s']:.0f} s, load {metadata['load_average_1min']}")


def _span(run_dirs: list[Path]) -> float:
    """Seconds from the first trial's start to the last epoch's report, over every pass."""
    starts, ends = [], []
    for run_dir in run_dirs:
        for record in read_trials(run_dir):
            if record.metrics:
                starts.append(datetime.fromisoformat(record.status["started_at"]).timestamp())
                ends.append(record.metrics[-1]["recorded_at"])
    return round(max(ends) - min(starts), 1)


def _training_seed(text: str) -> int:
    for line in text.splitlines():
        if line.startswith(TRAINING_SEED_LINE):
            return int(line[len(TRAINING_SEED_LINE):])
    raise ValueError(f"the space file needs a line starting {TRAINING_SEED_LINE!r}")


if __name__ == "__main__":
    main()

"""Engine overhead: the same N configurations trained by the engine (FIFO, no early stopping) and
by a bare loop of worker processes at the same concurrency, side by side in one run.

    python benchmarks/engine_overhead.py [--epochs 4] [--concurrency 2]

Prints the ratio of wall times (whole command, and the trials phase alone) and the seconds of
overhead per trial. Targets: <= 1.25 for ~10 s trials, <= 1.05 for >= 60 s trials.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import SCRATCH_CONFIGS, bare_loop, fixed_space, run_cli, trial_phase


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (4: about 10 s per trial here)")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    configs = [c | {"max_epochs": args.epochs, "threads": 1} for c in SCRATCH_CONFIGS]
    with tempfile.TemporaryDirectory() as tmp:
        space = fixed_space(
            Path(tmp) / "fixed.py",
            [{k: v for k, v in c.items() if k not in ("max_epochs", "threads")} for c in configs],
            {"model": "scratch_resnet", "image_size": 16, "trials": len(configs), "max_epochs": args.epochs,
             "grace_period_epochs": 1, "scheduler": "fifo", "sampler": "random", "concurrency": args.concurrency},
        )  # fmt: skip
        bare = bare_loop(configs, args.concurrency, image_size=16)
        engine, _ = run_cli("run", str(space), "--no-retrain", "--storage", tmp, "--name", "overhead")
        first, last = trial_phase(Path(tmp) / "overhead")
    trials = last - first
    n = len(configs)
    print(f"{n} trials x {args.epochs} epochs, concurrency {args.concurrency}")
    print(f"bare loop (process pool):          {bare:7.1f} s  ({bare * args.concurrency / n:.1f} s per trial)")
    print(f"engine, whole command:             {engine:7.1f} s  ratio {engine / bare:.2f}")
    print(f"engine, first trial to last result:{trials:7.1f} s  ratio {trials / bare:.2f}")
    print(f"overhead per trial (whole command): {(engine - bare) * args.concurrency / n:.2f} s")


if __name__ == "__main__":
    main()

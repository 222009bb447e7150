"""Engine overhead: the same N configurations trained by the engine (FIFO, no early stopping) and
by a bare loop of worker processes at the same concurrency, side by side in one run; then again
with 2N configurations, so the fixed cost (Ray's start, the workers' start, the end of the run)
separates from the marginal cost of one more trial.

    python benchmarks/engine_overhead.py [--epochs 4] [--concurrency 2] [--trials 8]

Prints, for N and 2N trials, the ratio of wall times (whole command, and the trials phase alone),
then the fixed overhead in seconds and the marginal overhead per trial. Targets: <= 1.25 for
~10 s trials, <= 1.05 for >= 60 s trials.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import SCRATCH_CONFIGS, bare_loop, fixed_space, run_cli, trial_phase


def measure(configs: list[dict], epochs: int, concurrency: int, tmp: str, name: str) -> tuple[float, float, float]:
    """(bare loop, engine command, engine trials phase) wall times in seconds for ``configs``."""
    space = fixed_space(
        Path(tmp) / f"{name}.py",
        [{k: v for k, v in c.items() if k not in ("max_epochs", "threads")} for c in configs],
        {"model": "scratch_resnet", "image_size": 16, "trials": len(configs), "max_epochs": epochs,
         "grace_period_epochs": 1, "scheduler": "fifo", "sampler": "random", "concurrency": concurrency},
    )  # fmt: skip
    bare = bare_loop(configs, concurrency, image_size=16)
    engine, _ = run_cli("run", str(space), "--no-retrain", "--storage", tmp, "--name", name)
    first, last = trial_phase(Path(tmp) / name)
    return bare, engine, last - first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (4: about 10 s per trial here)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--trials", type=int, default=len(SCRATCH_CONFIGS), help="N; the second measurement runs 2N")
    args = parser.parse_args()
    base = [SCRATCH_CONFIGS[k % len(SCRATCH_CONFIGS)] | {"max_epochs": args.epochs, "threads": 1} for k in range(args.trials)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, configs in ((len(base), base), (2 * len(base), base + base)):
            results[n] = measure(configs, args.epochs, args.concurrency, tmp, f"overhead{n}")
    print(f"{args.epochs} epochs per trial, concurrency {args.concurrency}")
    for n, (bare, engine, trials) in results.items():
        print(
            f"{n:3d} trials: bare loop {bare:6.1f} s ({bare * args.concurrency / n:.1f} s per trial) | "
            f"engine command {engine:6.1f} s, ratio {engine / bare:.2f} | "
            f"trials phase {trials:6.1f} s, ratio {trials / bare:.2f}"
        )
    (b1, e1, _), (b2, e2, _) = results[len(base)], results[2 * len(base)]
    marginal = ((e2 - e1) - (b2 - b1)) * args.concurrency / len(base)
    fixed = (e1 - b1) - marginal * len(base) / args.concurrency
    print(f"fixed overhead of a run (start, end): {fixed:5.1f} s")
    print(f"marginal overhead per extra trial:    {marginal:5.2f} s of a worker slot "
          f"({100 * marginal * len(base) / ((b2 - b1) * args.concurrency):.1f}% of its bare time)")  # fmt: skip


if __name__ == "__main__":
    main()

"""Search efficiency: ASHA + TPE against random search + FIFO at the same compute budget, several
seeds, side by side in one run: wall time to reach a target validation accuracy, best accuracy
reached, and epochs spent.

    python benchmarks/search_efficiency.py [--seeds 3] [--trials 10] [--target 0.985]

Random search + FIFO trains ``--trials`` trials for ``--max-epochs`` epochs each. ASHA stops most
trials after a few epochs, so at the same compute budget it gets more trials: ``--asha-trials``
(default: twice as many); the epochs each spent are printed, so the budgets can be compared.

Target: >= 3x sooner to the target accuracy, best accuracy within 0.3 points.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _common import run_cli


def _curve(run_dir: Path, started: float) -> list[tuple[float, float]]:
    """(seconds since the command started, val_acc) of every epoch, in time order."""
    points = []
    for path in run_dir.glob("trials/*/metrics.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            points.append((row["recorded_at"] - started, row["val_acc"]))
    return sorted(points)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=10, help="random + FIFO trials")
    parser.add_argument("--asha-trials", type=int, default=0, help="ASHA + TPE trials (default: 2 x --trials)")
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--target", type=float, default=0.985)
    args = parser.parse_args()
    methods = {"asha+tpe": ("tpe", "asha", args.asha_trials or 2 * args.trials), "random+fifo": ("random", "fifo", args.trials)}
    results: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for method, (sampler, scheduler, trials) in methods.items():
                name = f"{method.replace('+', '_')}-{seed}"
                started = time.time()
                wall, _ = run_cli(
                    "run", "spaces/scratch_cnn.py", "--no-retrain", "--trials", str(trials), "--max-epochs", str(args.max_epochs),
                    "--grace-period-epochs", "1", "--sampler", sampler, "--scheduler", scheduler,
                    "--seed", str(seed), "--storage", tmp, "--name", name,
                )  # fmt: skip
                curve = _curve(Path(tmp) / name, started)
                reached = next((t for t, acc in curve if acc >= args.target), float("inf"))
                results[method].append(
                    {"wall": wall, "to_target": reached, "best": max(a for _, a in curve), "epochs": len(curve)}
                )
                print(f"seed {seed} {method:12s} wall {wall:6.1f} s  to {args.target}: {reached:6.1f} s  "
                      f"best {results[method][-1]['best']:.4f}  epochs {len(curve)}")  # fmt: skip
    summary = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in results.items()}
    fast, slow = summary["asha+tpe"], summary["random+fifo"]
    print(f"\nmedians over {args.seeds} seeds ({methods['asha+tpe'][2]} ASHA+TPE trials, {args.trials} random+FIFO trials):")
    for method, values in summary.items():
        print(f"  {method:12s} to target {values['to_target']:6.1f} s  best {values['best']:.4f}  "
              f"epochs {values['epochs']:.0f}  wall {values['wall']:.1f} s")  # fmt: skip
    reached = {m: sum(r["to_target"] < float("inf") for r in rs) for m, rs in results.items()}
    print(f"reached {args.target}: asha+tpe in {reached['asha+tpe']} of {args.seeds} seeds, "
          f"random+fifo in {reached['random+fifo']} of {args.seeds}")  # fmt: skip
    both = [
        slow_run["to_target"] / fast_run["to_target"]
        for fast_run, slow_run in zip(results["asha+tpe"], results["random+fifo"])
        if max(fast_run["to_target"], slow_run["to_target"]) < float("inf")
    ]
    if both:
        print(f"time to target, random+fifo / asha+tpe, seeds where both reached it: {[round(r, 2) for r in both]}")
    print(f"time to target, medians, random+fifo / asha+tpe: {slow['to_target'] / fast['to_target']:.2f}x"
          " (inf: the random search's median seed never reached it)")  # fmt: skip
    print(f"best accuracy, asha+tpe - random+fifo: {100 * (fast['best'] - slow['best']):+.2f} points")

if __name__ == "__main__":
    main()

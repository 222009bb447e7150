"""Search efficiency: every sampler and scheduler of the registries on the same space at the same
compute budget, several seeds, side by side in one run: wall time to reach a target validation
accuracy, best accuracy reached, and epochs spent, as median [min, max] over the seeds.

    python benchmarks/search_efficiency.py [--seeds 5] [--trials 10] [--target 0.985] [--methods tpe+asha,random+fifo]
        [--one-ray]   (every search in one process on one Ray session: no Ray start-up per run)

FIFO and PBT train ``--trials`` trials for ``--max-epochs`` epochs each. ASHA, HyperBand and
median stopping stop most trials after a few epochs, so at the same compute budget they get twice
the trials; the epochs each spent are printed, so the budgets can be compared. The grid sampler
is left out: spaces/scratch_cnn.py has continuous parameters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _common import REPO, run_cli

from search.config.spaces import load_space, resolve_settings
from search.engine import run_search


def _flags(overrides: dict) -> list[str]:
    return [item for key, value in overrides.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def _curve(run_dir: Path, started: float) -> list[tuple[float, float]]:
    """(seconds since the command started, val_acc) of every epoch, in time order."""
    points = []
    for path in run_dir.glob("trials/*/metrics.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            points.append((row["recorded_at"] - started, row["val_acc"]))
    return sorted(points)


# Every registered strategy on the same space: samplers under ASHA, schedulers under TPE (PBT's
# population is drawn by TPE up front). (sampler, scheduler, trials as a multiple of --trials):
# schedulers that stop trials early get twice the trials of those that train every trial to
# --max-epochs (fifo, pbt); the epochs each spent are printed, so the budgets can be compared.
METHODS = {
    "tpe+asha": ("tpe", "asha", 2),
    "random+asha": ("random", "asha", 2),
    "nsga2+asha": ("nsga2", "asha", 2),
    "cmaes+asha": ("cmaes", "asha", 2),
    "gp+asha": ("gp", "asha", 2),
    "qmc+asha": ("qmc", "asha", 2),
    "tpe+hyperband": ("tpe", "hyperband", 2),
    "tpe+median": ("tpe", "median", 2),
    "tpe+fifo": ("tpe", "fifo", 1),
    "tpe+pbt": ("tpe", "pbt", 1),
    "random+fifo": ("random", "fifo", 1),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=10, help="trials of fifo and pbt (early stopping: 2x)")
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--target", type=float, default=0.985)
    parser.add_argument("--data-fraction", type=float, default=1.0)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated names of METHODS")
    parser.add_argument(
        "--one-ray", action="store_true", help="every search in this process, on one local Ray session (no start-up per run)"
    )
    args = parser.parse_args()
    space = load_space(REPO / "spaces" / "scratch_cnn.py")
    if args.one_ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    methods = {m: METHODS[m] for m in args.methods.split(",")}
    results: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            # Alternate the order (A B ... B A) so that drift on the shared machine hits every method alike.
            order = list(methods) if seed % 2 == 0 else list(reversed(methods))
            for method in order:
                sampler, scheduler, share = methods[method]
                trials = share * args.trials
                name = f"{method.replace('+', '_')}-{seed}"
                overrides = {
                    "trials": trials, "max_epochs": args.max_epochs, "grace_period_epochs": 1, "sampler": sampler,
                    "scheduler": scheduler, "data_fraction": args.data_fraction, "seed": seed, "storage": tmp, "name": name,
                }  # fmt: skip
                started = time.time()
                if args.one_ray:
                    run_search(space, resolve_settings(space, overrides), out=[].append)
                    wall = time.time() - started
                else:
                    wall, _ = run_cli("run", "spaces/scratch_cnn.py", "--no-retrain", *_flags(overrides))
                curve = _curve(Path(tmp) / name, started)
                reached = next((t for t, acc in curve if acc >= args.target), float("inf"))
                results[method].append(
                    {"wall": wall, "to_target": reached, "best": max(a for _, a in curve), "epochs": len(curve)}
                )
                print(f"seed {seed} {method:14s} trials {trials:3d} wall {wall:6.1f} s  to {args.target}: {reached:6.1f} s  "
                      f"best {results[method][-1]['best']:.4f}  epochs {len(curve)}", flush=True)  # fmt: skip
    print(f"\nover {args.seeds} seeds, data fraction {args.data_fraction}, <= {args.max_epochs} epochs per trial "
          f"(median [min, max]; to target: seconds until a trial first reached val_acc {args.target}, inf if never):")  # fmt: skip
    print(f"  {'method':14s} {'trials':>6s}  {'to target s':>24s}  {'best val_acc':>26s}  {'epochs':>8s}  reached")
    for method, runs in results.items():
        cells = []
        for key, form in (("to_target", "{:.1f}"), ("best", "{:.4f}"), ("epochs", "{:.0f}")):
            values = [r[key] for r in runs]
            cells.append(f"{form.format(statistics.median(values))} [{form.format(min(values))}, {form.format(max(values))}]")
        reached = sum(r["to_target"] < float("inf") for r in runs)
        print(f"  {method:14s} {methods[method][2] * args.trials:6d}  {cells[0]:>24s}  {cells[1]:>26s}  {cells[2]:>8s}  "
              f"{reached}/{len(runs)}")  # fmt: skip


if __name__ == "__main__":
    main()

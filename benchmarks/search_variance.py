"""How much of one search's result is luck: the whole default search, with retraining, under k seeds.

    python benchmarks/search_variance.py [--seeds 3] [--storage DIR] [--reuse] [-- extra run options]

Each seed runs ``python -m search run spaces/resnet.py --seed S`` (12 trials of the pretrained
backbone on digits, then the winner retrained with 3 seeds and tested once), one after another.
The seed changes the data split, the TPE sampler and every trial's initialisation. Prints each
seed's winner (validation accuracy, test accuracy over its 3 retrain seeds, the classic baseline
when the run has one) and the winners' test accuracy as mean ± std (n - 1) with min/median/max.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import run_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="searches to run, seeds 0..k-1 (default 3)")
    parser.add_argument("--space", default="spaces/resnet.py")
    parser.add_argument("--storage", default=None, help="keep the run directories here (default: a temporary one)")
    parser.add_argument(
        "--reuse", action="store_true",
        help="a seed whose run directory exists under --storage is not searched again: `retrain` reuses its "
        "models (and adds what this checkout's retrain adds, e.g. the baseline)",
    )  # fmt: skip
    parser.add_argument(
        "--retrain-seeds", type=int, default=None,
        help="with --reuse: models per winner that `retrain` tests (default: retrain's own, 3)",
    )  # fmt: skip
    parser.add_argument("extra", nargs="*", help="further `run` options, after --")
    args = parser.parse_args()
    if args.seeds < 3:
        parser.error(f"--seeds is {args.seeds}, but a mean ± std needs at least 3 searches")
    storage = Path(args.storage or tempfile.mkdtemp(prefix="search-variance-")).resolve()
    rows = []
    for seed in range(args.seeds):
        run_dir = storage / f"variance-seed{seed}"
        if args.reuse and (run_dir / "leaderboard.csv").is_file():  # its search finished
            run_cli("retrain", str(run_dir), *(["--seeds", str(args.retrain_seeds)] if args.retrain_seeds else []))
            seconds = float("nan")  # not searched now
        else:
            seconds, _ = run_cli(
                "run", args.space, "--seed", str(seed), "--storage", str(storage), "--name", run_dir.name, *args.extra
            )
        results = pd.read_csv(storage / f"variance-seed{seed}" / "test_results.csv", dtype={"trial_id": str})
        winner = results.iloc[0]
        row = {
            "seed": seed,
            "winner": winner["trial_id"],
            "val_acc": winner["val_acc"],
            "test_acc_mean": winner["test_acc_mean"],
            "test_acc_std": winner["test_acc_std"],
            "baseline_test_acc": winner.get("baseline_test_acc", float("nan")),
            "minutes": seconds / 60,
        }
        rows.append(row)
        print(
            f"seed {seed}: winner {row['winner']} val_acc {row['val_acc']:.4f}, test accuracy "
            f"{row['test_acc_mean']:.4f} ± {row['test_acc_std']:.4f} over its retrain seeds, baseline "
            f"{row['baseline_test_acc']:.4f}, {row['minutes']:.1f} min",
            flush=True,
        )
    tests = [r["test_acc_mean"] for r in rows]
    vals = [r["val_acc"] for r in rows]
    print(f"\n{args.space}, {args.seeds} searches (seeds 0..{args.seeds - 1}), run dirs in {storage}")
    print(
        f"winner's test accuracy: {statistics.mean(tests):.4f} ± {statistics.stdev(tests):.4f} (mean ± std over searches); "
        f"min {min(tests):.4f} / median {statistics.median(tests):.4f} / max {max(tests):.4f}"
    )
    print(f"winner's validation accuracy: {statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}")
    baselines = [r["baseline_test_acc"] for r in rows if r["baseline_test_acc"] == r["baseline_test_acc"]]
    if len(baselines) >= 2:
        print(f"baseline's test accuracy: {statistics.mean(baselines):.4f} ± {statistics.stdev(baselines):.4f}")
    timed = [r["minutes"] for r in rows if r["minutes"] == r["minutes"]]
    if timed:
        print(f"minutes per search, retrain included: {statistics.mean(timed):.1f} (on {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()

"""Sampler cost: seconds per suggestion of Optuna's TPE (as the engine configures it) on the
resnet space after 1000 finished trials, against a median trial time, in one run.

    python benchmarks/sampler_cost.py [--trials 1000] [--median-trial-s 20]

Target: under 1% of the median trial time.
"""

from __future__ import annotations

import argparse
import random
import time

import optuna
from _common import REPO


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--median-trial-s", type=float, default=20.0, help="median trial wall time to compare with")
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(REPO))
    from search.config.spaces import load_space

    space = load_space(REPO / "spaces" / "resnet.py").space
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, sampler in (
        ("TPE", optuna.samplers.TPESampler(seed=0, n_startup_trials=10, constant_liar=True)),
        ("random", optuna.samplers.RandomSampler(seed=0)),
    ):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        rng = random.Random(0)
        timings = []
        for number in range(args.trials):
            started = time.perf_counter()
            trial = study.ask()
            space(trial)
            timings.append(time.perf_counter() - started)
            study.tell(trial, rng.random())
        last = sorted(timings[-50:])[25]
        print(f"{name:7s} median seconds per suggestion at trial {args.trials}: {last * 1000:7.1f} ms "
              f"= {100 * last / args.median_trial_s:.3f}% of a {args.median_trial_s:.0f} s trial")  # fmt: skip


if __name__ == "__main__":
    main()

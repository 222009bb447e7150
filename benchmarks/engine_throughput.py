"""Engine throughput on many short trials: trials per second, and the share of slot-time that was
idle while trials were pending, for this checkout's engine, optionally another checkout's (the
base commit, ``--compare``), and Ray Tune used directly with the same trainable (the reference),
side by side in one run, in a balanced order (A B C C B A ...).

    python benchmarks/engine_throughput.py                      # 1,000 and 10,000 trials, 3 repetitions
    python benchmarks/engine_throughput.py --trials 200 1000 --repeats 1 --compare /work/wt/throughput-base

Each trial is ``trivial`` below: ``--epochs`` epochs (3) of ``--epoch-s`` seconds' sleep (0.05)
each, reported one by one, no checkpoint; ``--concurrency`` (8) at once, ASHA (grace 1 epoch,
reduction factor 2, as the engine's defaults), TPE and random. The engine runs as the CLI does
(``python -m search run SPACE --no-retrain``, a fresh Ray session each time); its trial phase is
read from the run directory (each trial's ``status.json``: when the driver saw it start and end),
so the report written after the search is not counted. Ray Tune used directly runs the same
trainable through ``tune.Tuner`` with the same scheduler and concurrency (TPE: Ray's
OptunaSearch with the engine's TPE settings; random: Ray's own random search), timed by a
callback at the same two moments.

Printed per size, sampler and engine: trials/s over the trial phase (first start to last end),
the idle share (1 - busy slot-seconds / (concurrency x seconds) between the first and the last
trial start, while some trial was still pending), min/median/max over the repetitions, and the
load average beside them; then the per-trial cost at the largest size over that at the smallest.
For a run of 2,000 trials or more, its trials/s over each successive 1,000 trial ends as well.
Targets (issue 20): >= 20 trials/s, idle share < 10%, per-trial cost at 10,000 within 1.2x of 1,000.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def trivial(config, data, report, checkpoints=None):
    """The benchmark's trainable: ``max_epochs`` epochs of ``epoch_s`` seconds' sleep; val_acc
    climbs to ``x`` at the last epoch (so ASHA has something to rank)."""
    x, total = float(config["x"]), int(config["max_epochs"])
    for epoch in range(1, total + 1):
        time.sleep(float(config["epoch_s"]))
        report({"epoch": epoch, "val_acc": x * epoch / total, "val_loss": 1.0 - x * epoch / total})


def space_file(path: Path, trials: int, sampler: str, args) -> Path:
    cpus = min(1.0, (os.cpu_count() or 1) / args.concurrency)
    path.write_text(
        f'TRAINABLE = "engine_throughput:trivial"\nTRIALS = {trials}\nMAX_EPOCHS = {args.epochs}\n'
        f'SAMPLER = "{sampler}"\nSCHEDULER = "asha"\nCONCURRENCY = {args.concurrency}\nCPUS_PER_TRIAL = {cpus}\n'
        f"PROGRESS_EVERY_S = 60.0\n\n\ndef space(trial):\n"
        f'    trial.suggest_float("x", 0.0, 1.0)\n    return {{"epoch_s": {args.epoch_s}}}\n'
    )
    return path


def run_engine(checkout: Path, trials: int, sampler: str, args, tmp: Path, name: str) -> list[tuple[float, float]]:
    """Run the CLI of ``checkout``; return each trial's (start, end) as the driver saw them."""
    space = space_file(tmp / f"{name}.py", trials, sampler, args)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(checkout), str(HERE)])}
    command = [sys.executable, "-m", "search", "run", str(space), "--no-retrain", "--storage", str(tmp), "--name", name]
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{checkout}: {done.stdout[-3000:]}{done.stderr[-3000:]}")
    intervals = []
    for trial in (tmp / name / "trials").iterdir():
        status = json.loads((trial / "status.json").read_text())
        start, end = (dt.datetime.fromisoformat(status[k]).timestamp() for k in ("started_at", "updated_at"))
        intervals.append((start, end))
    return intervals


def run_ray_tune(trials: int, sampler: str, args, tmp: Path, name: str) -> list[tuple[float, float]]:
    """Ray Tune used directly, in its own process (a fresh Ray session, as the CLI gets)."""
    out = tmp / f"{name}.json"
    command = [sys.executable, __file__, "--_peer", str(out), "--_peer-trials", str(trials), "--_peer-sampler", sampler,
               "--epochs", str(args.epochs), "--epoch-s", str(args.epoch_s), "--concurrency", str(args.concurrency)]  # fmt: skip
    done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ray tune: {done.stdout[-3000:]}{done.stderr[-3000:]}")
    return [tuple(pair) for pair in json.loads(out.read_text())]


def _peer_main(out: Path, trials: int, sampler: str, args) -> None:
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    times: dict[str, list[float]] = {}

    class Times(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            times[trial.trial_id] = [time.time(), float("nan")]

        def on_trial_complete(self, iteration, trials, trial, **info):
            times[trial.trial_id][1] = time.time()

    def trainable(config):
        trivial(config, None, tune.report)

    space = {"epoch_s": args.epoch_s, "max_epochs": args.epochs}
    if sampler == "tpe":
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        tpe = optuna.samplers.TPESampler(seed=0, n_startup_trials=min(10, max(2, trials // 4)), constant_liar=True)
        search = ConcurrencyLimiter(OptunaSearch({"x": optuna.distributions.FloatDistribution(0.0, 1.0)}, sampler=tpe,
                                                 metric="val_acc", mode="max"), max_concurrent=args.concurrency)  # fmt: skip
        concurrency = None
    else:
        search, space, concurrency = None, space | {"x": tune.uniform(0.0, 1.0)}, args.concurrency
    cpus = min(1.0, (os.cpu_count() or 1) / args.concurrency)
    # A new local session, as the CLI starts (never another process's running cluster).
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus}),
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=args.epochs,
                                    grace_period=1, reduction_factor=2),  # fmt: skip
            num_samples=trials,
            max_concurrent_trials=concurrency,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(out.parent / "ray-tune"), callbacks=[Times()], verbose=0),
    ).fit()
    ray.shutdown()
    out.write_text(json.dumps(list(times.values())))


def measure(intervals: list[tuple[float, float]], concurrency: int) -> tuple[float, float]:
    """(trials per second over the trial phase, idle share of the slots while trials were pending)."""
    first = min(start for start, _ in intervals)
    last_start = max(start for start, _ in intervals)
    end = max(end for _, end in intervals)
    busy = sum(max(0.0, min(b, last_start) - max(a, first)) for a, b in intervals)
    idle = 1 - busy / (concurrency * (last_start - first)) if last_start > first else 0.0
    return len(intervals) / (end - first), idle


def by_thousand(intervals: list[tuple[float, float]]) -> list[float]:
    """Trials/s over each successive 1,000 trial ends: flat if the engine's cost per trial does not
    grow with the trials it has run."""
    ends = sorted(end for _, end in intervals)
    return [1000 / (ends[i + 1000] - ends[i]) for i in range(0, len(ends) - 1000, 1000) if ends[i + 1000] > ends[i]]


def spread(values: list[float], digits: str) -> str:
    return "/".join(format(v, digits) for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 10000], help="sizes (default 1000 10000)")
    parser.add_argument("--samplers", nargs="+", default=["tpe", "random"], choices=["tpe", "random"])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (ASHA's max_t)")
    parser.add_argument("--epoch-s", type=float, default=0.05, help="seconds of sleep per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each engine, balanced order")
    parser.add_argument("--compare", type=Path, default=None, help="another checkout (e.g. the base commit) to run too")
    parser.add_argument("--no-ray-tune", action="store_true", help="skip Ray Tune used directly")
    parser.add_argument("--_peer", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_peer-trials", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_peer-sampler", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._peer:
        _peer_main(args._peer, args._peer_trials, args._peer_sampler, args)
        return
    engines = ["this checkout"] + (["compared"] if args.compare else []) + ([] if args.no_ray_tune else ["ray tune"])
    results: dict[tuple, list[tuple[float, float]]] = {}
    loads = []
    with tempfile.TemporaryDirectory(prefix="engine-throughput-") as name:
        tmp = Path(name)
        for trials in args.trials:
            for sampler in args.samplers:
                for repeat in range(args.repeats):
                    order = engines if repeat % 2 == 0 else engines[::-1]
                    for engine in order:
                        run = f"{engine.replace(' ', '-')}-{trials}-{sampler}-{repeat}"
                        loads.append(os.getloadavg()[0])
                        if engine == "ray tune":
                            intervals = run_ray_tune(trials, sampler, args, tmp, run)
                        else:
                            intervals = run_engine(REPO if engine == "this checkout" else args.compare.resolve(),
                                                   trials, sampler, args, tmp, run)  # fmt: skip
                        figures = measure(intervals, args.concurrency)
                        results.setdefault((trials, sampler, engine), []).append(figures)
                        print(f"  {run}: {figures[0]:6.2f} trials/s, idle {100 * figures[1]:5.1f}% "
                              f"(load {loads[-1]:.1f})", flush=True)  # fmt: skip
                        if trials >= 2000:
                            print("    trials/s by 1,000 ends:", " ".join(f"{r:.1f}" for r in by_thousand(intervals)), flush=True)
    print(f"\n{args.concurrency} concurrent trials of {args.epochs} x {args.epoch_s * 1000:.0f} ms, ASHA; "
          f"{args.repeats} repetition(s), min/median/max; load average (1 min) before the runs "
          f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    for (trials, sampler, engine), figures in results.items():
        rates, idles = [f[0] for f in figures], [100 * f[1] for f in figures]
        print(f"{trials:6d} trials {sampler:6s} {engine:14s} trials/s {spread(rates, '.2f'):>20s}   "
              f"idle while pending % {spread(idles, '.1f'):>16s}")  # fmt: skip
    small, large = min(args.trials), max(args.trials)
    if large > small:
        for sampler in args.samplers:
            for engine in engines:
                ratio = statistics.median(f[0] for f in results[(small, sampler, engine)]) / statistics.median(
                    f[0] for f in results[(large, sampler, engine)]
                )
                print(f"per-trial cost at {large} / at {small} trials, {sampler:6s} {engine:14s}: {ratio:.2f}")
    for trials in args.trials:
        for sampler in args.samplers:
            ours = statistics.median(f[0] for f in results[(trials, sampler, "this checkout")])
            for other in engines[1:]:
                theirs = statistics.median(f[0] for f in results[(trials, sampler, other)])
                print(f"{trials:6d} trials {sampler:6s} this checkout / {other}: {ours / theirs:.2f}x trials/s")


if __name__ == "__main__":
    main()

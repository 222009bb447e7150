"""The accuracy bounds of the end-to-end tests, measured: each test's search (its space file and
settings, through the engine in one local Ray session) run again at seeds 1-5, the value the test
asserts printed per seed, and the bound chosen from them.

    python benchmarks/test_bounds.py                      # every case, seeds 1-5
    python benchmarks/test_bounds.py --cases scratch_run,features --seeds 1,2,3,4,5

The bound is the lowest value over the seeds less a margin (MARGIN, rounded down to 0.05), and at
least twice chance: it fails a trainer that no longer learns, and it does not fail for a seed.
A case whose lowest value less the margin is below twice chance is marked WEAK: its test needs a
larger budget before any bound can tell learning from chance.

The tests of two epochs on a fifth of digits (about 14 optimizer steps) cannot reach a validation
accuracy that tells learning from chance: BatchNorm's running statistics, which validation uses,
have barely moved. Their training loss has: those cases also print the lowest last-epoch
train_loss of the run's trials, and its bound is the highest value over the seeds plus MARGIN
(rounded up to 0.05), WEAK unless MARGIN below a uniform guess's loss, ln(1 / chance). A trainer
that no longer steps its optimizer stays at that loss. Each case names the test that uses its
bound. Figures under load are as good as idle ones here: these are accuracies and losses, not times.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import REPO

MARGIN = 0.1  # accuracy points below the lowest seed
SEEDS = (1, 2, 3, 4, 5)


def _search(space_file, storage: Path, overrides: dict):
    from search.config.spaces import load_space, resolve_settings
    from search.engine import run_search

    space = load_space(space_file)
    settings = resolve_settings(space, {"storage": str(storage), "name": "run"} | overrides)
    return run_search(space, settings, out=lambda line: None)


def _best(run_dir: Path, metric: str = "val_acc") -> float:
    import pandas as pd

    return float(pd.read_csv(run_dir / "leaderboard.csv")[metric].max())


def _learned(run_dir: Path, metric: str = "val_acc") -> dict[str, float]:
    """The best ``metric`` of the run, and the lowest last-epoch train_loss of its trials."""
    from tests.fixed_spaces import lowest_train_loss

    return {metric: _best(run_dir, metric), "train_loss": lowest_train_loss(run_dir)}


def _last_epoch(run_dir: Path) -> dict[str, float]:
    """The one trial's last val_acc and train_loss."""
    from analysis.records import read_trials

    (record,) = read_trials(run_dir)
    return {"val_acc": float(record.metrics[-1]["val_acc"]), "train_loss": float(record.metrics[-1]["train_loss"])}


def _spaces(name: str) -> Path:
    return REPO / "spaces" / name


def _start(name: str) -> dict:
    """The first point the test gives the search of shipped space ``name`` (tests/fixed_spaces.py)."""
    from tests.fixed_spaces import start_with

    return {"start_with": start_with(name)}


def scratch_run(seed, tmp):
    """tests/test_end_to_end.py::test_one_leaderboard_row_per_trial_and_asha_stops_some[scratch_run]"""
    return _best(_search(_spaces("scratch_cnn.py"), tmp, dict(seed=seed, trials=6, max_epochs=3, grace_period_epochs=1,
                                                              reduction_factor=3, data_fraction=0.6)))  # fmt: skip


def resnet_run(seed, tmp):
    """tests/test_end_to_end.py::test_one_leaderboard_row_per_trial_and_asha_stops_some[resnet_run]"""
    return _learned(_search(_spaces("resnet.py"), tmp, dict(seed=seed, model="tf_efficientnet_lite0", weights="offline", trials=4,
                                                         max_epochs=2, grace_period_epochs=1, reduction_factor=3, data_fraction=0.3)
                                                | _start("resnet.py")))  # fmt: skip


def features(seed, tmp):
    """tests/test_workflows_features.py (val_acc of the winner; test_acc of the retrained top 2, 1 seed)"""
    from analysis.retrain import retrain

    run_dir = _search(_spaces("features.py"), tmp, dict(seed=seed, model="tf_efficientnet_lite0", weights="offline",
                                                        trials=3, data_fraction=0.25))  # fmt: skip
    table = retrain(run_dir, top_k=2, seeds=1, tta=True, out=lambda line: None)
    return {"val_acc": _best(run_dir), "test_acc": float(table["test_acc_mean"].iloc[0])}


def regularization(seed, tmp):
    """tests/test_workflows_training.py::test_regularization_searches_augmentation_schedules_and_epochs"""
    return _learned(_search(_spaces("regularization.py"), tmp, dict(seed=seed, trials=2, data_fraction=0.2, scheduler="fifo")
                         | _start("regularization.py")))


def transfer(seed, tmp):
    """tests/test_workflows_training.py::test_transfer_runs_offline_with_two_phases"""
    return _learned(_search(_spaces("transfer.py"), tmp, dict(seed=seed, trials=2, data_fraction=0.2, max_epochs=2, image_size=32)
                         | _start("transfer.py")))


def imbalanced(seed, tmp):
    """tests/test_workflows_training.py::test_imbalanced_ranks_by_balanced_accuracy_and_searches_class_weights
    (val_balanced_acc; chance 0.25)"""
    import numpy as np

    from tests.conftest import write_png_folder
    from trainables.data import load_dataset

    digits = load_dataset("digits", 16)
    keep = np.concatenate([np.flatnonzero(digits.labels == c)[:n] for c, n in enumerate((120, 60, 20, 10))])
    folder = write_png_folder(tmp / "imbalanced", digits.images[keep], digits.labels[keep], [f"digit{c}" for c in range(10)])
    run_dir = _search(_spaces("imbalanced.py"), tmp, dict(seed=seed, trials=2, dataset=str(folder), max_epochs=2,
                                                          grace_period_epochs=1, data_cache=str(tmp / "cache"))
                                                          | _start("imbalanced.py"))  # fmt: skip
    return _learned(run_dir, "val_balanced_acc")


def resolution(seed, tmp):
    """tests/test_workflows_training.py::test_resolution_trains_retrains_and_predicts_at_the_trial_size"""
    return _learned(_search(_spaces("resolution.py"), tmp, dict(seed=seed, trials=2, data_fraction=0.2, max_epochs=2, grace_period_epochs=1)
                         | _start("resolution.py")))


def api_repeated(seed, tmp):
    """tests/test_api.py::test_concurrency_1_and_the_same_seed_give_the_same_leaderboard"""
    return _learned(_search(_spaces("scratch_cnn.py"), tmp, dict(seed=seed, trials=4, max_epochs=2, grace_period_epochs=1,
                                                              data_fraction=0.3, concurrency=1) | _start("scratch_cnn.py")))  # fmt: skip


def strategies(seed, tmp):
    """tests/test_strategies_end_to_end.py::test_a_sampler_and_an_early_stopping_scheduler (both pairs)"""
    tiny = dict(seed=seed, data_fraction=0.2, concurrency=2, trials=4, max_epochs=2, grace_period_epochs=1) | _start("scratch_cnn.py")
    return {
        f"{sampler}+{scheduler}": _learned(_search(_spaces("scratch_cnn.py"), tmp / sampler, tiny | dict(sampler=sampler, scheduler=scheduler)))
        for sampler, scheduler in (("cmaes", "hyperband"), ("gp", "median"))
    }


def two_workers(seed, tmp):
    """tests/test_gpus.py::test_a_two_worker_trial_trains_data_parallel_with_gloo_and_records_like_any_trial"""
    return _last_epoch(_search(_spaces("scratch_cnn.py"), tmp, dict(seed=seed, trials=1, max_epochs=2, grace_period_epochs=1,
                                                                      workers_per_trial=2, data_fraction=0.35, sampler="random")
                                                      | _start("scratch_cnn.py")))  # fmt: skip


def _direct(space_file: Path, seed: int, overrides: dict | None = None, loading: str = "memory") -> list[list[float]]:
    """Each configuration of a fixed space trained as the engine's trial would be (the run's
    resolved settings, its split, ``trial_defaults`` and the space's constants), in this process:
    val_acc per epoch, per configuration. A multi-worker trial computes the same averaged gradients
    in one process here (BatchNorm statistics per worker aside)."""
    import optuna

    from search.config.spaces import load_space, resolve_settings, trial_defaults
    from trainables import get_trainable
    from trainables.data import load_dataset
    from trainables.split import split_indices, trial_data

    space = load_space(space_file)
    settings = resolve_settings(space, (overrides or {}) | {"seed": seed})
    images = load_dataset(settings.dataset, settings.image_size, cache=settings.data_cache or None,
                          cache_arrays=loading == "stream")  # fmt: skip
    split = split_indices(images.labels, settings.val_fraction, settings.test_fraction, seed, data_fraction=settings.data_fraction)
    data = trial_data(images, split, loading=loading)
    study = optuna.create_study()
    curves = []
    for _ in range(settings.trials):
        config = trial_defaults(settings, threads=1) | space.space(study.ask())
        reports: list[dict] = []
        get_trainable(settings.trainable)(config, data, reports.append)
        curves.append([r["val_acc"] for r in reports])
    return curves


def ctrl_c(seed, tmp):
    """tests/test_interruptions.py::test_ctrl_c_writes_leaderboard_and_report_then_resume_finishes_without_retraining_ended_trials
    (the best final val_acc of its six configurations, FIFO)"""
    from tests.fixed_spaces import CTRL_C, write_space

    return max(curve[-1] for curve in _direct(write_space(tmp / "six.py", **CTRL_C), seed))


def two_workers_killed(seed, tmp):
    """tests/test_interruptions.py::test_a_two_worker_trial_resumes_from_its_checkpoint_after_kill_9_and_mlflow_carries_on
    (its final val_acc, not interrupted, in one process)"""
    from tests.fixed_spaces import TWO_WORKERS_KILLED, write_space

    ((*_, last),) = _direct(write_space(tmp / "one.py", **TWO_WORKERS_KILLED), seed)
    return last


def asha_two_workers(seed, tmp):
    """tests/test_multi_worker_trials.py::test_asha_stops_a_two_worker_trial_and_one_out_of_memory_ends_infeasible
    (its strong trial's val_acc after epochs 1 and 2, alone, in one process; at epoch 1 ASHA
    compares it with the weak trial (lr 1e-7), whose epoch-1 val_acc is printed too: its maximum
    over the seeds must stay below the strong trial's minimum)"""
    from tests.fixed_spaces import write_space

    config = {"fault": "none", "lr": 3e-3, "optimizer": "adam", "conv_blocks": 2, "base_width": 16, "batch_size": 16}
    settings = {"trainable": "tests.faulty:train", "model": "scratch_resnet", "image_size": 16, "trials": 1,
                "max_epochs": 2, "grace_period_epochs": 1, "data_fraction": 0.6}  # fmt: skip
    ((first, last),) = _direct(write_space(tmp / "strong.py", [config], settings), seed)
    ((weak, *_),) = _direct(write_space(tmp / "weak.py", [config | {"lr": 1e-7}], settings | {"max_epochs": 1}), seed)
    return {"epoch_1": first, "epoch_2": last, "weak_epoch_1": weak}


def streamed_quasi_random(seed, tmp):
    """tests/test_data_end_to_end.py::test_auto_streams_above_its_threshold_in_quasi_random_order_above_the_memory_one
    (its final val_acc, streamed from the cache in quasi-random order, in one process)"""
    import numpy as np

    from tests.conftest import write_png_folder
    from tests.fixed_spaces import write_space
    from trainables.data import load_dataset
    from trainables.streaming import QUASI_RANDOM_ENV

    digits = load_dataset("digits", 8)
    rng = np.random.default_rng(0)
    copies = [np.clip(digits.images.astype(np.int16) + rng.integers(-12, 13, digits.images.shape), 0, 255) for _ in range(5)]
    folder = write_png_folder(tmp / "data", np.concatenate(copies).astype(np.uint8)[:9000], np.tile(digits.labels, 5)[:9000],
                              [str(k) for k in range(10)])  # fmt: skip
    config = {"conv_blocks": 2, "base_width": 16, "lr": 3e-3, "optimizer": "adam", "batch_size": 128}
    settings = {"model": "scratch_resnet", "weights": "none", "image_size": 8, "trials": 1, "max_epochs": 2, "grace_period_epochs": 2}
    os.environ[QUASI_RANDOM_ENV] = "0"
    try:
        ((*_, last),) = _direct(write_space(tmp / "probe.py", [config], settings), seed,
                                {"dataset": str(folder), "data_cache": str(tmp / "cache")}, loading="stream")  # fmt: skip
    finally:
        os.environ.pop(QUASI_RANDOM_ENV)
    return last


# name: (function, chance)
CASES = {
    f.__name__: (f, chance)
    for f, chance in [
        (scratch_run, 0.1), (resnet_run, 0.1), (features, 0.1), (regularization, 0.1), (transfer, 0.1),
        (imbalanced, 0.25), (resolution, 0.1), (api_repeated, 0.1), (strategies, 0.1), (two_workers, 0.1),
        (ctrl_c, 0.1), (two_workers_killed, 0.1), (asha_two_workers, 0.1), (streamed_quasi_random, 0.1),
    ]
}  # fmt: skip


DIRECT = {"ctrl_c", "two_workers_killed", "asha_two_workers", "streamed_quasi_random"}  # no Ray: in this process


def loss_bound(values: list[float], chance: float) -> tuple[float, bool]:
    """(the bound, whether it is WEAK) for a training loss: max plus MARGIN, rounded up to 0.05;
    WEAK unless it is at least MARGIN below the loss of a uniform guess, ln(1 / chance)."""
    above = math.ceil((max(values) + MARGIN) * 20 - 1e-9) / 20
    return above, above > math.log(1 / chance) - MARGIN


def bound(values: list[float], chance: float) -> tuple[float, bool]:
    """(the bound, whether it is WEAK): min less MARGIN, rounded down to 0.05; at least 2x chance."""
    below = math.floor((min(values) - MARGIN) * 20 + 1e-9) / 20
    return max(below, 2 * chance), below < 2 * chance


def _flat(value) -> dict[str, float]:
    """A case's value(s) as {name: value}; nested dicts join their keys with '.'."""
    if not isinstance(value, dict):
        return {"": value}
    return {f"{k}.{inner}".strip("."): v for k, item in value.items() for inner, v in _flat(item).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    args = parser.parse_args()
    names, seeds = args.cases.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        sys.exit(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("IMAGE_SEARCH_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    from search.ray_session import set_ray_environment, start_local

    set_ray_environment()

    if any(name not in DIRECT for name in names):  # the engine's cases: one session, as tests/conftest.py's
        start_local(num_cpus=2, logging_level="warning", log_to_driver=False)
    print(
        f"seeds {seeds}; accuracy bound = min - {MARGIN} (rounded down to 0.05), at least 2x chance; train_loss bound = "
        f"max + {MARGIN} (rounded up to 0.05), at most a uniform guess's loss less {MARGIN}; load average {os.getloadavg()}"
    )
    for name in names:
        function, chance = CASES[name]
        per_seed: dict[str, list[float]] = {}
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                value = function(seed, Path(tmp))
            for key, v in _flat(value).items():
                per_seed.setdefault(key, []).append(v)
                print(f"  {name}{'.' + key if key else ''} seed {seed}: {v:.4f}", flush=True)
        for key, values in per_seed.items():
            loss = key.endswith("train_loss")
            chosen, weak = (loss_bound if loss else bound)(values, chance)
            reference = f"uniform guess's loss {math.log(1 / chance):.4f}" if loss else f"chance {chance}"
            print(
                f"{name}{'.' + key if key else ''}: min {min(values):.4f} median {statistics.median(values):.4f} "
                f"max {max(values):.4f} ({reference}) -> bound {'<' if loss else '>'} {chosen:.2f}{'  WEAK' if weak else ''}"
                f"  [{function.__doc__.split()[0]}]",
                flush=True,
            )
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()

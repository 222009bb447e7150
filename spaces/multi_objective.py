"""Accuracy against model size: the Pareto front of validation accuracy and parameter count for a
from-scratch CNN, from about 1,500 to 5 million parameters.

    python -m search run spaces/multi_objective.py
    python -m search run spaces/multi_objective.py --sampler nsga2 --trials 32
    python -m search run spaces/multi_objective.py --objectives latency_ms

The searcher (Optuna's multi-objective TPE; or NSGA-II with ``--sampler nsga2``) looks for the
trials no other trial beats in both accuracy and size. The leaderboard marks them (``pareto``,
``pareto_rank``) and prints them at the end; ``report.md`` plots them (``plots/pareto.png``). The
ranking, ASHA's early stopping and the retrained winner still go by val_acc alone: ASHA stops a
small model that learns slowly even if it would have reached the front.

Why ``params`` and not ``latency_ms`` by default: every trial also reports its measured batch-1
inference latency (median of 20 forward passes on its device), but on a laptop running several
trials at once that number moves with whatever else runs, so the front it gives is noisy. On a
machine with one trial per GPU, or with ``--concurrency 1``, ``--objectives latency_ms`` (or
``params,latency_ms``) trades accuracy against speed instead.
"""

MODEL = "scratch_resnet"
WEIGHTS = "none"
DATASET = "digits"  # offline; or cifar10, cifar100, an ImageFolder directory
IMAGE_SIZE = 16  # pixels; digits are 8x8 at the source
METRIC = "val_acc"
OBJECTIVES = "params"  # or "latency_ms", or "params,latency_ms"
SAMPLER = "tpe"  # or "nsga2"
TRIALS = 16
MAX_EPOCHS = 6
GRACE_PERIOD_EPOCHS = 2
REDUCTION_FACTOR = 2
CPUS_PER_TRIAL = 1
GPUS_PER_TRIAL = 0


def space(trial):
    # Size is set by depth and width: each block after the first halves the resolution and
    # doubles the width (capped at 8x base_width), so parameters grow about 4x per block.
    trial.suggest_int("conv_blocks", 1, 4)
    trial.suggest_categorical("base_width", [8, 16, 32, 64])
    trial.suggest_float("dropout", 0.0, 0.3)
    trial.suggest_float("lr", 3e-4, 3e-2, log=True)
    trial.suggest_categorical("batch_size", [32, 64])
    return {"optimizer": "adam", "lr_schedule": "cosine"}

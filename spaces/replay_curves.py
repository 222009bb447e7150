"""The learning-curve table (benchmarks/tables/scratch_digits.npz, built by
benchmarks/build_curve_table.py from spaces/scratch_cnn_grid.py), replayed: 576 scratch-CNN
configurations x 12 epochs of real training on 8 px digits, looked up instead of trained. Every
epoch is reported with its checkpoint, so ASHA, HyperBand and median stopping work on it.

    python -m search run spaces/replay_curves.py --no-retrain
"""

TRAINABLE = "trainables.replay:replay"
DATASET = "digits"  # not read by the replay
IMAGE_SIZE = 8
METRIC = "val_acc"
TRIALS = 100
MAX_EPOCHS = 12  # the table's epochs (a cosine schedule over 12)
GRACE_PERIOD_EPOCHS = 1
CPUS_PER_TRIAL = 1

_TIME_SCALE = 0.0  # each epoch sleeps its recorded time (CPU seconds, under load) x this; e.g. 0.1


def space(trial):
    trial.suggest_categorical("conv_blocks", [1, 2])
    trial.suggest_categorical("base_width", [4, 8, 16])
    trial.suggest_categorical("lr", [1e-3, 3e-3, 1e-2, 3e-2])
    trial.suggest_categorical("batch_size", [64, 256])
    trial.suggest_categorical("optimizer", ["sgd", "adam"])
    trial.suggest_categorical("weight_decay", [0.0, 1e-3])
    trial.suggest_categorical("dropout", [0.0, 0.2, 0.4])
    return {"table": "benchmarks/tables/scratch_digits.npz", "time_scale": _TIME_SCALE}

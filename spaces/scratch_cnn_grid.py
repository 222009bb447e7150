"""A discrete version of scratch_cnn.py, the grid of the learning-curve table
(benchmarks/build_curve_table.py): every combination of conv blocks, width, learning rate, batch
size, optimizer, weight decay and dropout (2 x 3 x 4 x 2 x 2 x 2 x 3 = 576 trials), each trained
12 epochs on 8 px digits (half of the set: 539 train / 180 validation images) with a cosine
schedule, every epoch recorded. Sized to build in about an hour on a shared 2-core machine.

    python benchmarks/build_curve_table.py          # the table, through this file
    python -m search run spaces/scratch_cnn_grid.py --trials 12   # the first 12 points of the grid
"""

MODEL = "scratch_resnet"
WEIGHTS = "none"
DATASET = "digits"
DATA_FRACTION = 0.5  # half the images: a table that builds in about an hour on two cores
IMAGE_SIZE = 8  # pixels: digits' own size, so nothing is resized
METRIC = "val_acc"
SAMPLER = "grid"  # every combination once, in an order seeded by SEED
SCHEDULER = "fifo"  # a learning-curve table needs every epoch of every point
TRIALS = 576  # the grid's size
MAX_EPOCHS = 12
CPUS_PER_TRIAL = 1

# The seed each trial trains with (initialisation, shuffling). The data split follows the run's
# SEED, so a second pass of the builder with another value here measures training noise alone.
_TRAINING_SEED = 0


def space(trial):
    trial.suggest_categorical("conv_blocks", [1, 2])
    trial.suggest_categorical("base_width", [4, 8, 16])
    trial.suggest_categorical("lr", [1e-3, 3e-3, 1e-2, 3e-2])
    trial.suggest_categorical("batch_size", [64, 256])
    trial.suggest_categorical("optimizer", ["sgd", "adam"])  # sgd with momentum 0.9
    trial.suggest_categorical("weight_decay", [0.0, 1e-3])
    trial.suggest_categorical("dropout", [0.0, 0.2, 0.4])
    return {"lr_schedule": "cosine", "seed": _TRAINING_SEED}

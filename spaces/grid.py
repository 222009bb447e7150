"""A small discrete space for the grid sampler: every combination of depth, width and learning rate
(2 x 2 x 3 = 12 trials), each trained with Adam and a cosine schedule.

    python -m search run spaces/grid.py
"""

MODEL = "scratch_resnet"
DATASET = "digits"
IMAGE_SIZE = 16
SAMPLER = "grid"  # every combination once, in a seeded order
SCHEDULER = "fifo"  # a grid compares every point at the same budget
TRIALS = 12  # the grid's size
MAX_EPOCHS = 4


def space(trial):
    trial.suggest_int("conv_blocks", 1, 2)
    trial.suggest_categorical("base_width", [16, 32])
    trial.suggest_categorical("lr", [1e-3, 3e-3, 1e-2])
    return {"optimizer": "adam", "lr_schedule": "cosine"}

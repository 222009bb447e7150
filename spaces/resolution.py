"""Input resolution: how many pixels does the from-scratch CNN need, traded against its width,
depth and learning rate? Smaller inputs train faster; the leaderboard shows both.

    python -m search run spaces/resolution.py

The run loads its data once at IMAGE_SIZE, the largest resolution searched (dry_run rejects a
larger one); each trial resizes its train and validation images once, on the device (bilinear,
antialiased), and the retrained model and ``python -m search predict`` resize their inputs the same
way. Not a fidelity for early stopping: ASHA still decides on epochs.
"""

MODEL = "scratch_resnet"
WEIGHTS = "none"
DATASET = "digits"  # offline; or cifar10, cifar100, an ImageFolder directory
IMAGE_SIZE = 32  # pixels: the largest resolution searched
METRIC = "val_acc"
TRIALS = 10
MAX_EPOCHS = 5
GRACE_PERIOD_EPOCHS = 2
REDUCTION_FACTOR = 2
CPUS_PER_TRIAL = 1
GPUS_PER_TRIAL = 0


def space(trial):
    trial.suggest_categorical("image_size", [16, 24, 32])  # pixels, <= IMAGE_SIZE
    trial.suggest_int("conv_blocks", 2, 4)
    trial.suggest_categorical("base_width", [16, 32])
    trial.suggest_float("lr", 3e-4, 3e-2, log=True)
    trial.suggest_categorical("batch_size", [32, 64])
    return {"optimizer": "adam", "lr_schedule": "cosine"}

"""Train a ResNet-style CNN from scratch: how many conv blocks, how wide, how much dropout, and
which optimizer, batch size and learning rate.

    python -m search run spaces/scratch_cnn.py
"""

MODEL = "scratch_resnet"
WEIGHTS = "none"
DATASET = "digits"  # offline; or cifar10, cifar100, an ImageFolder directory
IMAGE_SIZE = 16  # pixels; digits are 8x8 at the source
METRIC = "val_acc"
TRIALS = 16
MAX_EPOCHS = 8
GRACE_PERIOD_EPOCHS = 2
REDUCTION_FACTOR = 2
CPUS_PER_TRIAL = 1
GPUS_PER_TRIAL = 0


def space(trial):
    # Residual blocks; each after the first halves the resolution and doubles the width.
    trial.suggest_int("conv_blocks", 1, 5)
    trial.suggest_categorical("base_width", [16, 32, 64])
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_categorical("batch_size", [32, 64, 128])
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam", "rmsprop"])
    if optimizer in ("sgd", "rmsprop"):
        trial.suggest_float("momentum", 0.0, 0.95)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    return {"lr_schedule": "cosine"}

"""Regularise the from-scratch CNN: which mix of dropout, training-batch augmentation (flip,
rotation, random resized crop, colour jitter), optimizer, learning-rate schedule and epoch count
gives the best validation accuracy?

    python -m search run spaces/regularization.py

Augmentation runs on the device per training batch, seeded by (seed, epoch); validation and the
final test are never augmented. A trial's epoch count is searched up to MAX_EPOCHS (ASHA's max_t:
dry_run rejects a range above it). "plateau" halves the rate when val_loss stalls; the retrain on
train + validation replays the rates the trial recorded.
"""

MODEL = "scratch_resnet"
WEIGHTS = "none"
DATASET = "digits"  # offline; or cifar10, cifar100, an ImageFolder directory
IMAGE_SIZE = 16  # pixels; digits are 8x8 at the source
METRIC = "val_acc"
TRIALS = 12
MAX_EPOCHS = 6  # the most a trial may ask for
GRACE_PERIOD_EPOCHS = 2
REDUCTION_FACTOR = 2
CPUS_PER_TRIAL = 1
GPUS_PER_TRIAL = 0


def space(trial):
    if trial.suggest_categorical("use_dropout", [False, True]):
        trial.suggest_float("dropout", 0.1, 0.5)
    # Mirror images (wrong for digits and text, right for most photos: the search finds out).
    trial.suggest_categorical("hflip", [False, True])
    trial.suggest_categorical("rotation_degrees", [0.0, 5.0, 10.0, 20.0])  # degrees; 0 = off
    trial.suggest_categorical("crop_scale", [1.0, 0.8, 0.6])  # least share of the area kept; 1 = off
    trial.suggest_categorical("color_jitter", [0.0, 0.2, 0.4])  # 0 = off
    optimizer = trial.suggest_categorical("optimizer", ["adam", "rmsprop", "sgd"])
    if optimizer in ("sgd", "rmsprop"):
        trial.suggest_float("momentum", 0.5, 0.95)
    trial.suggest_float("lr", 1e-4, 3e-2, log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    schedule = trial.suggest_categorical("lr_schedule", ["constant", "cosine", "plateau", "onecycle"])
    if schedule == "plateau":
        trial.suggest_float("plateau_factor", 0.2, 0.7)
        trial.suggest_int("plateau_patience", 0, 2)
    trial.suggest_int("max_epochs", 2, MAX_EPOCHS)  # <= MAX_EPOCHS, ASHA's max_t
    return {"conv_blocks": 3, "base_width": 32, "batch_size": 64}

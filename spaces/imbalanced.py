"""Imbalanced classes: does weighting the loss by inverse class frequency help, and with which
learning rate, label smoothing and network size? Ranked by balanced validation accuracy (mean
per-class recall), so a model that ignores rare classes cannot win by getting the common ones right.

    python -m search run spaces/imbalanced.py
    python -m search run spaces/imbalanced.py --dataset path/to/imagefolder

DATASET defaults to digits_longtail, scikit-learn's digits with class k cut to 10 ** (-k / 9) of its
images (178 zeros down to 18 nines; offline), so the command shows the effect anywhere; point it at
your ImageFolder directory (one sub-folder per class) for real data. The retrain at the end writes per-class
precision, recall and F1 on the test split (retrain/<trial>-per_class.csv) and the balanced test
accuracy next to the plain one.
"""

MODEL = "scratch_resnet"
WEIGHTS = "none"
DATASET = "digits_longtail"  # offline, imbalanced 10:1; or an ImageFolder directory
IMAGE_SIZE = 16  # pixels
METRIC = "val_balanced_acc"
TRIALS = 10
MAX_EPOCHS = 5
GRACE_PERIOD_EPOCHS = 2
REDUCTION_FACTOR = 2
CPUS_PER_TRIAL = 1
GPUS_PER_TRIAL = 0


def space(trial):
    # Inverse-frequency class weights in the training loss, from the training labels.
    trial.suggest_categorical("class_weights", [False, True])
    trial.suggest_float("label_smoothing", 0.0, 0.2)
    trial.suggest_float("lr", 3e-4, 3e-2, log=True)
    trial.suggest_categorical("base_width", [16, 32])
    trial.suggest_int("conv_blocks", 2, 3)
    trial.suggest_categorical("batch_size", [32, 64])
    return {"optimizer": "adam", "lr_schedule": "cosine"}

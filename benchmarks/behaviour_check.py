"""Training behaviour, pinned: for fixed seeds, every per-epoch metric but the wall-clock ones, and
the refit models' probabilities, of a few trials and refits, written as JSON for a byte-for-byte diff.

Run it against two checkouts and compare (the import path decides which tree is measured):

    PYTHONPATH=/path/to/old python benchmarks/behaviour_check.py old.json
    PYTHONPATH=$PWD python benchmarks/behaviour_check.py new.json
    cmp old.json new.json && echo identical

It imports only the public entry points (``train_classifier``, ``fit_classifier``, the data
helpers), so the same script measures a tree before and after a restructuring. CPU, one thread.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings

import numpy as np
import torch

from trainables.classifier import fit_classifier, train_classifier
from trainables.data import load_dataset

try:
    from trainables.split import split_indices, trial_data
except ImportError:  # a tree from before trainables/split.py (the same functions, in trainables/data.py)
    from trainables.data import split_indices, trial_data

# Depend on the machine's clock or memory, not on the training: left out of the comparison.
TIMINGS = ("epoch_time_s", "train_time_s", "images_per_s", "latency_ms", "peak_memory_mb")
SCRATCH = {"conv_blocks": 2, "base_width": 16, "batch_size": 32, "lr": 3e-3, "max_epochs": 3, "threads": 1}


class Checkpoints:
    """Checkpoints kept in memory (the trainable's Checkpoints protocol)."""

    def __init__(self, resume_from: dict | None = None):
        self.saved, self.resume_from = [], resume_from

    def load(self):
        return self.resume_from

    def save(self, state):
        import copy

        self.saved.append(copy.deepcopy(state))


def metrics(reports: list[dict]) -> list[dict]:
    return [{k: (repr(v) if isinstance(v, float) else v) for k, v in r.items() if k not in TIMINGS} for r in reports]


def probabilities(model, images: np.ndarray) -> dict:
    p = model.probabilities(images)
    return {"sha256": hashlib.sha256(np.ascontiguousarray(p).tobytes()).hexdigest(), "first": [repr(float(v)) for v in p[0]]}


def trial(config: dict, data, checkpoints=None) -> list[dict]:
    reports: list[dict] = []
    train_classifier(config, data, reports.append, checkpoints)
    return metrics(reports)


def main(out: str) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    digits16 = load_dataset("digits", 16)
    data16 = trial_data(digits16, split_indices(digits16.labels, 0.2, 0.2, seed=0, data_fraction=0.35))
    cases: dict[str, object] = {}

    cases["scratch_defaults"] = trial({"threads": 1, "max_epochs": 2}, data16)
    cases["scratch_small"] = trial(SCRATCH, data16)
    cases["crops_class_weights_cosine"] = trial(
        SCRATCH | {"crop_scale": 0.6, "hflip": True, "rotation_degrees": 10.0, "color_jitter": 0.2,
                   "class_weights": True, "lr_schedule": "cosine", "weight_decay": 1e-4, "optimizer": "sgd",
                   "lr": 0.05, "image_size": 12},
        data16,
    )  # fmt: skip
    cases["onecycle_adamw_smoothing"] = trial(
        SCRATCH | {"lr_schedule": "onecycle", "optimizer": "adamw", "label_smoothing": 0.1, "dropout": 0.2}, data16
    )
    cases["plateau_rmsprop"] = trial(SCRATCH | {"lr_schedule": "plateau", "optimizer": "rmsprop", "lr": 1e-3, "plateau_patience": 0}, data16)

    # Out of memory (simulated: tests/memory_limit.py): micro-batches halve, training goes on.
    from tests.memory_limit import MemoryLimit

    with MemoryLimit(images=10):
        cases["micro_batches_after_oom"] = trial(SCRATCH | {"max_epochs": 2}, data16)

    # A PBT clone: its parent's checkpoint after epoch 1, continued under mutated values.
    parent = SCRATCH | {"dropout": 0.1, "lr_schedule": "cosine"}
    store = Checkpoints()
    cases["pbt_parent"] = trial(parent, data16, store)
    clone = parent | {"lr": 1.5e-3, "dropout": 0.3, "weight_decay": 1e-3, "label_smoothing": 0.05, "hflip": True}
    cases["pbt_clone_resumed"] = trial(clone, data16, Checkpoints(resume_from=store.saved[0]))

    # Two-phase transfer: the offline EfficientNet-Lite0 weights (a pip package), head epoch first.
    digits32 = load_dataset("digits", 32)
    data32 = trial_data(digits32, split_indices(digits32.labels, 0.2, 0.2, seed=0, data_fraction=0.15))
    transfer = {"model": "tf_efficientnet_lite0", "weights": "offline", "frozen_fraction": 0.75, "head_epochs": 1,
                "backbone_lr_mult": 0.1, "max_epochs": 2, "lr": 1e-2, "batch_size": 32, "threads": 1}  # fmt: skip
    cases["two_phase_transfer"] = trial(transfer, data32)

    # Refits (retrain's fit_classifier): a trial's epochs on train + validation, then probabilities.
    def refit(name: str, config: dict, data=data16, **kwargs) -> None:
        train = np.concatenate([np.asarray(data.train_images), np.asarray(data.val_images)])
        labels = np.concatenate([np.asarray(data.train_labels), np.asarray(data.val_labels)])
        reports: list[dict] = []
        model = fit_classifier(config, train, labels, data.classes, report=reports.append, **kwargs)
        cases[name] = {"epochs": metrics(reports), "probabilities": probabilities(model, np.asarray(data.val_images))}

    refit("refit_scratch", SCRATCH)
    refit("refit_crops_cosine", SCRATCH | {"crop_scale": 0.6, "class_weights": True, "lr_schedule": "cosine", "image_size": 12})
    refit("refit_plateau_replayed", SCRATCH | {"lr_schedule": "plateau"}, lr_per_epoch=[3e-3, 1.5e-3, 7.5e-4])
    refit(
        "refit_pbt_clone",
        parent,
        pbt_schedule=[(2, clone), (3, clone | {"lr": 7e-4, "dropout": 0.0, "momentum": 0.8, "color_jitter": 0.1})],
    )
    refit("refit_two_phase_transfer", transfer, data=data32, epochs=2)

    text = json.dumps(cases, indent=1, sort_keys=True)
    with open(out, "w") as file:
        file.write(text + "\n")
    for name, value in cases.items():
        print(f"{name:28s} {hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]}")
    print(f"all cases                    {hashlib.sha256(text.encode()).hexdigest()[:16]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "behaviour.json")

"""A classifier refitted on train + validation for the retrain: ``fit_classifier`` runs the trial's
epoch loop without validation, replaying its learning rates and PBT mutations."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from trainables.classifier.config import TrialConfig
from trainables.classifier.loop import run_epochs, set_up
from trainables.classifier.model import Classifier
from trainables.contract import TrialDiverged
from trainables.streaming import device_images

__all__ = ["fit_classifier"]


def fit_classifier(
    config: Mapping[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    epochs: int | None = None,
    report: Callable[[dict], Any] | None = None,
    lr_per_epoch: Sequence[float] | None = None,
    pbt_schedule: Sequence[tuple[int, Mapping[str, Any]]] = (),
    stream: bool = False,
) -> Classifier:
    """Train per ``config`` on all of ``images`` for ``epochs`` epochs, without validation.

    ``stream``: ``images`` is a view of the data cache, read batch by batch as a streamed trial
    reads it (trainables/streaming.py: the same batches, so the same model), never copied whole.

    ``pbt_schedule``: a PBT trial's later configs, ``(first epoch, config)`` in order; from each first
    epoch on, its PBT_MUTABLE values apply, the way a PBT clone's resume applies them (loop.apply_mutation).

    The learning-rate schedule still spans ``config["max_epochs"]``: stopping at epoch ``epochs``
    replays a trial's first ``epochs`` epochs exactly as they ran (same rates, same seeded batch
    order and augmentation, same two phases), on this data. ``report`` gets each epoch's training
    loss and accuracy.

    ``lr_schedule`` "plateau" follows validation loss, which is not there: ``lr_per_epoch`` (the
    head's ``lr`` the trial reported for epochs 1, 2, ...) is then replayed, each parameter group
    at its share of it; without it the rate stays at ``lr`` (no plateau is ever detected).
    Ignored for the other schedules, which need no validation to replay.
    """
    cfg = TrialConfig.from_mapping(config)
    epochs = cfg.max_epochs if epochs is None else epochs
    if not 1 <= epochs <= cfg.max_epochs:
        raise ValueError(f"`epochs` is {epochs}, but must be 1 <= epochs <= max_epochs (= {cfg.max_epochs}).")
    replay = list(lr_per_epoch) if cfg.lr_schedule == "plateau" and lr_per_epoch is not None else None
    if replay is not None and len(replay) < epochs:
        raise ValueError(f"`lr_per_epoch` holds {len(replay)} rates, but {epochs} epochs are to be trained.")

    def to_device(device: torch.device, size: int) -> tuple:
        return device_images(images, device, size, stream=stream), torch.as_tensor(np.asarray(labels)).to(device)

    run = set_up(cfg, len(classes), to_device)
    train_time = 0.0
    later = {first: TrialConfig.from_mapping(dict(later_config)) for first, later_config in pbt_schedule}
    for epoch in run_epochs(run, cfg, 1, epochs, mutations=later, head_lrs=replay):
        if epoch.diverged is not None:
            raise TrialDiverged(epoch.diverged)
        cfg = epoch.config
        train_time += epoch.seconds
        if report is not None:
            report({"epoch": epoch.number, "train_loss": epoch.train_loss, "train_acc": epoch.train_acc, "lr": epoch.lr,
                    "train_time_s": train_time})  # fmt: skip
    return Classifier(net=run.net, normalize=run.normalize, classes=tuple(classes), config=cfg)

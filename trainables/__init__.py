"""What one trial does. Nothing here imports Ray: trainables run and test without a cluster.

A trainable is ``fn(config, data, report, checkpoints=None)``. TRAINABLES holds one ``Trainable``
entry per name a space file's ``TRAINABLE`` setting may use: where its training function, config
class, refit (``retrain``) and loader (``predict``) live, as ``"module:attribute"`` paths imported
only when used, so that ``import trainables`` (and the CLI's ``--help``) stays instant. A new
trainable is one module and one entry here; search/ and analysis/ ask the entry, never the name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from trainables.names import did_you_mean

__all__ = [
    "DEFAULT_TRAINABLE",
    "TRAINABLES",
    "Trainable",
    "get_config_class",
    "get_entry",
    "get_mutable_params",
    "get_trainable",
    "register",
]


@dataclass(frozen=True)
class Trainable:
    """One registered trainable. Each field but ``name``, ``stored_files`` and ``refit_summary`` is a
    ``"module:attribute"`` path that ``resolve`` imports on first use.

    - ``train``: ``fn(config, data, report, checkpoints=None)``, one trial (search/trial.py).
    - ``config``: its config class (``from_mapping`` rejects unknown keys): the dry run checks every
      sampled config with it before any trial starts.
    - ``fit``: ``fn(config, images, labels, classes, *, epochs, report, lr_per_epoch, pbt_schedule)``,
      the model refitted on train + validation (analysis/retrain.py); the model has
      ``probabilities(images)``, ``classes`` and ``save(directory) -> dict`` (the files it keeps
      there, ``stored_files``; the dict goes into ``model.json``).
    - ``load``: ``fn(directory, built, train_data)``, the stored model rebuilt (analysis/predict.py),
      ``built`` being its ``model.json`` and ``train_data()`` the run's train + validation
      ``(images, labels, classes)`` for a trainable that refits instead of storing weights.
    - ``mutable``: the config keys it can change between two epochs of one trial (a PBT clone
      continues from its parent's checkpoint with them mutated); None: it cannot.
    - ``measure_memory``: ``fn(config, data) -> bytes``, the peak GPU memory of one trial cycle
      (``--gpu-packing auto``: search/gpu_packing.py); None: it cannot be packed by measurement.
    - ``check_run``: ``fn(checked_config, max_epochs, image_size)``, raising ValueError when a trial
      asks for more than its run gives (the dry run calls it); None: nothing to check.
    """

    name: str
    train: str
    config: str
    fit: str
    load: str
    mutable: str | None = None
    check_run: str | None = None
    measure_memory: str | None = None
    stored_files: tuple[str, ...] = ()  # what a stored model needs besides model.json
    refit_summary: str = "{epochs} epoch(s)"  # what retrain prints per model (str.format, epochs=)

    def resolve(self, field: str) -> Any:
        """The object the ``field`` path names (imported now), or None where the field is None."""
        path = getattr(self, field)
        if path is None:
            return None
        module, _, attribute = path.partition(":")
        return getattr(importlib.import_module(module), attribute)


TRAINABLES: dict[str, Trainable] = {}
# The trainable of a run (Settings.trainable) or a stored model (model.json) that names none.
DEFAULT_TRAINABLE = "classifier"


def register(entry: Trainable) -> Trainable:
    """Add ``entry`` to TRAINABLES under its name (a name registers once)."""
    if entry.name in TRAINABLES:
        raise ValueError(f"trainable {entry.name!r} is registered already")
    TRAINABLES[entry.name] = entry
    return entry


register(
    Trainable(
        name="classifier",
        train="trainables.classifier:train_classifier",
        config="trainables.classifier:TrialConfig",
        fit="trainables.classifier:fit_classifier",
        load="trainables.classifier:load_classifier",
        mutable="trainables.classifier:PBT_MUTABLE",
        check_run="trainables.classifier:check_against_run",
        measure_memory="trainables.classifier:measure_step_memory",
        stored_files=("model.pt",),
    )
)
register(
    Trainable(
        name="features",
        train="trainables.features:train_features",
        config="trainables.features:FeatureConfig",
        fit="trainables.features:refit_features",
        load="trainables.features:load_features",
        refit_summary="classifier fitted on frozen features",
    )
)


def get_entry(name: str) -> Trainable:
    """The registered trainable ``name``; ValueError naming the closest registered name if none."""

    if name not in TRAINABLES:
        raise ValueError(f"unknown trainable {name!r}: expected one of {sorted(TRAINABLES)}" + did_you_mean(name, TRAINABLES))
    return TRAINABLES[name]


def get_trainable(name: str) -> Callable:
    """The trainable called ``name`` in TRAINABLES, or any importable ``"package.module:function"``."""

    if name not in TRAINABLES and ":" not in name:
        raise ValueError(
            f"unknown trainable {name!r}: expected one of {sorted(TRAINABLES)} or 'package.module:function'"
            + did_you_mean(name, TRAINABLES)
        )
    path = TRAINABLES[name].train if name in TRAINABLES else name
    module, _, function = path.partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"trainable {name!r} cannot be imported: {error}") from None


def get_config_class(name: str) -> type | None:
    """The config class of trainable ``name``, or None for a custom trainable (it checks its own)."""
    return TRAINABLES[name].resolve("config") if name in TRAINABLES else None


def get_mutable_params(name: str) -> frozenset[str] | None:
    """The config keys trainable ``name`` can change mid-training, or None when it declares none."""
    mutable = TRAINABLES[name].resolve("mutable") if name in TRAINABLES else None
    return None if mutable is None else frozenset(mutable)

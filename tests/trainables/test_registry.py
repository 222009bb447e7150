"""The trainables registry: one entry per trainable, each resolving everything search/ and analysis/ ask of it."""

import inspect
import subprocess
import sys

import pytest

import trainables
from trainables import (
    TRAINABLES,
    Trainable,
    get_config_class,
    get_entry,
    get_mutable_params,
    get_trainable,
    register,
)


@pytest.mark.parametrize("name", sorted(TRAINABLES))
def test_every_entry_resolves_train_config_fit_and_load(name):
    entry = TRAINABLES[name]
    assert entry.name == name
    train, config, fit, load = (entry.resolve(field) for field in ("train", "config", "fit", "load"))
    assert list(inspect.signature(train).parameters)[:4] == ["config", "data", "report", "checkpoints"]
    assert inspect.isclass(config) and callable(config.from_mapping)
    assert list(inspect.signature(fit).parameters)[:4] == ["config", "images", "labels", "classes"]
    assert list(inspect.signature(load).parameters) == ["directory", "built", "train_data"]
    # The module-level helpers answer from the same entry.
    assert get_trainable(name) is train
    assert get_config_class(name) is config
    mutable = get_mutable_params(name)
    assert mutable is None if entry.mutable is None else mutable == frozenset(entry.resolve("mutable"))
    assert entry.refit_summary.format(epochs=3)


def test_registry_contents():
    assert sorted(TRAINABLES) == ["classifier", "features"]
    assert TRAINABLES["classifier"].stored_files == ("model.pt",)
    assert TRAINABLES["features"].stored_files == ()  # refitted by predict, never pickled
    assert get_mutable_params("features") is None
    assert "lr" in get_mutable_params("classifier")
    assert get_config_class("package.module:custom") is None


def test_unknown_trainable_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown trainable 'clasifier'.*did you mean 'classifier'"):
        get_entry("clasifier")
    with pytest.raises(ValueError, match=r"unknown trainable 'featurs'.*did you mean 'features'"):
        get_trainable("featurs")
    with pytest.raises(ValueError, match=r"unknown trainable 'zzz': expected one of \['classifier', 'features'\]$"):
        get_entry("zzz")


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="'classifier' is registered already"):
        register(Trainable(name="classifier", train="m:f", config="m:C", fit="m:fit", load="m:load"))
    assert TRAINABLES["classifier"].train == "trainables.classifier:train_classifier"


def test_import_stays_cheap():
    # The registry holds paths: importing it imports neither torch nor the trainables' modules.
    code = "import sys, trainables; print(sorted(m for m in ('torch', 'trainables.classifier', 'trainables.features') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert trainables.__all__

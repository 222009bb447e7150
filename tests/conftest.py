"""Shared fixtures: small real data, and one real local Ray session for every end-to-end test."""

from __future__ import annotations

import os

# No test depends on the network: the suite declares itself offline before anything imports
# (trainables/offline.py), so MODEL "auto" resolves offline without asking the hub and nothing
# downloads. Ray's workers and the CLI subprocesses that tests start inherit both.
os.environ["IMAGE_SEARCH_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

# The imports below come after the offline declaration, on purpose.
from pathlib import Path

import numpy as np
import pytest

# A test past its timeout (pyproject.toml) fails with its traceback, even inside ray.get, and the
# session goes on: these hooks (tests/hang_guard.py says why pytest-timeout's methods do not).
from tests.hang_guard import (  # noqa: F401
    pytest_runtest_call,
    pytest_runtest_setup,
    pytest_runtest_teardown,
    pytest_timeout_set_timer,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _mlflow_uri_does_not_leak():
    """``mlflow.set_tracking_uri`` (tests that read a run's MLflow store call it) also sets
    MLFLOW_TRACKING_URI for the whole process, and every later search would then log to that store
    (the engine reads the variable when --mlflow is not given): each test leaves it as it found it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def digits_16():
    """scikit-learn's digits at 16 px, split as a run would split it."""
    from trainables.data import load_dataset
    from trainables.split import split_indices

    images = load_dataset("digits", 16)
    return images, split_indices(images.labels, 0.2, 0.2, seed=0)


@pytest.fixture(scope="session")
def small_trial_data(digits_16):
    """A stratified third of digits at 16 px: enough to learn, fast to train on one thread."""
    from trainables.split import split_indices, trial_data

    images, _ = digits_16
    return trial_data(images, split_indices(images.labels, 0.2, 0.2, seed=0, data_fraction=0.35))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray session (2 CPUs) that every end-to-end test joins; shut down at the end.

    Started as the CLI starts its own: on 127.0.0.1 only, token authentication on.
    """
    import ray

    from search.ray_session import set_ray_environment, start_local

    set_ray_environment()  # as the CLI's own session: its workers inherit Ray Tune's settings
    start_local(num_cpus=2, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


def write_png_folder(root: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> Path:
    """Write (N, 3, S, S) uint8 images as an ImageFolder tree: root/<class>/<i>.png."""
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{index}.png")
    return root

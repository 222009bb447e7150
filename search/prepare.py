"""Everything before Ray: check the input, load and split the data, and write the run directory.

Imports no Ray, so ``python -m search run`` reports bad input (exit status 2) without starting it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import platform
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from analysis.records import RunDir, write_json, write_text
from analysis.tracking import check_tracking_uri, tracking_uri
from search.config.sampling import dry_run
from search.config.settings import Settings
from search.config.spaces import SpaceFile
from search.strategies import check_names, check_strategies
from trainables.data import check_cache, choose_loading, open_source
from trainables.datasets import resolve_source
from trainables.split import file_record, split_indices

__all__ = ["PreparedRun", "check_address", "data_loading", "open_data", "prepare_run", "write_run_dir"]

_PACKAGES = ("torch", "torchvision", "timm", "ray", "optuna", "numpy", "pandas", "scikit-learn", "tensorboard")


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """A validated run, not yet written: what ``prepare_run`` checked and loaded."""

    run_dir: Path
    settings: Settings
    space: SpaceFile
    images: Any  # trainables.datasets.ImageSet; None until the engine has opened the data cache
    split: Any  # trainables.split.Split; None until then
    source: Any = None  # trainables.datasets.Source: the data set found and listed, not decoded yet


def prepare_run(
    space: SpaceFile, settings: Settings, out: Callable[[str], None] = print, overwrite: bool = False
) -> PreparedRun:
    """Everything that can fail on bad input, before anything is written or Ray starts.

    Resolves MODEL "auto", samples the space dry, loads and splits the data set, fetches ImageNet
    weights once. Raises ValueError/TypeError/FileExistsError naming what is wrong.
    """
    from trainables.models import (  # imports torch: not at this module's import
        build_model,
        resolve_auto_model,
    )

    check_names(settings)  # --sampler and --scheduler, before anything else runs
    if settings.model == "auto":
        model, weights, why = resolve_auto_model()
        out(f"model auto -> {model} with {weights} weights ({why})")
        settings = dataclasses.replace(settings, model=model, weights=weights)
    dry_run(space, settings)
    check_strategies(settings, space)  # the names, and what each cannot run (grid: a continuous parameter)
    check_address(settings.address)
    uri = tracking_uri(settings.mlflow)  # --mlflow, else MLFLOW_TRACKING_URI
    if uri:
        check_tracking_uri(uri)
        settings = dataclasses.replace(settings, mlflow=uri)

    name = settings.name or f"{space.path.stem}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    run_dir = Path(settings.storage).expanduser().resolve() / name
    if run_dir.exists() and not overwrite:
        raise FileExistsError(
            f"run directory {str(run_dir)!r} already exists: continue it with `python -m search resume "
            f"{run_dir}`, choose another --name, or pass --overwrite to start it over"
        )
    settings = dataclasses.replace(settings, name=name)

    # The data set is found, listed and checked here; its images are decoded (by Ray tasks, into
    # the data cache) once Ray runs (search/engine.py, open_data).
    source = resolve_source(settings.dataset, settings.image_size, settings.data_root or None, settings.classes)
    check_cache(source, settings.data_cache or None, cache_arrays=data_loading(settings, source) == "stream")
    listed = source.array.fixed_test if source.array is not None else None
    split_indices(source.labels, settings.val_fraction, settings.test_fraction, settings.seed,
                  data_fraction=settings.data_fraction, fixed_test=listed)  # fmt: skip  (raises if it cannot split)
    if settings.weights == "imagenet":
        build_model(settings.model, len(source.classes), weights="imagenet")  # download once, here
    return PreparedRun(run_dir=run_dir, settings=settings, space=space, images=None, split=None, source=source)


def data_loading(settings: Settings, source: Any) -> str:
    """The run's data loading, "memory" or "stream", from its setting and the size of its pixels."""

    share = settings.data_fraction * (1 - settings.test_fraction)
    return choose_loading(settings.data_loading, int(source.decoded_bytes() * share))


def open_data(prepared: PreparedRun, decode_map: Callable, out: Callable[[str], None]) -> PreparedRun:
    """Decode the data set into its cache with ``decode_map`` (the engine's Ray tasks) or reopen
    it, and split it as ``prepare_run`` checked."""

    settings = prepared.settings
    images = open_source(
        prepared.source, settings.data_cache or None, decode_map=decode_map, out=out,
        cache_arrays=data_loading(settings, prepared.source) == "stream",
    )  # fmt: skip
    split = split_indices(
        images.labels,
        settings.val_fraction,
        settings.test_fraction,
        settings.seed,
        data_fraction=settings.data_fraction,
        fixed_test=images.fixed_test,
    )
    return dataclasses.replace(prepared, images=images, split=split)


def _cache_record(images: Any) -> dict:
    manifest = getattr(images.images, "manifest", None)
    if manifest is None:
        return {}
    return {"directory": str(images.images.directory), "content_hash": manifest["content_hash"]}


def write_run_dir(prepared: PreparedRun, out: Callable[[str], None]) -> None:
    run_dir, settings, images, split = prepared.run_dir, prepared.settings, prepared.images, prepared.split
    if run_dir.exists():  # prepare_run allowed it: --overwrite
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    RunDir(run_dir).write_settings(settings)
    write_text(run_dir / "space.py", prepared.space.text)
    write_json(
        run_dir / "split.json",
        {
            "dataset": settings.dataset,
            "image_size": settings.image_size,
            "seed": settings.seed,
            "classes": list(images.classes),
            "skipped_files": list(images.skipped),
            "train": split.train,
            "val": split.val,
            "test": split.test,
            "loading": data_loading(settings, prepared.source),  # how trials read images: memory | stream
            "cache": _cache_record(images),
        }
        | file_record(images),  # file-based sets: each file's relative path and size, and their hash
    )
    write_json(run_dir / "environment.json", _environment())
    out(
        f"data: {settings.dataset}, {len(images.classes)} classes, {len(split.train)} train / "
        f"{len(split.val)} validation / {len(split.test)} test images (test held out from every trial)"
    )


def check_address(address: str) -> None:
    """Fail within seconds, before anything runs, when nothing answers at ``host:port``."""
    if not address or address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"`address` is {address!r}, but must be 'auto' or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ValueError(
            f"`address` {address!r}: nothing answers there ({error}); start the cluster "
            "(`ray start --head` or `ray up cluster.yaml`) or fix the address"
        ) from None


def _environment() -> dict[str, Any]:
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}

"""Data: load an image data set once, resized once, through the decoded-image cache.

The catalogue of sources is trainables/datasets.py, the split trainables/split.py, the decoding of
one file trainables/images.py.

Every data set becomes the same thing, an ``ImageSet``: uint8 images of shape (N, 3, S, S) and
int64 labels. Image files (an ImageFolder, food101, flowers102, oxford_pets) are decoded once into
the data cache (trainables/cache.py): memory-mapped uint8 shards that every trial, retrain, predict
and later run of the same files reads, so ``images`` is then a ``CachedImages`` (array-like, on
disk) and a trial receives the cache's path and its indices, not pixels. The small array sets
(digits, CIFAR, STL-10) stay in-memory arrays, cached only when trials stream (``cache_arrays``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from trainables.cache import (
    DEFAULT_CACHE,
    CacheDamaged,
    CacheError,
    Decoded,
    build_or_open,
    cache_key,
    check_writable,
    open_cache,
    open_complete,
)
from trainables.configs import bytes_from_env
from trainables.datasets import DatasetError, ImageSet, Source, resolve_source
from trainables.decode import PREPROCESSING, decode_image
from trainables.images import UNREADABLE_IMAGE_ERRORS

__all__ = ["AUTO_STREAM_BYTES", "check_cache", "choose_loading", "chunk_images", "load_dataset", "open_source"]


# Images per cache shard (and per decode task), at most: 1024 images of 224 px are 154 MB.
CHUNK_IMAGES = 1024
# A set is cut into at least this many shards (decode tasks) while they keep >= MIN_CHUNK_IMAGES
# each, so that the decode keeps 16 workers busy with 4 tasks each even for a few thousand images.
CHUNK_TASKS = 64
MIN_CHUNK_IMAGES = 64
# How every file is turned into stored pixels, part of the cache key: trainables.decode.PREPROCESSING.


def load_dataset(
    name: str,
    image_size: int,
    data_root: str | os.PathLike | None = None,
    classes: str = "",
    cache: str | os.PathLike | None = None,
    decode_map: Callable[[Callable, Iterable], Iterable] = map,
    out: Callable[[str], None] | None = None,
    cache_arrays: bool = False,
    rebuild: bool = True,
) -> ImageSet:
    """Load ``name`` (see module docstring) resized to ``image_size`` pixels.

    ``classes``: keep a subset ("10" or "apple_pie,sushi"). Image files go through the data cache
    in ``cache`` (default DEFAULT_CACHE), decoded by ``decode_map`` (the engine passes Ray tasks);
    ``cache_arrays`` puts array sets there too (for streaming trials). ``rebuild=False``: the
    cache must be there and intact (``trainables.cache.CacheDamaged`` names the shard otherwise).
    """
    source = resolve_source(name, image_size, data_root, classes)
    return open_source(source, cache, decode_map, out or (lambda line: None), cache_arrays, rebuild)


def open_source(
    source: Source,
    cache: str | os.PathLike | None = None,
    decode_map: Callable[[Callable, Iterable], Iterable] = map,
    out: Callable[[str], None] = print,
    cache_arrays: bool = False,
    rebuild: bool = True,
) -> ImageSet:
    """The ImageSet of ``source``: decoded into (or reopened from) the data cache for files.
    ``rebuild=False``: only reopened, CacheDamaged when it is missing or damaged."""
    if source.array is not None and not cache_arrays:
        return source.array
    cache_root, key, chunks, description = _plan(source, cache)
    if source.array is not None:
        decode_map = map  # the pixels are in this process already
    try:
        if rebuild:
            cached = build_or_open(
                cache_root, key, chunks, description, source.classes, source.image_size,
                map=decode_map, out=out, needed_bytes=int(source.decoded_bytes() * 1.05),
            )  # fmt: skip
        else:
            cached = open_complete(cache_root / key)
    except CacheDamaged:
        raise  # the caller knows which command rebuilds it
    except CacheError as error:
        raise DatasetError(str(error)) from None
    labels = cached.labels()
    skipped = tuple(cached.manifest["skipped"])
    if source.array is not None:
        return ImageSet(images=cached, labels=labels, classes=source.classes, fixed_test=source.array.fixed_test)
    if skipped:
        warnings.warn(f"{len(skipped)} unreadable image file(s) in {source.root} were skipped, e.g. {skipped[0]}", stacklevel=2)
    kept_counts = np.bincount(labels, minlength=len(source.classes))
    for number, name in enumerate(source.classes):
        if kept_counts[number] == 0:
            raise DatasetError(f"class folder {str(Path(source.root) / name)!r} holds no readable images")
    fixed_test = None
    if source.fixed_test_files:
        unreadable = {line.split(": ", 1)[0] for line in skipped}
        read = [e[0] for e in source.entries if str(Path(source.root) / e[0]) not in unreadable]
        fixed_test = np.asarray([i for i, rel in enumerate(read) if rel in source.fixed_test_files], dtype=np.int64)
    return ImageSet(
        images=cached,
        labels=labels,
        classes=source.classes,
        fixed_test=fixed_test,
        skipped=skipped,
        files=tuple((e[0], e[1]) for e in source.entries),
        files_root=str(source.root),
    )


def _plan(source: Source, cache) -> tuple[Path, str, list, dict]:
    """Where ``source``'s cache lives, its key, its decode chunks and what the key describes."""
    cache_root = Path(cache or DEFAULT_CACHE).expanduser()
    if source.array is not None:
        images = source.array.images
        chunks = [
            functools.partial(_array_chunk, images[a : a + CHUNK_IMAGES], source.array.labels[a : a + CHUNK_IMAGES])
            for a in range(0, source.count, CHUNK_IMAGES)
        ]
        description = {"source": source.name, "content": hashlib.sha256(np.ascontiguousarray(images).data).hexdigest(),
                       "labels": hashlib.sha256(source.array.labels.tobytes()).hexdigest()}  # fmt: skip
    else:
        size = chunk_images(source.count)
        chunks = [
            functools.partial(
                _decode_files,
                source.root,
                tuple(e[0] for e in source.entries[a : a + size]),
                tuple(e[3] for e in source.entries[a : a + size]),
                source.image_size,
            )
            for a in range(0, source.count, size)
        ]
        listing = hashlib.sha256(repr([e for e in source.entries]).encode()).hexdigest()
        description = {"source": str(source.root), "files": listing, "count": source.count}
    description |= {"image_size": source.image_size, "classes": list(source.classes), "preprocessing": PREPROCESSING}
    return cache_root, cache_key(description), chunks, description


# "auto" data loading streams from this many bytes of train + validation pixels (README, "Data");
# the environment variable AUTO_STREAM_ENV overrides it for the driver that sets it.
AUTO_STREAM_BYTES = 2**30
AUTO_STREAM_ENV = "IMAGE_SEARCH_AUTO_STREAM_BYTES"


def choose_loading(mode: str, nbytes: int) -> str:
    """"memory" or "stream" for data loading ``mode`` and ``nbytes`` of train + validation pixels."""
    if mode == "auto":
        return "stream" if nbytes >= bytes_from_env(AUTO_STREAM_ENV, AUTO_STREAM_BYTES) else "memory"
    return mode


def check_cache(source: Source, cache=None, cache_arrays: bool = False) -> None:
    """Before anything runs: ``source``'s cache is complete, or its folder takes the decoded
    images (writable, with room). DatasetError naming the folder otherwise."""
    if source.array is not None and not cache_arrays:
        return

    cache_root, key, _, _ = _plan(source, cache)
    if open_cache(cache_root / key, verify="size") is None:
        try:
            check_writable(cache_root, int(source.decoded_bytes() * 1.05))
        except CacheError as error:
            raise DatasetError(str(error)) from None


def _array_chunk(images: np.ndarray, labels: np.ndarray) -> Decoded:
    return Decoded(images=np.ascontiguousarray(images), labels=np.asarray(labels, dtype=np.int64))


def chunk_images(count: int) -> int:
    """Images per shard (and decode task) for a set of ``count``: CHUNK_IMAGES at most, fewer so
    that there are CHUNK_TASKS tasks, but MIN_CHUNK_IMAGES at least. A function of the count
    alone, so that the same files give the same shards on any machine (and one bad shard can be
    decoded again by itself)."""
    return max(1, min(CHUNK_IMAGES, max(MIN_CHUNK_IMAGES, -(-count // CHUNK_TASKS))))


def _decode_files(root: str, relative: tuple[str, ...], labels: tuple[int, ...], image_size: int) -> Decoded:
    """Decode one chunk of files (runs in a Ray task on any node, or in this process)."""
    # Each image is decoded into its slot of the chunk's array: no per-image array to stack after.
    images = np.empty((len(relative), 3, image_size, image_size), dtype=np.uint8)
    kept, skipped = [], []
    for rel, label in zip(relative, labels):
        path = Path(root) / rel
        try:
            decode_image(path, image_size, out=images[len(kept)])
        except UNREADABLE_IMAGE_ERRORS as error:
            skipped.append(f"{path}: {error}")
            continue
        kept.append(label)
    return Decoded(images=images[: len(kept)], labels=np.asarray(kept, dtype=np.int64), skipped=tuple(skipped))

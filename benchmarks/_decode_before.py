"""The cache build's decode as it was before ``trainables.decode`` (full-size decode, then
torchvision's resize and centre crop, 1024-image tasks), kept here only so that the benchmarks
can measure it side by side with today's (benchmarks/data_loading.py, decode_pixels.py)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from trainables.cache import Decoded
from trainables.images import UNREADABLE_IMAGE_ERRORS

PREPROCESSING_BEFORE = "rgb, shorter side resized (bilinear, antialiased), centre crop; torchvision"
CHUNK_IMAGES_BEFORE = 1024


def load_image_before(path, image_size: int) -> np.ndarray:
    """One file as (3, S, S) uint8, decoded as the cache decoded it before version 2."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    with Image.open(path) as image:
        tensor = TF.pil_to_tensor(image.convert("RGB"))
    tensor = TF.resize(tensor, image_size, antialias=True)
    return TF.center_crop(tensor, [image_size, image_size]).numpy()


def decode_files_before(
    root: str, relative: tuple[str, ...], labels: tuple[int, ...], image_size: int
) -> Decoded:
    import torch

    torch.set_num_threads(1)
    images, kept, skipped = [], [], []
    for rel, label in zip(relative, labels):
        path = Path(root) / rel
        try:
            images.append(load_image_before(path, image_size))
        except UNREADABLE_IMAGE_ERRORS as error:
            skipped.append(f"{path}: {error}")
            continue
        kept.append(label)
    array = np.stack(images) if images else np.zeros((0, 3, image_size, image_size), dtype=np.uint8)
    return Decoded(images=array, labels=np.asarray(kept, dtype=np.int64), skipped=tuple(skipped))


def chunks_before(source) -> list:
    """The decode tasks of file-based ``source`` as the cache build cut them before (1024 images each)."""
    size = CHUNK_IMAGES_BEFORE
    entries = source.entries
    return [
        functools.partial(
            decode_files_before,
            source.root,
            tuple(e[0] for e in entries[a : a + size]),
            tuple(e[3] for e in entries[a : a + size]),
            source.image_size,
        )
        for a in range(0, source.count, size)
    ]


def _decode_only(job) -> Decoded:
    return job.chunk()


def map_before(ray_map):
    """A ``map`` for ``build_or_open`` with the build's data flow before version 2: each chunk is
    decoded in a Ray task and its pixels are sent back; the driver writes each shard, then reads it
    back to hash it."""
    from trainables.cache import Written, _checked, _file_hash

    def mapped(function, jobs):
        jobs = list(jobs)
        for job, decoded in zip(jobs, ray_map(_decode_only, jobs)):
            path = Path(job.path)
            with open(path, "wb") as file:
                np.save(file, _checked(decoded, job.image_size), allow_pickle=False)
                file.flush()
                os.fsync(file.fileno())
            labels = np.asarray(decoded.labels, dtype=np.int64)
            yield Written(labels=labels, skipped=tuple(decoded.skipped), bytes=path.stat().st_size, sha256=_file_hash(path))

    return mapped

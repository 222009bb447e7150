"""Streaming a trial's images from the data cache instead of copying the whole set to its device.

``device_images(images, device, size, stream)`` is the one call the classifier makes per image set:
with ``stream=False`` it returns the whole set as one tensor on the device (the in-memory path);
with ``stream=True`` a ``StreamedImages`` over the cache's memory-mapped shards, which the trial
reads batch by batch, so its private memory does not grow with the data set (the OS page cache
keeps one copy of the shards per node, shared by all of its trials).

``epoch_batches(images, order, batch)`` yields the (index, images) batches of one epoch in the
order ``order`` for either kind, so both paths train on identical batches for the same seed. For
streamed images a background thread assembles the next ``prefetch`` batches (gathered from the
shards, in pinned memory when the device is a GPU, then copied with ``non_blocking``); resizing to
the trial's size and augmentation happen on the device, as in memory.

When the cache is larger than half of the machine's memory (or than ``QUASI_RANDOM_ENV`` bytes,
where that environment variable is set in the trial's process), reading in random order would go to
disk for nearly every image; the order is then quasi-random (``quasi_random_order``, as FFCV's
``QUASI_RANDOM``): blocks of ``BLOCK_IMAGES`` consecutive images in random block order, shuffled
within a buffer of ``BUFFER_BLOCKS`` blocks. Every image is still seen once per epoch, and the
order still changes each epoch, but images of one block land within about
``BLOCK_IMAGES * BUFFER_BLOCKS`` positions of each other: batches are less independent than
with a full shuffle.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Iterator

import numpy as np
import torch

from trainables.augment import resize_images
from trainables.configs import bytes_from_env

__all__ = [
    "BLOCK_IMAGES",
    "BUFFER_BLOCKS",
    "QUASI_RANDOM_ENV",
    "StreamedImages",
    "device_images",
    "epoch_batches",
    "larger_than_memory",
    "quasi_random_order",
]

BLOCK_IMAGES = 256  # consecutive cached images read together in quasi-random order
BUFFER_BLOCKS = 16  # blocks shuffled together in quasi-random order
PREFETCH_BATCHES = 4  # batches the background thread keeps ready
QUASI_RANDOM_ENV = "IMAGE_SEARCH_QUASI_RANDOM_BYTES"  # overrides half of physical memory


def device_images(images, device: torch.device, size: int, stream: bool):
    """``images`` (array or cache view) for a trial on ``device`` at ``size`` px (0: as stored):
    one tensor on the device, or, with ``stream``, a ``StreamedImages`` read batch by batch."""
    if stream:
        return StreamedImages(images, device, size)
    tensor = torch.as_tensor(np.asarray(images)).to(device)
    return resize_images(tensor, size) if size else tensor


def epoch_batches(images, order: torch.Tensor, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(index, images) for each run of ``batch`` positions of ``order``, on the images' device."""
    if isinstance(images, StreamedImages):
        yield from images.batches(order, batch)
        return
    for start in range(0, len(order), batch):
        index = order[start : start + batch]
        yield index, images[index]


def larger_than_memory(nbytes: int) -> bool:
    """Whether ``nbytes`` of cached images exceed half of this machine's physical memory, or the
    bytes in ``QUASI_RANDOM_ENV`` where it is set."""
    try:
        half = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        half = None
    limit = bytes_from_env(QUASI_RANDOM_ENV, half if half is not None else -1)
    return limit >= 0 and nbytes > limit


def quasi_random_order(order: np.ndarray, block: int = BLOCK_IMAGES, buffer_blocks: int = BUFFER_BLOCKS) -> np.ndarray:
    """A quasi-random permutation of ``range(len(order))`` drawn from the random permutation ``order``:
    blocks of ``block`` consecutive positions in random order, then the positions within each
    buffer of ``buffer_blocks`` blocks shuffled. (The values below k of a uniform permutation, in
    their order, are a uniform permutation of range(k): one permutation seeds both shuffles.)"""
    order = np.asarray(order, dtype=np.int64)
    n = len(order)
    blocks = -(-n // block)
    block_order = order[order < blocks]
    positions = []
    for first in range(0, blocks, buffer_blocks):
        members = np.concatenate([np.arange(b * block, min(n, (b + 1) * block)) for b in block_order[first : first + buffer_blocks]])
        shuffle = order[order < len(members)]
        positions.append(members[shuffle])
    return np.concatenate(positions) if positions else order


class StreamedImages:
    """A trial's images read from the data cache on demand: ``batches`` for training, slices for
    validation (``images[a:b]``), each returned on ``device`` at ``size`` px."""

    def __init__(self, view, device: torch.device, size: int, prefetch: int = PREFETCH_BATCHES, quasi_random: bool | None = None):
        self.view, self.device, self.size, self.prefetch = view, torch.device(device), size, prefetch
        base = getattr(view, "base", None)
        cached_bytes = base.nbytes if base is not None else getattr(view, "nbytes", 0)
        self.quasi_random = larger_than_memory(cached_bytes) if quasi_random is None else quasi_random
        self.pin = self.device.type == "cuda"
        side = size or view.shape[-1]
        self.shape = (len(view), view.shape[1], side, side)

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return self._on_device(torch.from_numpy(np.asarray(self.view[index])))

    def _on_device(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.device, non_blocking=True)
        return resize_images(x, self.size) if self.size else x

    def batches(self, order: torch.Tensor, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        positions = order.cpu().numpy()
        if self.quasi_random:
            positions = quasi_random_order(positions)
        runs = [positions[start : start + batch] for start in range(0, len(positions), batch)]
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def assemble() -> None:
            try:
                for index in runs:
                    if stop.is_set():
                        return
                    pixels = torch.from_numpy(self.view[index])
                    ready.put((index, pixels.pin_memory() if self.pin else pixels))
            except BaseException as error:  # handed to the training thread, which raises it
                ready.put(error)
                return
            ready.put(None)

        worker = threading.Thread(target=assemble, name="batch-prefetch", daemon=True)
        worker.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                index, pixels = item
                yield torch.from_numpy(index).to(self.device), self._on_device(pixels)
        finally:
            stop.set()
            while worker.is_alive():  # let a worker blocked on a full queue finish
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()

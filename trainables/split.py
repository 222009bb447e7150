"""The split of a data set into train, validation and test (stratified, seeded), what a trial gets
of it, and the file record that lets a later reader refuse changed data (split.json)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.cache import CachedImages, ImageView
from trainables.contract import TrialData
from trainables.datasets import DatasetError, ImageSet, resolve_source

__all__ = ["DataChanged", "Split", "check_unchanged", "file_record", "split_indices", "trial_data"]


class DataChanged(ValueError):
    """The data set's files differ from the ones a run split: its recorded indices no longer apply."""


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # indices into the ImageSet
    val: np.ndarray
    test: np.ndarray


def split_indices(
    labels: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    data_fraction: float = 1.0,
    fixed_test: np.ndarray | None = None,
) -> Split:
    """Stratified train/val/test indices, the same for the same arguments on any machine.

    ``data_fraction`` first keeps a stratified share of the data. With ``fixed_test`` the test split
    is those indices (kept in the same share) and validation is drawn from the rest.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    try:
        if fixed_test is not None:
            test = np.asarray(fixed_test)
            pool = np.setdiff1d(everything, test)
            if data_fraction < 1:
                pool = _keep(pool, labels, data_fraction, seed)
                test = _keep(test, labels, data_fraction, seed)
            # val_fraction is a share of the whole data set, so take it from the pool accordingly.
            val_share = min(0.9, val_fraction / max(1e-9, 1 - len(test) / (len(test) + len(pool))))
            train, val = train_test_split(pool, test_size=val_share, stratify=labels[pool], random_state=seed)
        else:
            pool = _keep(everything, labels, data_fraction, seed) if data_fraction < 1 else everything
            rest, test = train_test_split(
                pool, test_size=test_fraction, stratify=labels[pool], random_state=seed
            )
            train, val = train_test_split(
                rest,
                test_size=val_fraction / (1 - test_fraction),
                stratify=labels[rest],
                random_state=seed,
            )
    except ValueError as error:
        counts = np.bincount(labels)
        raise DatasetError(
            f"cannot split the data set stratified ({error}); the smallest class has "
            f"{counts[counts > 0].min()} images: every class needs enough images for train, "
            "validation and test (raise data_fraction or add images)"
        ) from None
    return Split(train=np.sort(train), val=np.sort(val), test=np.sort(test))


def _keep(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(indices, train_size=fraction, stratify=labels[indices], random_state=seed)
    return np.sort(kept)


def trial_data(images: ImageSet, split: Split, loading: str = "memory") -> TrialData:
    """The train and validation images of ``split``: views of the data cache when there is one
    (a trial then receives the cache's path and indices), else copies of the arrays."""
    if isinstance(images.images, CachedImages):
        pick = lambda index: ImageView(images.images, index)  # noqa: E731
    else:
        if loading == "stream":
            raise ValueError("streaming trials need the images in the data cache (load_dataset(..., cache_arrays=True))")
        pick = lambda index: images.images[index]  # noqa: E731
    return TrialData(
        train_images=pick(split.train),
        train_labels=images.labels[split.train],
        val_images=pick(split.val),
        val_labels=images.labels[split.val],
        classes=images.classes,
        loading=loading,
    )


def file_record(images: ImageSet) -> dict:
    """What split.json records of a file-based set: the folder, each file's relative path and size,
    and a hash of that list; {} for array sets."""
    if images.files is None:
        return {}
    return {"files_root": images.files_root, "files": [list(f) for f in images.files], "files_hash": _files_hash(images.files)}


def _files_hash(files) -> str:
    return hashlib.sha256("\n".join(f"{rel}\t{size}" for rel, size in files).encode()).hexdigest()


def check_unchanged(recorded: dict, settings: dict, where: str = "split.json") -> None:
    """Raise DataChanged naming the first file added, removed or changed since ``recorded``
    (split.json's contents) was written. Runs without decoding anything; array sets pass."""
    if "files" not in recorded:
        return
    source = resolve_source(
        settings["dataset"], settings["image_size"], settings.get("data_root") or None, settings.get("classes", "")
    )
    now = [(e[0], e[1]) for e in source.entries]
    if _files_hash(now) == recorded["files_hash"]:
        return
    before = {rel: size for rel, size in recorded["files"]}
    current = dict(now)
    root = recorded.get("files_root", source.root)
    for rel, size in now:
        if rel not in before:
            raise DataChanged(_changed(f"file {str(Path(root) / rel)!r} was added", where))
        if before[rel] != size:
            raise DataChanged(_changed(f"file {str(Path(root) / rel)!r} changed ({before[rel]} bytes then, {size} now)", where))
    for rel, _ in recorded["files"]:
        if rel not in current:
            raise DataChanged(_changed(f"file {str(Path(root) / rel)!r} was removed", where))
    raise DataChanged(_changed("the files are listed in another order", where))


def _changed(what: str, where: str) -> str:
    return (
        f"the data set changed since the run split it: {what}. The indices in {where} would now point at "
        "other images; restore the data as it was, or start a new run on the new data"
    )

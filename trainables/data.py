"""Data: load an image data set once, resize it once, split it stratified and deterministically.

Every data set becomes the same thing, an ``ImageSet``: uint8 images of shape (N, 3, S, S) and
int64 labels, small enough to hold in memory and ship to every trial through Ray's object store
(one copy per node, decoded once per run rather than once per trial or per epoch).

Sources:
- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped with the
  package, so it works offline. Upscaled bilinearly to S x S and repeated to 3 channels.
- ``digits_longtail``: the same digits, class k cut to 10 ** (-k / 9) of its images (178 of
  digit 0 down to 18 of digit 9): a deliberately imbalanced set, offline.
- ``cifar10`` / ``cifar100``: torchvision's loaders; downloaded when online. The official test
  set is kept as the test split.
- a directory in ImageFolder layout (``root/<class>/<image>``): every readable image, resized
  (shorter side to S, then centre crop). Unreadable files are skipped with a warning and counted.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "DatasetError",
    "ImageSet",
    "Split",
    "TrialData",
    "load_dataset",
    "load_image",
    "split_indices",
    "trial_data",
]

DATASETS = ("digits", "digits_longtail", "cifar10", "cifar100")
# digits_longtail: class k keeps LONGTAIL_RATIO ** (-k / 9) of its images, so the last class has
# 1 / LONGTAIL_RATIO as many as the first (about 178 down to 18): an imbalanced set that works offline.
LONGTAIL_RATIO = 10.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class DatasetError(ValueError):
    """A data set that cannot be loaded as asked: missing, empty, or not reachable offline."""


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # (N, 3, S, S) uint8
    labels: np.ndarray  # (N,) int64, indices into classes
    classes: tuple[str, ...]
    # Indices that form the data set's own test split (CIFAR's official test set); None: none.
    fixed_test: np.ndarray | None = None
    # Files that could not be read and were skipped (ImageFolder only).
    skipped: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # indices into the ImageSet
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class TrialData:
    """What a trial receives: train and validation images only. The test split never gets here."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    classes: tuple[str, ...]


def load_dataset(name: str, image_size: int, data_root: str | os.PathLike | None = None) -> ImageSet:
    """Load ``name`` (see module docstring) resized to ``image_size`` pixels."""
    if name == "digits":
        return _digits(image_size)
    if name == "digits_longtail":
        return _long_tail(_digits(image_size), LONGTAIL_RATIO)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, image_size, data_root)
    path = Path(name).expanduser()
    if path.is_dir():
        return _image_folder(path, image_size)
    if os.sep in name or name.startswith(".") or path.suffix:
        raise DatasetError(f"dataset directory {str(path)!r} does not exist")
    from trainables._names import did_you_mean

    raise DatasetError(
        f"unknown dataset {name!r}: expected one of {list(DATASETS)} or an ImageFolder directory"
        + did_you_mean(name, DATASETS)
    )


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


def trial_data(images: ImageSet, split: Split) -> TrialData:
    return TrialData(
        train_images=images.images[split.train],
        train_labels=images.labels[split.train],
        val_images=images.images[split.val],
        val_labels=images.labels[split.val],
        classes=images.classes,
    )


def _long_tail(images: ImageSet, ratio: float) -> ImageSet:
    """Keep the first ceil(n_k * ratio ** (-k / (K - 1))) images of class k (in data set order)."""
    classes = len(images.classes)
    keep = []
    for k in range(classes):
        members = np.flatnonzero(images.labels == k)
        share = ratio ** (-k / max(1, classes - 1))
        keep.append(members[: int(np.ceil(len(members) * share))])
    kept = np.sort(np.concatenate(keep))
    return ImageSet(images=images.images[kept], labels=images.labels[kept], classes=images.classes)


def _digits(image_size: int) -> ImageSet:
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.from_numpy(digits.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    resized = torch.nn.functional.interpolate(
        pixels, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    images = resized.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return ImageSet(
        images=images.numpy(),
        labels=digits.target.astype(np.int64),
        classes=tuple(str(c) for c in digits.target_names),
    )


def _cifar(name: str, image_size: int, data_root: str | os.PathLike | None) -> ImageSet:
    import torch
    import torchvision

    root = Path(data_root or Path.home() / ".cache" / "image-search" / "data").expanduser()
    loader = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        parts = [loader(str(root), train=train, download=True) for train in (True, False)]
    except Exception as error:  # torchvision raises URLError, RuntimeError or OSError offline
        raise DatasetError(
            f"dataset {name!r} is not in {root} and could not be downloaded ({error}); "
            f"connect to the internet once, or place the torchvision archive in {root}, "
            "or use --dataset digits or an ImageFolder directory"
        ) from None
    arrays = np.concatenate([p.data for p in parts])  # (N, 32, 32, 3) uint8
    labels = np.concatenate([np.asarray(p.targets) for p in parts]).astype(np.int64)
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2)
    if image_size != images.shape[-1]:
        images = _resize_uint8(images, image_size)
    return ImageSet(
        images=images.contiguous().numpy(),
        labels=labels,
        classes=tuple(parts[0].classes),
        fixed_test=np.arange(len(parts[0].data), len(arrays)),
    )


def _resize_uint8(images, image_size: int):
    import torch

    out = []
    for chunk in images.split(4096):
        resized = torch.nn.functional.interpolate(
            chunk.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(resized.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


# What reading a broken, truncated or non-image file raises (PIL's UnidentifiedImageError is an OSError).
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError)


def load_image(path: str | os.PathLike, image_size: int):
    """One image file as a (3, S, S) uint8 tensor: RGB, shorter side resized to S, centre crop.

    The preprocessing of every ImageFolder image, used again by ``predict`` so that a new image is
    seen exactly as the training images were. Raises OSError/ValueError for an unreadable file.
    """
    import torchvision.transforms.functional as TF
    from PIL import Image

    with Image.open(path) as image:
        tensor = TF.pil_to_tensor(image.convert("RGB"))
    tensor = TF.resize(tensor, image_size, antialias=True)
    return TF.center_crop(tensor, [image_size, image_size])


def _image_folder(root: Path, image_size: int) -> ImageSet:
    import torch

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(
            f"dataset directory {str(root)!r} has no class sub-folders: expected {root}/<class>/<image>"
        )
    images, labels, skipped = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DatasetError(
                f"class folder {str(class_dir)!r} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})"
            )
        read = 0
        for file in files:
            try:
                images.append(load_image(file, image_size))
            except UNREADABLE_IMAGE_ERRORS as error:
                skipped.append(f"{file}: {error}")
                continue
            labels.append(label)
            read += 1
        if read == 0:
            raise DatasetError(f"class folder {str(class_dir)!r} holds no readable images")
    if skipped:
        warnings.warn(
            f"{len(skipped)} unreadable image file(s) in {root} were skipped, e.g. {skipped[0]}",
            stacklevel=2,
        )
    return ImageSet(
        images=torch.stack(images).numpy(),
        labels=np.asarray(labels, dtype=np.int64),
        classes=tuple(p.name for p in class_dirs),
        skipped=tuple(skipped),
    )

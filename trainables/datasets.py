"""The data set catalogue: which sources exist (digits, CIFAR, STL-10, Flowers-102, Food-101,
Oxford Pets, an ImageFolder) and how each is found and listed (``resolve_source``), with its classes
selected, before anything is decoded. trainables/data.py decodes a source through the cache.

Sources:
- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped with the
  package, so it works offline. Upscaled bilinearly to S x S and repeated to 3 channels.
- ``digits_longtail``: the same digits, class k cut to 10 ** (-k / 9) of its images (178 of
  digit 0 down to 18 of digit 9): a deliberately imbalanced set, offline.
- ``cifar10`` / ``cifar100`` / ``stl10``: torchvision's loaders; downloaded when online. The
  official test set is kept as the test split (STL-10: its 13,000 labelled images only).
- ``flowers102`` / ``food101`` / ``oxford_pets``: downloaded by torchvision into the data root
  when online, then read from their files (official test split kept). Offline, a DatasetError
  says which archive to place where. ``IMAGE_SEARCH_OFFLINE=1`` skips the download attempt.
- a directory in ImageFolder layout (``root/<class>/<image>``): every readable image, resized
  (shorter side to S, then centre crop). Unreadable files are skipped with a warning and listed.

``classes`` keeps a subset: a number (the first N classes in the data set's order) or
comma-separated class names. File-based sets record each file's relative path and size
(``file_record``), so that a later reader can refuse changed data (``check_unchanged``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from trainables.images import IMAGE_SUFFIXES, resize_uint8
from trainables.names import did_you_mean

__all__ = ["DATASETS", "DEFAULT_DATA_ROOT", "DatasetError", "ImageSet", "Source", "resolve_source", "select_classes"]


DATASETS = ("digits", "digits_longtail", "cifar10", "cifar100", "stl10", "flowers102", "food101", "oxford_pets")


# Where torchvision's data sets are downloaded to and read from, unless data_root says otherwise.
DEFAULT_DATA_ROOT = "~/.cache/image-search/data"


# digits_longtail: class k keeps LONGTAIL_RATIO ** (-k / 9) of its images, so the last class has
# 1 / LONGTAIL_RATIO as many as the first (about 178 down to 18): an imbalanced set that works offline.
LONGTAIL_RATIO = 10.0


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
    # File-based sets: (relative path, bytes) of every listed file, in data set order, and the
    # folder they are relative to; None for array sets (digits, CIFAR, STL-10).
    files: tuple[tuple[str, int], ...] | None = None
    files_root: str = ""


@dataclass(frozen=True)
class Source:
    """A data set resolved and listed, not decoded yet: what ``open_source`` turns into an ImageSet."""

    name: str
    image_size: int
    classes: tuple[str, ...]
    # File-based: the folder, and (relative path, bytes, mtime ns, label) per file in data set order.
    root: str = ""
    entries: tuple[tuple[str, int, int, int], ...] = ()
    # Array-based: the images are here already (at their own size), with their labels.
    array: ImageSet | None = None
    fixed_test_files: frozenset[str] = frozenset()  # relative paths of the official test split

    @property
    def count(self) -> int:
        return len(self.array.labels) if self.array is not None else len(self.entries)

    @property
    def labels(self) -> np.ndarray:
        """Labels as listed (before unreadable files are skipped): enough to check the split."""
        if self.array is not None:
            return self.array.labels
        return np.asarray([e[3] for e in self.entries], dtype=np.int64)

    def decoded_bytes(self) -> int:
        return self.count * 3 * self.image_size**2


def resolve_source(name: str, image_size: int, data_root=None, classes: str = "") -> Source:
    """Find and list data set ``name``, keeping ``classes``; DatasetError for anything wrong."""
    root = Path(data_root or DEFAULT_DATA_ROOT).expanduser()
    if name == "digits":
        return _array_source(name, _digits(image_size), image_size, classes)
    if name == "digits_longtail":
        return _array_source(name, _long_tail(_digits(image_size), LONGTAIL_RATIO), image_size, classes)
    if name in ("cifar10", "cifar100", "stl10"):
        return _array_source(name, _torchvision_arrays(name, image_size, root), image_size, classes)
    if name in _FILE_SETS:
        return _named_file_source(name, image_size, root, classes)
    path = Path(name).expanduser()
    if path.is_dir():
        return _image_folder_source(path, image_size, classes)
    if os.sep in name or name.startswith(".") or path.suffix:
        raise DatasetError(f"dataset directory {str(path)!r} does not exist")

    raise DatasetError(
        f"unknown dataset {name!r}: expected one of {list(DATASETS)} or an ImageFolder directory"
        + did_you_mean(name, DATASETS)
    )


def select_classes(available: tuple[str, ...], classes: str, dataset: str) -> tuple[str, ...]:
    """The classes ``classes`` keeps: all (""), the first N ("10"), or the named ones ("a,b")."""

    text = str(classes).strip()
    if not text:
        return available
    if text.isdigit():
        count = int(text)
        if not 2 <= count <= len(available):
            raise DatasetError(
                f"`classes` is {text!r}, but data set {dataset!r} has {len(available)} classes: "
                f"keep between 2 and {len(available)}, or name them (comma-separated)"
            )
        return available[:count]
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name not in available:
            raise DatasetError(
                f"`classes` names {name!r}, but data set {dataset!r} has no such class"
                + did_you_mean(name, available)
                + f"; its classes are {list(available[:12])}{' ...' if len(available) > 12 else ''}"
            )
    if len(set(names)) < 2:
        raise DatasetError(f"`classes` is {text!r}, but a classifier needs at least 2 different classes")
    return tuple(name for name in available if name in names)  # the data set's own order


def _array_source(name: str, images: ImageSet, image_size: int, classes: str) -> Source:
    chosen = select_classes(images.classes, classes, name)
    if chosen != images.classes:
        old = [images.classes.index(c) for c in chosen]
        keep = np.flatnonzero(np.isin(images.labels, old))
        remap = np.full(len(images.classes), -1, dtype=np.int64)
        remap[old] = np.arange(len(old))
        fixed = None
        if images.fixed_test is not None:
            fixed = np.flatnonzero(np.isin(keep, images.fixed_test))
        images = ImageSet(images=images.images[keep], labels=remap[images.labels[keep]], classes=chosen, fixed_test=fixed)
    return Source(name=name, image_size=image_size, classes=chosen, array=images)


def _listed(root: Path, relative: Iterable[tuple[str, int]], classes: tuple[str, ...], image_size: int, name: str,
            fixed_test: frozenset[str] = frozenset()) -> Source:  # fmt: skip
    entries = []
    for rel, label in relative:
        try:
            stat = (root / rel).stat()
        except OSError as error:
            raise DatasetError(f"data set {name!r}: file {str(root / rel)!r} is listed but cannot be read ({error.strerror})") from None
        entries.append((rel, stat.st_size, stat.st_mtime_ns, label))
    return Source(name=name, image_size=image_size, classes=classes, root=str(root), entries=tuple(entries),
                  fixed_test_files=fixed_test)  # fmt: skip


def _image_folder_source(root: Path, image_size: int, classes: str) -> Source:
    root = root.resolve()
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(
            f"dataset directory {str(root)!r} has no class sub-folders: expected {root}/<class>/<image>"
        )
    chosen = select_classes(tuple(p.name for p in class_dirs), classes, str(root))
    listed = []
    for label, name in enumerate(chosen):
        class_dir = root / name
        files = sorted(
            p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DatasetError(
                f"class folder {str(class_dir)!r} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})"
            )
        listed += [(str(p.relative_to(root)), label) for p in files]
    return _listed(root, listed, chosen, image_size, str(root))


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


# Where each torchvision set's archives go (relative to the data root), for the offline error.
_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "stl10": ("stl10_binary.tar.gz", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"),
    "food101": ("food-101.tar.gz", "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz"),
    "flowers102": (
        "flowers-102/102flowers.tgz, flowers-102/imagelabels.mat and flowers-102/setid.mat",
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
    ),
    "oxford_pets": (
        "oxford-iiit-pet/images.tar.gz and oxford-iiit-pet/annotations.tar.gz",
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/",
    ),
}


def _offline() -> bool:
    return os.environ.get("IMAGE_SEARCH_OFFLINE", "").strip() not in ("", "0")


def _not_available(name: str, root: Path, error: object) -> DatasetError:
    archive, url = _ARCHIVES[name]
    return DatasetError(
        f"dataset {name!r} is not in {root} and could not be downloaded ({error}); connect to the internet "
        f"once, or download {url} yourself and place {archive} in {root} (it is checked and extracted there "
        "on the next run), or use --dataset digits or an ImageFolder directory"
    )


def _download(name: str, root: Path, make: Callable[[], Any]) -> Any:
    """Run torchvision's downloading constructor ``make``; a DatasetError saying where the archive
    goes when it fails (offline), or at once with IMAGE_SEARCH_OFFLINE=1 and no archive there."""
    if _offline():
        archives = [root / part.strip() for part in _ARCHIVES[name][0].replace(" and ", ",").split(",")]
        if not all(path.is_file() for path in archives):
            raise _not_available(name, root, "IMAGE_SEARCH_OFFLINE is set")
    try:
        return make()
    except Exception as error:  # torchvision raises URLError, RuntimeError or OSError offline
        raise _not_available(name, root, error) from None


def _torchvision_arrays(name: str, image_size: int, root: Path) -> ImageSet:
    import torch
    import torchvision

    if name == "stl10":
        parts = _download(name, root, lambda: [torchvision.datasets.STL10(str(root), split=s, download=True) for s in ("train", "test")])
        arrays = np.concatenate([p.data for p in parts]).transpose(0, 2, 3, 1)  # (N, 96, 96, 3) uint8
        labels = np.concatenate([np.asarray(p.labels) for p in parts]).astype(np.int64)
    else:
        loader = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        parts = _download(name, root, lambda: [loader(str(root), train=train, download=True) for train in (True, False)])
        arrays = np.concatenate([p.data for p in parts])  # (N, 32, 32, 3) uint8
        labels = np.concatenate([np.asarray(p.targets) for p in parts]).astype(np.int64)
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2)
    if image_size != images.shape[-1]:
        images = resize_uint8(images, image_size)
    return ImageSet(
        images=images.contiguous().numpy(),
        labels=labels,
        classes=tuple(parts[0].classes),
        fixed_test=np.arange(len(parts[0].data), len(arrays)),
    )


def _named_file_source(name: str, image_size: int, root: Path, classes: str) -> Source:
    """flowers102, food101, oxford_pets: downloaded by torchvision, read from their own file lists."""
    import torchvision

    datasets = torchvision.datasets
    if name == "food101":
        base = root / "food-101"
        if not (base / "meta" / "train.json").is_file():
            _download(name, root, lambda: datasets.Food101(str(root), split="train", download=True))
        import json

        parts = {split: json.loads((base / "meta" / f"{split}.json").read_text()) for split in ("train", "test")}
        available = tuple(sorted(parts["train"]))
        chosen = select_classes(available, classes, name)
        listed, test = [], set()
        for split, meta in parts.items():
            for label, class_name in enumerate(chosen):
                for rel in meta[class_name]:
                    listed.append((f"images/{rel}.jpg", label))
                    if split == "test":
                        test.add(f"images/{rel}.jpg")
        return _listed(base, listed, chosen, image_size, name, frozenset(test))
    if name == "oxford_pets":
        base = root / "oxford-iiit-pet"
        if not (base / "annotations" / "trainval.txt").is_file():
            _download(name, root, lambda: datasets.OxfordIIITPet(str(root), split="trainval", download=True))
        rows = {split: [line.split() for line in (base / "annotations" / f"{split}.txt").read_text().splitlines() if line.strip()]
                for split in ("trainval", "test")}  # fmt: skip
        # Class names as torchvision's: the image name's breed part, title-cased.
        by_number = {int(r[1]) - 1: " ".join(p.title() for p in r[0].rsplit("_", 1)[0].split("_")) for r in rows["trainval"]}
        available = tuple(by_number[k] for k in sorted(by_number))
        chosen = select_classes(available, classes, name)
        label_of = {available.index(c): k for k, c in enumerate(chosen)}
        listed, test = [], set()
        for split, lines in rows.items():
            for r in lines:
                if int(r[1]) - 1 in label_of:
                    listed.append((f"images/{r[0]}.jpg", label_of[int(r[1]) - 1]))
                    if split == "test":
                        test.add(f"images/{r[0]}.jpg")
        return _listed(base, listed, chosen, image_size, name, frozenset(test))
    # flowers102
    base = root / "flowers-102"
    if not all((base / f).is_file() for f in ("imagelabels.mat", "setid.mat")) or not (base / "jpg").is_dir():
        _download(name, root, lambda: datasets.Flowers102(str(root), split="train", download=True))
    from scipy.io import loadmat

    labels = loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"] - 1
    test_ids = set(np.atleast_1d(loadmat(base / "setid.mat", squeeze_me=True)["tstid"]).tolist())
    available = tuple(datasets.Flowers102.classes)
    chosen = select_classes(available, classes, name)
    label_of = {available.index(c): k for k, c in enumerate(chosen)}
    listed = [(f"jpg/image_{i:05d}.jpg", label_of[int(label)]) for i, label in enumerate(labels, 1) if int(label) in label_of]
    test = frozenset(f"jpg/image_{i:05d}.jpg" for i in test_ids)
    return _listed(base, listed, chosen, image_size, name, test)


_FILE_SETS = ("flowers102", "food101", "oxford_pets")

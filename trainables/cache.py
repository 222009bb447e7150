"""The decoded-once image cache: uint8 pixels in memory-mapped shards, shared by every trial.

A data set is decoded once (by ``build``'s ``map``: Ray tasks over the cluster's CPUs when the
engine builds it, a plain serial ``map`` in tests and analysis; each task writes its own shard,
``write_shard``), and every trial, retrain, predict and later run of the same data reads the
same files. Layout of ``CACHE_ROOT/<key>/``::

    manifest.json      format, key, what it was built from, image size, classes, image count,
                       per shard: file, first image, image count, bytes, sha256; content_hash
    labels.npy         (N,) int64, indices into the classes
    shard-00000.npy    (n, 3, S, S) uint8 in numpy's .npy format (v1), n <= the chunk size;
    shard-00001.npy    opened with ``np.load(mmap_mode="r")``, so the OS page cache holds one
    ...                copy per node for all of its trials

``key`` is a hash of the source, its file list (relative paths, sizes, modification times), the
stored image size and the preprocessing: any change there is a new cache, never a stale one.

Writes are atomic: a new cache is built in a hidden sibling folder and renamed into place; a
rebuilt shard is written beside the old one and renamed over it. Builders of one key take an
exclusive ``flock`` on ``CACHE_ROOT/<key>.lock``: the second waits and then finds the cache ready.
``build_or_open`` (the driver, once per run; retrain and predict too) checks every shard's sha256
and decodes a truncated or corrupted shard again; trials then map the shards it checked.
``open_cache(verify="size")`` checks shapes and sizes only (cheap: whether a cache is there).
Nothing here imports Ray.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "CACHE_FORMAT",
    "CacheDamaged",
    "CacheError",
    "CachedImages",
    "Decoded",
    "DEFAULT_CACHE",
    "ImageView",
    "ShardJob",
    "Written",
    "build_or_open",
    "cache_key",
    "check_writable",
    "open_cache",
    "open_complete",
    "write_shard",
]

CACHE_FORMAT = 1
# Where caches go unless --data-cache says otherwise (on a cluster: a folder on shared storage).
DEFAULT_CACHE = "~/.cache/image-search/cache"
_HASH_BLOCK = 8 * 2**20  # bytes read at a time while hashing a shard


class CacheError(ValueError):
    """A cache directory that cannot be used: not writable, or too little free space."""


class CacheDamaged(CacheError):
    """A cache that should be complete (a finished run's) is missing, or a shard of it is damaged."""


@dataclass(frozen=True)
class Decoded:
    """One chunk's decoded images: what a decode task returns and one shard holds."""

    images: np.ndarray  # (n, 3, S, S) uint8
    labels: np.ndarray  # (n,) int64
    skipped: tuple[str, ...] = ()  # "path: error" of files that could not be read


@dataclass(frozen=True)
class ShardJob:
    """One shard to make: decode ``chunk`` and write its images to ``path``."""

    chunk: Callable[[], Decoded]
    path: str
    image_size: int


@dataclass(frozen=True)
class Written:
    """A shard on disk, as ``write_shard`` reports it back to the driver."""

    labels: np.ndarray  # (n,) int64
    skipped: tuple[str, ...]
    bytes: int
    sha256: str


def write_shard(job: ShardJob) -> Written:
    """Decode one chunk and write its shard: the function every ``map`` given to ``build_or_open``
    applies. It runs where the decode runs (a Ray task, when the engine builds), so only labels and
    a digest travel back, and shards are written in parallel, not by the driver one by one."""
    decoded = job.chunk()
    digest = _write_array(Path(job.path), _checked(decoded, job.image_size))
    labels = np.asarray(decoded.labels, dtype=np.int64)
    return Written(labels=labels, skipped=tuple(decoded.skipped), bytes=os.path.getsize(job.path), sha256=digest)


def cache_key(description: dict[str, Any]) -> str:
    """Hex digest (24 characters) of what a cache's content depends on."""
    text = json.dumps({"format": CACHE_FORMAT} | description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def check_writable(root: str | os.PathLike, needed_bytes: int) -> Path:
    """Create ``root`` if needed and check that ``needed_bytes`` fit; CacheError naming the folder."""
    root = Path(root).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as error:
        raise CacheError(
            f"data cache directory {str(root)!r} is not writable ({error.strerror or error}); "
            "choose another with --data-cache DIR"
        ) from None
    free = shutil.disk_usage(root).free
    if needed_bytes > free:
        raise CacheError(
            f"data cache directory {str(root)!r} has {free / 2**30:.2f} GiB free, but the decoded images need "
            f"about {needed_bytes / 2**30:.2f} GiB; free space there or choose another with --data-cache DIR"
        )
    return root


class CachedImages:
    """A complete cache as one read-only (N, 3, S, S) uint8 array-like over its memory-mapped shards.

    Indexing with an int, a slice or an index array returns a numpy array (a copy). Pickling keeps
    only the folder, so a trial receives a path and maps the shards itself.
    """

    def __init__(self, directory: str | os.PathLike, manifest: dict | None = None):
        self.directory = Path(directory)
        self.manifest = manifest if manifest is not None else _read_manifest(self.directory)
        size = self.manifest["image_size"]
        self.shape = (self.manifest["count"], 3, size, size)
        self.dtype = np.dtype(np.uint8)
        self.starts = np.asarray([s["start"] for s in self.manifest["shards"]] + [self.shape[0]], dtype=np.int64)
        self._shards: list[np.ndarray | None] = [None] * len(self.manifest["shards"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def labels(self) -> np.ndarray:
        return np.load(self.directory / "labels.npy")

    def shard(self, number: int) -> np.ndarray:
        if self._shards[number] is None:
            self._shards[number] = np.load(self.directory / self.manifest["shards"][number]["file"], mmap_mode="r")
        return self._shards[number]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            position = int(index) + (len(self) if index < 0 else 0)
            number = int(np.searchsorted(self.starts, position, side="right") - 1)
            return np.array(self.shard(number)[position - self.starts[number]])
        if isinstance(index, slice):
            return self.gather(np.arange(len(self))[index])
        return self.gather(np.asarray(index))

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Images at ``index`` (any order, repeats allowed), read shard by shard."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        out = np.empty((len(index), *self.shape[1:]), dtype=np.uint8)
        if not len(index):
            return out
        numbers = np.searchsorted(self.starts, index, side="right") - 1
        for number in np.unique(numbers):
            where = np.flatnonzero(numbers == number)
            local = index[where] - self.starts[number]
            order = np.argsort(local, kind="stable")  # ascending reads: sequential on disk
            out[where[order]] = self.shard(int(number))[local[order]]
        return out

    def __array__(self, dtype=None, copy=None):
        whole = self.gather(np.arange(len(self)))
        return whole if dtype is None else whole.astype(dtype)

    def __getstate__(self):
        return {"directory": str(self.directory), "manifest": self.manifest}

    def __setstate__(self, state):
        self.__init__(state["directory"], state["manifest"])


class ImageView:
    """The images of ``base`` at ``index``, read on demand; pickles as the cache folder and indices."""

    def __init__(self, base: CachedImages, index: np.ndarray):
        self.base, self.index = base, np.asarray(index, dtype=np.int64)
        self.shape = (len(self.index), *base.shape[1:])
        self.dtype = base.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.base[int(self.index[index])]
        return self.base.gather(self.index[index])

    def __array__(self, dtype=None, copy=None):
        whole = self.base.gather(self.index)
        return whole if dtype is None else whole.astype(dtype)


def open_cache(directory: str | os.PathLike, verify: str = "size") -> CachedImages | None:
    """The cache in ``directory``, or None when it is missing or a shard fails ``verify``
    ("size": shapes and byte counts, cheap; "hash": every shard's sha256 as well)."""
    directory = Path(directory)
    try:
        manifest = _read_manifest(directory)
    except (OSError, ValueError, KeyError):
        return None
    if _bad_shards(directory, manifest, verify) or not (directory / "labels.npy").is_file():
        return None
    return CachedImages(directory, manifest)


def open_complete(directory: str | os.PathLike, verify: str = "hash") -> CachedImages:
    """The cache in ``directory``, which must be complete: CacheDamaged naming what is missing or
    which shard fails ``verify`` otherwise (a reader that must not decode again: retrain, predict)."""
    directory = Path(directory)
    try:
        manifest = _read_manifest(directory)
    except (OSError, ValueError, KeyError) as error:
        what = "is missing" if not (directory / "manifest.json").exists() else f"cannot be read ({error})"
        raise CacheDamaged(f"data cache {directory}: its manifest.json {what}") from None
    if not (directory / "labels.npy").is_file():
        raise CacheDamaged(f"data cache {directory}: its labels.npy is missing")
    bad = _bad_shards(directory, manifest, verify)
    if bad:
        files = [manifest["shards"][n]["file"] for n in bad]
        states = ["missing" if not (directory / f).is_file() else "truncated or corrupted" for f in files]
        named = ", ".join(f"{f} ({state})" for f, state in zip(files[:3], states))
        raise CacheDamaged(
            f"data cache {directory}: {len(bad)} of {len(manifest['shards'])} shard(s) damaged: {named}"
            + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        )
    return CachedImages(directory, manifest)


def build_or_open(
    root: str | os.PathLike,
    key: str,
    chunks: Sequence[Callable[[], Decoded]],
    description: dict[str, Any],
    classes: Sequence[str],
    image_size: int,
    map: Callable[[Callable, Iterable], Iterable] = map,
    out: Callable[[str], None] = print,
    needed_bytes: int = 0,
) -> CachedImages:
    """Open cache ``key`` under ``root``, building it from ``chunks`` first if needed.

    Each chunk is a picklable zero-argument callable returning ``Decoded``; chunk i becomes shard i.
    ``map(run_chunk, chunks)`` decodes them, yielding results in order (the engine passes one
    backed by Ray tasks). Every shard is verified by its sha256; bad ones are decoded again.
    """
    directory = Path(root).expanduser() / key
    ready = open_cache(directory, verify="hash")
    if ready is not None:
        out(f"data cache: reusing {directory} ({len(ready)} images, 0 decoded)")
        return ready
    root = check_writable(Path(root).expanduser(), needed_bytes)
    with _locked(root / f"{key}.lock"):
        # Another builder may have finished while this one waited for the lock.
        try:
            manifest = _read_manifest(directory)
        except (OSError, ValueError, KeyError):
            manifest = None
        if manifest is not None:
            bad = _bad_shards(directory, manifest, "hash")
            if not bad and (directory / "labels.npy").is_file():
                out(f"data cache: reusing {directory} ({manifest['count']} images, 0 decoded)")
                return CachedImages(directory, manifest)
            if bad and (directory / "labels.npy").is_file() and len(manifest["shards"]) == len(chunks):
                _rebuild_shards(directory, manifest, chunks, bad, map, out)
                return CachedImages(directory, manifest)
        _build(root, directory, key, chunks, description, classes, image_size, map, out)
        return CachedImages(directory)


def _build(root, directory, key, chunks, description, classes, image_size, map, out) -> None:
    building = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}.build-"))
    try:
        shards, labels, skipped, start = [], [], [], 0
        jobs = [ShardJob(chunk, str(building / f"shard-{number:05d}.npy"), image_size) for number, chunk in enumerate(chunks)]
        for job, written in zip(jobs, map(write_shard, jobs)):
            _check_written(job, written)
            shards.append({"file": Path(job.path).name, "start": start, "count": len(written.labels),
                           "bytes": written.bytes, "sha256": written.sha256})  # fmt: skip
            labels.append(written.labels)
            skipped.extend(written.skipped)
            start += len(written.labels)
        labels_array = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        _write_array(building / "labels.npy", labels_array)
        manifest = {
            "format": CACHE_FORMAT,
            "key": key,
            "built_from": description,
            "image_size": image_size,
            "classes": list(classes),
            "count": start,
            "shards": shards,
            "skipped": skipped,
            "content_hash": _content_hash(shards, labels_array),
        }
        _write_file(building / "manifest.json", json.dumps(manifest, indent=1, default=str).encode())
        if directory.exists():  # a cache with a broken manifest or labels: replace it whole
            broken = directory.with_name(f".{key}.broken-{os.getpid()}")
            os.replace(directory, broken)
            shutil.rmtree(broken, ignore_errors=True)
        os.replace(building, directory)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    out(f"data cache: decoded {start} images into {len(shards)} shard(s) in {directory}"
        + (f"; {len(skipped)} unreadable file(s) skipped" if skipped else ""))  # fmt: skip


def _rebuild_shards(directory: Path, manifest: dict, chunks, bad: list[int], map, out) -> None:
    labels = np.load(directory / "labels.npy")
    jobs = [ShardJob(chunks[number], str(directory / f".{manifest['shards'][number]['file']}.{os.getpid()}.tmp"),
                     manifest["image_size"]) for number in bad]  # fmt: skip
    for number, job, written in zip(bad, jobs, map(write_shard, jobs)):
        entry, temporary = manifest["shards"][number], Path(job.path)
        _check_written(job, written)
        expected = labels[entry["start"] : entry["start"] + entry["count"]]
        if len(written.labels) != entry["count"] or not np.array_equal(written.labels, expected):
            temporary.unlink(missing_ok=True)
            raise RuntimeError(f"shard {entry['file']} of {directory} decodes differently now; delete {directory} to rebuild it")
        if written.sha256 != entry["sha256"]:
            temporary.unlink(missing_ok=True)
            raise RuntimeError(f"shard {entry['file']} of {directory} decodes to other pixels now; delete {directory} to rebuild it")
        os.replace(temporary, directory / entry["file"])
    out(f"data cache: {len(bad)} truncated or corrupted shard(s) of {directory} decoded again "
        f"({sum(manifest['shards'][n]['count'] for n in bad)} images): {[manifest['shards'][n]['file'] for n in bad]}")  # fmt: skip


def _check_written(job: ShardJob, written: Written) -> None:
    """CacheError unless the shard a decode task wrote is where the driver sees it, whole: a task on
    another node writes to that node's disk unless the cache is on storage both see."""
    path = Path(job.path)
    if not path.is_file() or path.stat().st_size != written.bytes:
        raise CacheError(
            f"the decode task's shard {path.name} is not in {path.parent} as written ({written.bytes} bytes): on a "
            "cluster, --data-cache must be a folder on storage every node sees"
        )


def _checked(decoded: Decoded, image_size: int) -> np.ndarray:
    images = np.ascontiguousarray(decoded.images, dtype=np.uint8)
    if len(images) and images.shape[1:] != (3, image_size, image_size):
        raise ValueError(f"a decoded chunk has shape {images.shape}, but the cache stores (n, 3, {image_size}, {image_size})")
    return images.reshape(len(images), 3, image_size, image_size)


def _read_manifest(directory: Path) -> dict:
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {manifest.get('format')} is not {CACHE_FORMAT}")
    return manifest


def _bad_shards(directory: Path, manifest: dict, verify: str) -> list[int]:
    """Numbers of shards that are missing, truncated, of the wrong shape or (``verify="hash"``) altered."""
    bad = []
    size = manifest["image_size"]
    for number, entry in enumerate(manifest["shards"]):
        path = directory / entry["file"]
        try:
            if path.stat().st_size != entry["bytes"]:
                raise ValueError("size")
            array = np.load(path, mmap_mode="r")
            if array.dtype != np.uint8 or array.shape != (entry["count"], 3, size, size):
                raise ValueError("shape")
            del array
            if verify == "hash" and _file_hash(path) != entry["sha256"]:
                raise ValueError("hash")
        except (OSError, ValueError):
            bad.append(number)
    return bad


def _content_hash(shards: list[dict], labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for entry in shards:
        digest.update(entry["sha256"].encode())
    digest.update(hashlib.sha256(labels.tobytes()).hexdigest().encode())
    return digest.hexdigest()


class _Hashing:
    """A file that hashes what is written to it, so a shard is not read back to be hashed."""

    def __init__(self, file):
        self.file, self.digest = file, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.file.write(data)


def _write_array(path: Path, array: np.ndarray) -> str:
    """Save ``array`` as .npy at ``path`` (fsynced); return the file's sha256 (as _file_hash gives).

    The bytes are ``np.save``'s (format 1.0: the header, then the data in C order), but the data
    goes to the file and the hash from the array's own memory, where ``np.save`` to a file-like
    object copies it chunk by chunk (tests/trainables/test_cache.py compares the two)."""
    from numpy.lib import format as npy

    array = np.ascontiguousarray(array)
    with open(path, "wb") as file:
        hashing = _Hashing(file)
        npy.write_array_header_1_0(hashing, npy.header_data_from_array_1_0(array))
        hashing.write(memoryview(array.reshape(-1)).cast("B"))
        file.flush()
        os.fsync(file.fileno())
    return hashing.digest.hexdigest()


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

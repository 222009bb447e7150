"""Data loading at real size: the decoded-once cache, streaming against in-memory trials, and the
private memory of the driver and of one trial, side by side in one run.

    python benchmarks/data_loading.py [--images 20000] [--small 5000] [--workdir /tmp/data-loading-bench]
    python benchmarks/data_loading.py --only decode  # the decode figures alone (about 5 minutes idle)

Data: a generated ImageFolder of ``--images`` JPEGs (10 classes) at mixed sizes (random crops of
scikit-learn's two sample photos, 80 to 400 px a side, flipped at random), stored at 128 px; the
``--small`` set is the first images of each class of it (hard links). Everything is generated
under ``--workdir``, never in the repository. What it prints:

- Decode, images/s on the small set, five ways side by side in one Ray session, in the order
  A B C D E E D C B A A B C D E: the bare loop of ``trainables.decode.decode_image`` over the
  files in one process and in two (the limit: no cache, no Ray); the cache build before version 2
  (full-size decode and torchvision's resize in 1024-image tasks, each task's pixels sent back to
  the driver, which writes each shard and reads it back to hash it: benchmarks/_decode_before.py,
  2 workers, as the engine ran it); the cache build with 1 and 2 decode workers (Ray tasks
  through the engine's ``ray_map``; one worker = tasks that each hold both CPUs; before each
  Ray way's clock, its workers are started and warm). Targets: cache build >= 0.85x the bare loop
  with as many processes, >= 3x the build before, 2 workers >= 1.7x 1. Where the build's time goes
  beside the bare loop: benchmarks/shard_write.py.
- Trial epochs, images/s of a trial's second epoch, streaming (``loading="stream"``) against in
  memory, on the same data and split, order M S S M M S. Target: streaming >= 0.9x.
- Peak private memory (RssAnon, sampled every 20 ms) of a driver that builds the cache with Ray
  tasks, splits it and pickles what the trials get, and of one trial process, at both sizes.
  Target: going from the small to the large set adds < 15% of the extra decoded size.
- A second run on the same data (the cache opened again): images decoded (target 0) and shards rewritten.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

from _common import REPO  # noqa: F401  (puts this checkout on the import path)

# Ray's workers import benchmarks/_decode_before.py (the decode before version 2) by name.
os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent), os.environ["PYTHONPATH"]])

STORED = 128  # px: the size the cache stores
# A trial with random-resized crops: both paths read 128 px images and sample 32 px crops per batch.
TRIAL = {"model": "scratch_resnet", "conv_blocks": 1, "base_width": 16, "batch_size": 128, "optimizer": "adam",
         "lr": 1e-3, "max_epochs": 2, "image_size": 32, "threads": 2, "hflip": True, "crop_scale": 0.35}  # fmt: skip
# For the memory figures only: one epoch of 16 px crops (the data path is the same, the compute less).
MEMORY_TRIAL = TRIAL | {"max_epochs": 1, "image_size": 16}


def generate(folder: Path, count: int, classes: int = 10) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    if folder.is_dir() and sum(1 for _ in folder.rglob("*.jpg")) == count:
        return
    shutil.rmtree(folder, ignore_errors=True)
    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for i in range(count):
        k = i % classes
        photo = photos[k % 2]
        h, w = (int(v) for v in rng.integers(80, 400, size=2))
        y, x = int(rng.integers(0, photo.shape[0] - h)), int(rng.integers(0, photo.shape[1] - w))
        crop = photo[y : y + h, x : x + w]
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        target = folder / f"class{k}"
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(target / f"{i:06d}.jpg", quality=85)


def subset(folder: Path, small: Path, count: int, classes: int = 10) -> None:
    if small.is_dir() and sum(1 for _ in small.rglob("*.jpg")) == count:
        return
    shutil.rmtree(small, ignore_errors=True)
    for k in range(classes):
        (small / f"class{k}").mkdir(parents=True)
        for path in sorted((folder / f"class{k}").iterdir())[: count // classes]:
            os.link(path, small / f"class{k}" / path.name)


class PeakAnon:
    """The peak RssAnon of this process, sampled by a thread."""

    def __init__(self, every_s: float = 0.02):
        self.peak, self.every_s, self.stop = 0, every_s, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.every_s)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.now())


def _ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False,
             _node_ip_address="127.0.0.1")  # fmt: skip  (a new session, even beside a `ray start` cluster)
    return ray


def _warm(ray, cpus_per_task: float) -> None:
    """Start, before a Ray way's clock, as many workers as its tasks run at once, their imports
    done, as in a running search. Ray keeps about one idle worker per CPU and stops the others, so
    a 2-worker build right after a 1-worker one (tasks of 2 CPUs) would otherwise time the start
    of a worker process as well."""

    def imports(hold_s: float) -> int:  # defined here, so that Ray sends it by value
        import _decode_before  # noqa: F401
        import torchvision.transforms.functional  # noqa: F401  (what decoding before version 2 imports)

        import trainables.data  # noqa: F401

        time.sleep(hold_s)  # concurrent calls land on distinct workers
        return os.getpid()

    task = ray.remote(num_cpus=cpus_per_task)(imports)
    workers = int(ray.cluster_resources()["CPU"] // cpus_per_task)
    for _ in range(20):  # a worker Ray starts now serves the next round (a start takes a while)
        pids = ray.get([task.remote(0.3) for _ in range(workers)])
        if len(set(pids)) == workers:
            return
    raise RuntimeError(f"Ray ran {workers} concurrent tasks on workers {pids}, 20 times over")


DECODE_WAYS = ("bare loop, 1 process", "bare loop, 2 processes", "cache build before, 2 workers",
               "cache build, 1 worker", "cache build, 2 workers")  # fmt: skip


def bare_decode(paths: list[str]) -> int:
    """The limit: ``decode_image`` over ``paths`` in a plain loop, nothing kept; how many it decoded."""
    from trainables.decode import decode_image

    for path in paths:
        decode_image(path, STORED)
    return len(paths)


def decode_rates(folder: str, cache: str, order: list[str]) -> list[tuple[str, float]]:
    """Decode ``folder`` from scratch each of the ``DECODE_WAYS`` in ``order``, in one Ray session;
    (way, images/s) for each. A cache build's time includes writing and hashing its shards."""
    import functools
    from concurrent.futures import ProcessPoolExecutor

    from _decode_before import PREPROCESSING_BEFORE, chunks_before, map_before

    from search.engine import ray_map
    from trainables.cache import build_or_open, cache_key
    from trainables.data import open_source
    from trainables.datasets import resolve_source

    ray = _ray()
    source = resolve_source(folder, STORED)
    paths = [str(Path(source.root) / entry[0]) for entry in source.entries]
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    list(pool.map(bare_decode, [paths[:1], paths[1:2]]))  # started and imported before any clock
    rates = []
    try:
        for way in order:
            shutil.rmtree(cache, ignore_errors=True)
            if "worker" in way:
                _warm(ray, 2.0 if way == "cache build, 1 worker" else 1.0)
            started = time.perf_counter()
            if way == "bare loop, 1 process":
                count = bare_decode(paths)
            elif way == "bare loop, 2 processes":
                count = sum(pool.map(bare_decode, [paths[0::2], paths[1::2]]))
            elif way == "cache build before, 2 workers":
                description = {"source": source.root, "count": source.count, "preprocessing": PREPROCESSING_BEFORE}
                count = len(build_or_open(cache, cache_key(description), chunks_before(source), description, source.classes,
                                          STORED, map=map_before(ray_map), out=lambda line: None))  # fmt: skip
            else:
                cpus_per_task = 2.0 if way == "cache build, 1 worker" else 1.0
                count = len(open_source(source, cache, out=lambda line: None,
                                        decode_map=functools.partial(ray_map, cpus_per_task=cpus_per_task)).labels)  # fmt: skip
            rates.append((way, count / (time.perf_counter() - started)))
    finally:
        pool.shutdown()
        ray.shutdown()
        shutil.rmtree(cache, ignore_errors=True)
    return rates


def driver(folder: str, cache: str) -> dict:
    """What the engine's driver does for data: build the cache with Ray tasks (2 workers), split,
    pickle the trial data; then open it again as a second run would."""
    import pickle

    from search.engine import ray_map
    from trainables.data import open_source
    from trainables.datasets import resolve_source
    from trainables.split import split_indices, trial_data

    ray = _ray()
    _warm(ray, 1.0)
    lines: list[str] = []
    try:
        with PeakAnon() as memory:
            started = time.perf_counter()
            images = open_source(resolve_source(folder, STORED), cache, decode_map=ray_map, out=lines.append)
            seconds = time.perf_counter() - started
            split = split_indices(images.labels, 0.2, 0.2, seed=0)
            shipped = len(pickle.dumps(trial_data(images, split, loading="stream")))
        stamps = {p: p.stat().st_mtime_ns for p in Path(cache).glob("*/shard-*.npy")}
        open_source(resolve_source(folder, STORED), cache, decode_map=ray_map, out=lines.append)
        rewritten = sum(p.stat().st_mtime_ns != t for p, t in stamps.items())
    finally:
        ray.shutdown()
    return {"seconds": seconds, "images": len(images.labels), "peak_anon": memory.peak, "shipped_bytes": shipped,
            "first_log": lines[0], "second_log": lines[-1], "rewritten": rewritten, "shards": len(stamps)}  # fmt: skip


def trial(folder: str, cache: str, loading: str, config: dict = TRIAL) -> dict:
    """One trial process: train ``config``; its last epoch's images/s and its peak RssAnon."""
    from trainables.classifier import train_classifier
    from trainables.data import load_dataset
    from trainables.split import split_indices, trial_data

    images = load_dataset(folder, STORED, cache=cache, out=lambda line: None)
    data = trial_data(images, split_indices(images.labels, 0.2, 0.2, seed=0), loading=loading)
    reports: list[dict] = []
    with PeakAnon() as memory:
        train_classifier(config, data, reports.append)
    return {"images_per_s": reports[-1]["images_per_s"], "peak_anon": memory.peak}


def in_child(function, *args):
    """Run ``function(*args)`` in a fresh spawned process (its own memory), return its result.
    (Not a daemon, unlike a multiprocessing.Pool's: the decode figures start processes of their own.)"""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def spread(values) -> str:
    return f"min {min(values):.1f} / median {statistics.median(values):.1f} / max {max(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=5_000)
    parser.add_argument("--workdir", default="/tmp/data-loading-bench")
    parser.add_argument("--only", choices=("all", "trials", "decode"), default="all",
                        help="trials: skip generating and building (the caches exist from a full run); "
                             "decode: the decode figures alone")
    args = parser.parse_args()
    work = Path(args.workdir)
    large, small = work / f"folder{args.images}", work / f"folder{args.small}"
    if args.only == "trials":
        main_trials(args, work, large, small, {})
        return
    started = time.perf_counter()
    generate(large, args.images)
    subset(large, small, args.small)
    for path in large.rglob("*.jpg"):  # the files in the page cache for every build alike
        path.read_bytes()
    print(f"data: {args.images} and {args.small} JPEGs in {work} (generated/read in {time.perf_counter() - started:.0f} s), stored at {STORED} px")

    decode(small, work, args.small)
    if args.only == "decode":
        return

    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    drivers = {n: in_child(driver, str(folder), str(cache / str(n))) for n, folder in ((args.small, small), (args.images, large))}
    for n, result in drivers.items():
        print(f"driver, {n} images: cache built in {result['seconds']:.1f} s ({n / result['seconds']:.0f} images/s, 2 workers), "
              f"peak RssAnon {result['peak_anon'] / 2**20:.0f} MiB, trial data pickled {result['shipped_bytes'] / 2**10:.0f} KiB")  # fmt: skip
        print(f"  first run: {result['first_log']!r}")
        print(f"  second run: {result['second_log']!r}; shards rewritten: {result['rewritten']} of {result['shards']}")

    main_trials(args, work, large, small, {n: r["peak_anon"] for n, r in drivers.items()})


def decode(folder: Path, work: Path, count: int, repeats: int = 3) -> None:
    order = [w for r in range(repeats) for w in (DECODE_WAYS if r % 2 == 0 else DECODE_WAYS[::-1])]
    rates: dict[str, list[float]] = {way: [] for way in DECODE_WAYS}
    load_before = _load()
    for way, rate in in_child(decode_rates, str(folder), str(work / "cache-build"), order):
        rates[way].append(rate)
    print(f"decode, {count} images stored at {STORED} px, images/s (load average {load_before} before):")
    for way in DECODE_WAYS:
        print(f"  {way:31s} {spread(rates[way])}")
    median = {way: statistics.median(values) for way, values in rates.items()}
    print(f"  cache build / bare loop (medians): 1 worker {median['cache build, 1 worker'] / median['bare loop, 1 process']:.2f}, "
          f"2 workers {median['cache build, 2 workers'] / median['bare loop, 2 processes']:.2f} (target >= 0.85)")  # fmt: skip
    print(f"  cache build, 2 workers / before (medians): {median['cache build, 2 workers'] / median['cache build before, 2 workers']:.2f} "
          f"(target >= 3); 2 workers / 1 worker: {median['cache build, 2 workers'] / median['cache build, 1 worker']:.2f} "
          f"(target >= 1.7, idle machine); load average {_load()} after")  # fmt: skip


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main_trials(args, work: Path, large: Path, small: Path, driver_anon: dict[int, int]) -> None:
    cache = work / "cache"
    epochs: dict[str, list[float]] = {"memory": [], "stream": []}
    for loading in ("memory", "stream", "stream", "memory", "memory", "stream"):
        epochs[loading].append(in_child(trial, str(small), str(cache / str(args.small)), loading)["images_per_s"])
    ratio = statistics.median(epochs["stream"]) / statistics.median(epochs["memory"])
    print(f"trial epoch, {args.small} images (train {int(args.small * 0.6)}), 32 px crops of 128 px, images/s: "
          f"in memory {spread(epochs['memory'])}; streaming {spread(epochs['stream'])}; "
          f"streaming / in memory (medians) {ratio:.2f} (target >= 0.9)")  # fmt: skip
    peaks: dict[tuple[int, str], int] = {}
    for n, folder, loading in ((args.small, small, "memory"), (args.images, large, "stream"), (args.images, large, "memory"),
                               (args.small, small, "stream")):  # fmt: skip
        peaks[(n, loading)] = in_child(trial, str(folder), str(cache / str(n)), loading, MEMORY_TRIAL)["peak_anon"]
    extra = (args.images - args.small) * 3 * STORED**2
    # --only trials measures no driver, so it prints no driver line (never figures from another run).
    for who, values in (("driver", driver_anon),
                        ("trial, streaming", {n: peaks[(n, "stream")] for n in (args.small, args.images)}),
                        ("trial, in memory", {n: peaks[(n, "memory")] for n in (args.small, args.images)})):  # fmt: skip
        if not values:
            continue
        grown = values[args.images] - values[args.small]
        print(f"peak RssAnon, {who}: {values[args.small] / 2**20:.0f} MiB at {args.small}, {values[args.images] / 2**20:.0f} MiB at "
              f"{args.images}: +{grown / 2**20:.0f} MiB = {100 * grown / extra:.1f}% of the extra decoded {extra / 2**20:.0f} MiB (target < 15%)")  # fmt: skip


if __name__ == "__main__":
    main()

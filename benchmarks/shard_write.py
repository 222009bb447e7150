"""Where a cache build's time goes beside the bare decode loop: the same files decoded into the
cache's chunks, then written, hashed and synced step by step, in plain processes (no Ray).

    python benchmarks/shard_write.py [--images 5000] [--workdir /tmp/data-loading-bench]  # about 1.5 minutes idle

Data: the small set of benchmarks/data_loading.py (generated there if missing), stored at 128 px,
cut into the cache's chunks (``trainables.data._plan``: 64 chunks of at most 79 images for 5,000). Five ways, in
1 and in 2 processes (a spawned pool, started and imported before any clock), order
A B C D E E D C B A A B C D E:

- A, bare loop: ``decode_image`` over the files, nothing kept (data_loading.py's limit);
- B, chunks decoded: each chunk into its array (``_decode_files``), nothing written;
- C, + written: the shard's .npy bytes written to a file, not hashed, not fsynced;
- D, + hashed: written and sha256-hashed, not fsynced;
- E, the cache's ``write_shard``: written, hashed and fsynced, as every decode task does.

Each way writes into an empty folder, deleted before the next way. C and D leave their pages for
the kernel to write back after the clock (or never, once the folder is deleted), so what E adds to
D is the writeback itself: the fsync's wait and the CPU the guest spends on the disk's I/O.
What the cache build through Ray adds to E is in data_loading.py's figures, beside the same bare loop.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from data_loading import STORED, bare_decode, generate, spread, subset

WAYS = ("bare loop", "chunks decoded", "+ written", "+ hashed", "write_shard (+ fsynced)")


def run_job(way: str, job) -> int:
    """One chunk the ``way`` says; how many images it decoded."""
    from numpy.lib import format as npy

    from trainables.cache import _checked, _Hashing, write_shard

    if way == WAYS[4]:
        return len(write_shard(job).labels)
    images = _checked(job.chunk(), job.image_size)
    if way == WAYS[1]:
        return len(images)
    with open(job.path, "wb") as file:
        sink = _Hashing(file) if way == WAYS[3] else file  # _write_array's steps, but the fsync
        npy.write_array_header_1_0(sink, npy.header_data_from_array_1_0(images))
        sink.write(memoryview(images.reshape(-1)).cast("B"))
    return len(images)


def rates(folder: str, work: str, processes: int, order: list[str]) -> list[tuple[str, float]]:
    from trainables.cache import ShardJob
    from trainables.data import _plan
    from trainables.datasets import resolve_source

    source = resolve_source(folder, STORED)
    paths = [str(Path(source.root) / entry[0]) for entry in source.entries]
    _, _, chunks, _ = _plan(source, work)
    out = Path(work) / "shards"
    measured = []
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(bare_decode, [paths[:1]] * processes))  # started and imported before any clock
        out.mkdir(parents=True, exist_ok=True)
        warm = [ShardJob(chunks[0], str(out / f"warm-{k}.npy"), STORED) for k in range(processes)]
        list(pool.map(run_job, [WAYS[4]] * processes, warm))
        for way in order:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            jobs = [ShardJob(chunk, str(out / f"shard-{n:05d}.npy"), STORED) for n, chunk in enumerate(chunks)]
            started = time.perf_counter()
            if way == WAYS[0]:
                count = sum(pool.map(bare_decode, [paths[k::processes] for k in range(processes)]))
            else:
                count = sum(pool.map(run_job, [way] * len(jobs), jobs))
            measured.append((way, count / (time.perf_counter() - started)))
    shutil.rmtree(out, ignore_errors=True)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5_000, help="the small set of data_loading.py")
    parser.add_argument("--large", type=int, default=20_000, help="the set it is linked from")
    parser.add_argument("--workdir", default="/tmp/data-loading-bench")
    args = parser.parse_args()
    work = Path(args.workdir)
    large, small = work / f"folder{args.large}", work / f"folder{args.images}"
    generate(large, args.large)
    subset(large, small, args.images)
    for path in small.rglob("*.jpg"):  # the files in the page cache for every way alike
        path.read_bytes()
    order = [w for r in range(3) for w in (WAYS if r % 2 == 0 else WAYS[::-1])]
    for processes in (1, 2):
        load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
        found: dict[str, list[float]] = {way: [] for way in WAYS}
        for way, rate in rates(str(small), str(work / "shard-write"), processes, order):
            found[way].append(rate)
        bare = statistics.median(found[WAYS[0]])
        print(f"{args.images} images stored at {STORED} px, {processes} process(es), images/s (load average {load_before} before):")
        for way in WAYS:
            print(f"  {way:24s} {spread(found[way])}   {statistics.median(found[way]) / bare:.2f}x the bare loop (medians)")
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} after")


if __name__ == "__main__":
    main()

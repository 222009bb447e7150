"""Retrain at real size: the peak private memory of `retrain` on a streamed run, at two data set sizes.

    python benchmarks/retrain_memory.py [--images 20000] [--small 5000] [--repeats 3] [--workdir /tmp/data-loading-bench]

Data: the generated ImageFolders of ``benchmarks/data_loading.py`` (its generator: 10 classes of
JPEG crops, stored at 128 px), the ``--small`` set the first images of each class of the large one;
both are generated under ``--workdir`` (reused when there). For each size, one streamed search
(``--data-loading stream``, one trial of a tiny from-scratch CNN trained on 16 px versions of the
128 px images, one epoch, ``--no-retrain``) makes the run directory; then ``retrain --force
--seeds 1`` (flip TTA and the classic baselines included) runs in a fresh process, its RssAnon
sampled every 20 ms, in the order S L L S S L (``--repeats`` per size).

Printed: the peak RssAnon of each retrain (min / median / max per size) and the growth from the
small to the large set as a share of the extra decoded pixels, (large - small) x 3 x 128 x 128
bytes. Target: < 15%, as for a streamed trial (data_loading.py). With ``--in-memory`` the same
retrain of an in-memory run of the large set is measured beside it, for contrast.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _common import REPO, fixed_space, run_cli
from data_loading import STORED, PeakAnon, generate, in_child, subset

# One tiny trial: one residual block of width 16 on 16 px images, one epoch (the data path is what is measured).
TRIAL = {"conv_blocks": 1, "base_width": 16, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "image_size": 16}


def search(space: Path, folder: Path, cache: Path, storage: Path, name: str, loading: str) -> Path:
    """A finished one-trial search on ``folder`` (not retrained); its run directory."""
    run_cli("run", str(space), "--dataset", str(folder), "--data-loading", loading, "--data-cache", str(cache),
            "--storage", str(storage), "--name", name, "--overwrite", "--no-retrain")  # fmt: skip
    return storage / name


def retrain_peak(run_dir: str) -> dict:
    """``retrain --force --seeds 1`` of ``run_dir`` in this (fresh) process; its peak RssAnon."""
    sys.path.insert(0, str(REPO))
    from analysis.retrain import retrain

    lines: list[str] = []
    started = time.perf_counter()
    with PeakAnon() as memory:
        before = memory.now()

        def out(line: str) -> None:  # each line with the peak so far: where the memory went
            lines.append(f"{line}  [peak so far {max(memory.peak, memory.now()) / 2**20:.0f} MiB]")

        table = retrain(Path(run_dir), seeds=1, force=True, threads=2, out=out)
    return {"peak_anon": memory.peak, "seconds": time.perf_counter() - started, "lines": lines, "before": before,
            "test_acc": float(table["test_acc_mean"].iloc[0])}  # fmt: skip


def spread_mib(values) -> str:
    mib = [v / 2**20 for v in values]
    return f"min {min(mib):.0f} / median {statistics.median(mib):.0f} / max {max(mib):.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3, help="retrains per size (order S L L S S L ...)")
    parser.add_argument("--workdir", default="/tmp/data-loading-bench")
    parser.add_argument("--in-memory", action="store_true", help="also retrain an in-memory run of the large set")
    args = parser.parse_args()
    work = Path(args.workdir)
    large, small = work / f"folder{args.images}", work / f"folder{args.small}"
    started = time.perf_counter()
    generate(large, args.images)
    subset(large, small, args.small)
    print(f"data: {args.images} and {args.small} JPEGs in {work} (generated/found in {time.perf_counter() - started:.0f} s), "
          f"stored at {STORED} px; load average {os.getloadavg()[0]:.1f}")  # fmt: skip

    space = fixed_space(work / "retrain_space.py", [TRIAL], {
        "model": "scratch_resnet", "weights": "none", "image_size": STORED, "trials": 1, "max_epochs": 1,
        "grace_period_epochs": 1, "cpus_per_trial": 2, "gpus_per_trial": 0})  # fmt: skip
    runs = {}
    for n, folder in ((args.small, small), (args.images, large)):
        began = time.perf_counter()
        runs[n] = search(space, folder, work / "cache" / str(n), work / "runs", f"stream{n}", "stream")
        print(f"search, {n} images, streamed: {time.perf_counter() - began:.0f} s (cache built or reused, one trial)")

    order = [args.small, args.images, args.images, args.small] * ((args.repeats + 1) // 2)
    order = [n for k, n in enumerate(order) if order[:k].count(n) < args.repeats]
    peaks: dict[int, list[int]] = {args.small: [], args.images: []}
    for n in order:
        result = in_child(retrain_peak, str(runs[n]))
        peaks[n].append(result["peak_anon"])
        print(f"retrain, {n} images, streamed: peak RssAnon {result['peak_anon'] / 2**20:.0f} MiB "
              f"({result['before'] / 2**20:.0f} MiB at its start, imports done), {result['seconds']:.0f} s, "
              f"test accuracy {result['test_acc']:.4f}; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        for line in result["lines"]:
            if line.startswith(("retrain: ", "baseline: ")) and "model(s)" not in line:
                print(f"  {line}")
    extra = (args.images - args.small) * 3 * STORED**2
    grown = statistics.median(peaks[args.images]) - statistics.median(peaks[args.small])
    print(f"peak RssAnon of retrain, streamed: {spread_mib(peaks[args.small])} at {args.small}; "
          f"{spread_mib(peaks[args.images])} at {args.images}")  # fmt: skip
    print(f"growth (medians): +{grown / 2**20:.0f} MiB = {100 * grown / extra:.1f}% of the extra decoded {extra / 2**20:.0f} MiB "
          f"(target < 15%); load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    if args.in_memory:
        run_dir = search(space, large, work / "cache" / str(args.images), work / "runs", f"memory{args.images}", "memory")
        result = in_child(retrain_peak, str(run_dir))
        print(f"for contrast, retrain of an in-memory run, {args.images} images: peak RssAnon {result['peak_anon'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()

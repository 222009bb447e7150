"""The README's first command, timed as a user runs it: ``python -m search run SPACE [OPTIONS]`` in
a subprocess with a fresh storage folder, split into the search (command start to the summary's
"finished N trials" line) and what follows it (retrain of the winner, test, report), repeated, with
the load average beside the figures.

    python benchmarks/first_run.py                            # spaces/resnet.py, 3 times
    python benchmarks/first_run.py --repeats 3 -- spaces/scratch_cnn.py --workers-per-trial 2 --trials 2 --max-epochs 2 --no-retrain
    python benchmarks/first_run.py --repeats 1 -- spaces/resnet.py --trials 2 --max-epochs 1   # a quick check of the script

It prints each repetition, then min / median / max of the whole command, the search and the rest,
the driver's peak RSS (the largest of the command's processes that the script waited on), and the
first repetition's output from its summary on: the README's example output comes from there.
Offline figures: run it with IMAGE_SEARCH_OFFLINE=1 (and HF_HUB_OFFLINE=1) unless the online case
is what you want to time.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from _common import REPO

FINISHED = re.compile(r"^finished \d+ trials in ")


def clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{seconds:.1f} s"


def once(args: list[str]) -> dict:
    """One run of the command: its wall time, the search's part, and its output."""
    with tempfile.TemporaryDirectory() as storage:
        command = [sys.executable, "-m", "search", "run", *args, "--storage", storage, "--name", "first"]
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines, search = [], None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if search is None and FINISHED.match(line):
                search = time.perf_counter() - started
        process.wait()
        total = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError("\n".join(lines[-40:]))
    if search is None:
        raise RuntimeError("the command printed no 'finished N trials' line:\n" + "\n".join(lines[-40:]))
    return {"total": total, "search": search, "after": total - search, "lines": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("command", nargs="*", help="after --: the space file and options (default spaces/resnet.py)")
    options = parser.parse_args()
    args = options.command or ["spaces/resnet.py"]
    print(f"python -m search run {' '.join(args)}  (x{options.repeats}); load average before {os.getloadavg()}", flush=True)
    runs = []
    for repeat in range(options.repeats):
        run = once(args)
        runs.append(run)
        print(f"  run {repeat + 1}: {clock(run['total'])} in all, search {clock(run['search'])}, "
              f"then {clock(run['after'])} (retrain, test, report); load average {os.getloadavg()}", flush=True)  # fmt: skip
    for key, what in (("total", "whole command"), ("search", "search"), ("after", "after the search")):
        values = [r[key] for r in runs]
        print(f"{what}: min {clock(min(values))} / median {clock(statistics.median(values))} / max {clock(max(values))}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    print(f"peak RSS of the driver process: {peak:.0f} MiB")
    print(f"load average after {os.getloadavg()}")
    print("run 1's output from its summary on:")
    lines = runs[0]["lines"]
    start = next(i for i, line in enumerate(lines) if FINISHED.match(line))
    for line in lines[start:]:
        print(f"    {line}")


if __name__ == "__main__":
    main()

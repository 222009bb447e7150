"""Crashes for real: SIGKILL of the driver mid-run, then resume; failing trials in one run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.records import read_json, read_trials
from search.config.spaces import load_space, resolve_settings
from search.engine import run_search
from tests.conftest import REPO

# Timeout: 3 x the slowest test + 60 s (pyproject.toml): the twice-killed driver's test took 434 s on the
# machine at load average 50-70.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1370)]

RUN = ["--trials", "6", "--max-epochs", "3", "--grace-period-epochs", "1", "--reduction-factor", "3",
       "--data-fraction", "0.6", "--concurrency", "2", "--seed", "3"]  # fmt: skip


def _start(*args) -> subprocess.Popen:
    # A process group of its own, so that SIGKILL takes the driver and the Ray it started, as a
    # crash or a reboot would.
    return subprocess.Popen(
        [sys.executable, "-m", "search", *args], cwd=REPO, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _lines(run_dir: Path) -> dict[str, int]:
    """Raw metrics lines per trial: a trial that trained an epoch again would have more."""
    return {p.parent.name: len(p.read_text().splitlines()) for p in run_dir.glob("trials/*/metrics.jsonl")}


def _finished(run_dir: Path) -> set[str]:
    done = set()
    for path in run_dir.glob("trials/*/status.json"):
        try:
            status = json.loads(path.read_text())["status"]
        except (json.JSONDecodeError, KeyError):
            continue
        if status.startswith(("completed", "stopped")):
            done.add(path.parent.name)
    return done


def _kill_when(process: subprocess.Popen, ready, timeout: float = 240) -> str:
    """SIGKILL ``process``'s group once ``ready()``; return what it printed."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return process.stdout.read()


def test_sigkill_of_the_driver_twice_then_resume_completes_the_budget(tmp_path):
    run_dir = tmp_path / "k"
    first = _start("run", "spaces/scratch_cnn.py", *RUN, "--storage", str(tmp_path), "--name", "k")
    _kill_when(first, lambda: len(_finished(run_dir)) >= 2)
    finished_first, lines_first = _finished(run_dir), _lines(run_dir)

    # A second, different point: as soon as the resumed run has trained one more epoch.
    second = _start("resume", str(run_dir))
    output = _kill_when(second, lambda: sum(_lines(run_dir).values()) > sum(lines_first.values()))
    finished_second, lines_second = _finished(run_dir), _lines(run_dir)

    third = _start("resume", str(run_dir), "--no-retrain")  # the retrain is tested elsewhere; the resume is tested here
    end, _ = third.communicate(timeout=400)
    assert third.returncode == 0, end[-3000:]
    output += end

    table = pd.read_csv(run_dir / "leaderboard.csv")
    assert len(table) == 6 == table["trial_id"].nunique() == len(read_trials(run_dir))
    assert table["status"].str.match(r"^(completed|stopped early at epoch \d)$").all()
    lines_end = _lines(run_dir)
    # A trial can begin and end between two of Ray's snapshots (one a second), and the kill can come
    # before the next: Ray's restored searcher gives its slot to a new trial, so the resume moves
    # its record to trials_lost/ and says so (tests/test_interruptions.py). Every other trial that
    # had finished was never trained again.
    lost = {p.name for p in (run_dir / "trials_lost").glob("*/")}
    assert all(f"'{trial}'" in output.partition("moved to trials_lost/:")[2] for trial in lost)
    assert finished_first - lost  # the first trials ran for seconds: Ray's snapshots hold them
    for trial in finished_first - lost:
        assert lines_end[trial] == lines_first[trial]
    for trial in finished_second - lost:
        assert lines_end[trial] == lines_second[trial]
    searcher = read_json(run_dir / "resume.json")["searcher"]
    assert searcher["searcher"] == "OptunaSearch" and searcher["sampler"] == "TPESampler"
    assert searcher["completed_study_trials"] == 6  # the study kept the trials from before the kills
    assert "top 5 by val_acc" in output


def test_resume_extends_the_budget_with_a_warm_started_sampler(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "search", "run", "spaces/scratch_cnn.py", *RUN, "--trials", "3",
         "--storage", str(tmp_path), "--name", "x", "--no-retrain"],
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    done = subprocess.run(
        [sys.executable, "-m", "search", "resume", str(tmp_path / "x"), "--trials", "5", "--no-retrain"],
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "the sampler starts from 3 finished trials" in done.stdout
    assert f"executing {(tmp_path / 'x').resolve() / 'space.py'}" in done.stdout.partition("resuming")[0]
    table = pd.read_csv(tmp_path / "x" / "leaderboard.csv")
    assert len(table) == 5 == table["trial_id"].nunique()
    assert read_json(tmp_path / "x" / "settings.json")["trials"] == 5


def test_failing_trials_do_not_lose_the_others(ray_session, tmp_path):
    space_file = tmp_path / "faults.py"
    space_file.write_text(textwrap.dedent("""
        TRAINABLE = "tests.faulty:train"
        MODEL = "scratch_resnet"
        IMAGE_SIZE = 16
        TRIALS = 5
        MAX_EPOCHS = 2
        GRACE_PERIOD_EPOCHS = 2
        MAX_FAILURES = 1
        CONCURRENCY = 2
        REPEATS = "allow"  # trial k gets _FAULTS[k]: 5 trials over 2 searched batch sizes
        _FAULTS = {0: "raise", 1: "nan", 2: "kill"}

        def space(trial):
            trial.suggest_categorical("batch_size", [32, 64])
            return {"fault": _FAULTS.get(trial.number, "none"), "conv_blocks": 2, "base_width": 16}
    """))
    space = load_space(space_file)
    settings = resolve_settings(space, {"storage": str(tmp_path), "name": "f", "data_fraction": 0.4})
    run_dir = run_search(space, settings, out=lambda line: None)
    records = {r.params["fault"]: r for r in read_trials(run_dir)}
    assert len(read_trials(run_dir)) == 5
    raised = records["raise"]
    assert raised.status["status"] == "error" and "injected failure" in raised.status["error"]
    traceback = (run_dir / "trials" / raised.trial_id / "error.txt").read_text()
    assert 'tests/faulty.py", line' in traceback and "RuntimeError: injected failure" in traceback
    assert records["nan"].status["status"] == "diverged at epoch 1"
    killed = records["kill"]
    assert killed.status["status"] == "completed" and [m["epoch"] for m in killed.metrics] == [1, 2]
    others = [r for r in read_trials(run_dir) if r.params["fault"] == "none"]
    assert len(others) == 2 and all(r.status["status"] == "completed" for r in others)
    table = pd.read_csv(run_dir / "leaderboard.csv")
    assert set(table["status"]) == {"error", "diverged at epoch 1", "completed"}
    assert table.set_index("trial_id").loc[raised.trial_id, "error"].endswith("injected failure")

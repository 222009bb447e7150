"""GPUs and multi-worker trials, end to end on this CPU machine: a real 2-worker gloo search
through Ray Train in the shared session, logical GPUs in a Ray session of their own (a separate
process: tests/logical_gpus.py), and the refusal of GPUs a cluster does not have."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from analysis.records import read_trials
from search.config.spaces import load_space, resolve_settings
from search.engine import run_search
from tests.conftest import REPO
from tests.fixed_spaces import start_with

# Timeout: 3 x the slowest test + 60 s (pyproject.toml): the logical-GPU test took 407 s on the machine
# at load average 50-70.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1290)]


def test_a_two_worker_trial_trains_data_parallel_with_gloo_and_records_like_any_trial(ray_session, tmp_path):
    space = load_space(REPO / "spaces" / "scratch_cnn.py")
    settings = resolve_settings(
        space,
        {"storage": str(tmp_path), "name": "workers", "trials": 1, "max_epochs": 2, "grace_period_epochs": 1,
         "workers_per_trial": 2, "data_fraction": 0.35, "sampler": "random", "seed": 3,
         "start_with": start_with("scratch_cnn.py")},
    )  # fmt: skip
    run_dir = run_search(space, settings, out=lambda line: None)
    (record,) = read_trials(run_dir)
    assert record.status["status"] == "completed", record.status
    assert [m["epoch"] for m in record.metrics] == [1, 2]
    assert all(m["workers"] == 2 and m["device"] == "cpu" and m["precision"] == "fp32" for m in record.metrics)
    assert all(0 <= m["val_acc"] <= 1 and m["peak_memory_mb"] > 0 for m in record.metrics)
    # It learned: two epochs on 35% of digits leave val_acc near chance for some seeds, not the
    # training loss (benchmarks/test_bounds.py --cases two_workers: highest over seeds 1-5 1.88,
    # plus 0.1; a uniform guess's loss is ln 10 = 2.30).
    assert record.metrics[-1]["train_loss"] < 2.00
    # Tune's own checkpoint per epoch (what a restored trial starts from), and the leaderboard row.
    checkpoints = list((run_dir / "ray").glob(f"*/{record.trial_id}*/checkpoint_*/state.pt")) or list(run_dir.glob("ray/**/state.pt"))
    assert checkpoints, "no per-epoch checkpoint was kept"
    assert (run_dir / "leaderboard.csv").read_text().count(record.trial_id) == 1


def test_a_search_asking_for_gpus_on_a_cluster_without_any_is_refused_before_any_trial(ray_session, tmp_path):
    space = load_space(REPO / "spaces" / "scratch_cnn.py")
    settings = resolve_settings(space, {"storage": str(tmp_path), "name": "nogpu", "trials": 1, "gpus_per_trial": 0.5})
    with pytest.raises(ValueError, match=r"`gpus_per_trial` is 0.5, but the Ray cluster .* has no GPU .* pass --gpus-per-trial 0"):
        run_search(space, settings, out=lambda line: None)
    assert not (tmp_path / "nogpu").exists()


def test_logical_gpus_share_one_index_at_a_quarter_and_a_two_worker_trial_gets_two(tmp_path):
    # Ray declares 2 GPUs here, in its own process (the pytest process holds the shared session).
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    done = subprocess.run([sys.executable, "-m", "tests.logical_gpus", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "result.json").read_text())

    shared = results["shared"]
    assert [t["status"] for t in shared] == ["completed"] * 4
    seen = [json.loads(t["seen"])[0] for t in shared]
    assert {tuple(s["gpu_ids"]) for s in seen} in ({("0",)}, {("1",)})  # four quarters of one GPU
    assert all(s["visible"] == s["gpu_ids"][0] for s in seen)  # each trial sees its own GPU only
    assert [t["peers"] for t in shared] == [4] * 4  # all four ran at once (tests/gpu_probe.py's barrier)

    (trial,) = results["workers"]
    assert trial["status"] == "completed"
    workers = json.loads(trial["seen"])
    assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2
    assert sorted(w["gpu_ids"][0] for w in workers) == ["0", "1"]  # one GPU each, two in all
    assert all(set(w["visible"].split(",")) == {"0", "1"} for w in workers)  # Ray Train shows a node's workers their GPUs

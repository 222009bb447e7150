"""A real two-node Ray cluster on this machine: `ray start --head` and `ray start --address`, each
with its own raylet, on loopback, with token authentication. The search joins it with
``--address``; the test stops the nodes by the process groups it started (never `ray stop`, which
would stop every Ray process on the machine, the shared test session's included).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.records import read_json, read_trials
from tests.conftest import REPO

# Timeout: 3 x the slowest test + 60 s (pyproject.toml): the lost-node test took 510 s on the machine
# at load average 50-70 (the two-node search 415 s, the out-of-memory one 277 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1600)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Node:
    """One `ray start --block` process, leader of its own process group (raylet, GCS, workers)."""

    def __init__(self, name: str, args: list[str], env: dict, log_dir: Path):
        self.name, self.log = name, log_dir / f"{name}.log"
        self.process = subprocess.Popen(
            ["ray", "start", "--block", "--disable-usage-stats", *args],
            env=env,
            cwd=REPO,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_started(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def group_alive(self) -> list[str]:
        listing = subprocess.run(["ps", "-eo", "pgid=,stat=,pid="], capture_output=True, text=True).stdout
        return [line for line in listing.splitlines() if line.split()[0] == str(self.process.pid) and "Z" not in line.split()[1]]

    def kill(self) -> None:
        """SIGKILL the node's whole process group: as abrupt as a machine that loses power."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.2)


class TwoNodes:
    def __init__(self, root: Path):
        self.port = _free_port()
        # Loopback addresses other than 127.0.0.1: Ray replaces 127.0.0.1 and "localhost" with the
        # machine's outward address (services.resolve_ip_for_localhost), but keeps these. One
        # address per node, so the records also tell the nodes apart by IP.
        self.head_ip, self.worker_ip = "127.0.0.2", "127.0.0.3"
        self.address = f"{self.head_ip}:{self.port}"
        # Ray's token authentication, with a token of this cluster's own (not ~/.ray/auth_token).
        self.env = os.environ | {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "PYTHONPATH": str(REPO),  # every Ray worker imports this checkout's code
            "RAY_AIR_NEW_OUTPUT": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        # Sockets live under the temp dir: a short path keeps them under the 107-byte limit.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray2n-", dir="/tmp"))
        head_env = self.env | {
            # Notice a lost node within seconds rather than half a minute.
            "RAY_health_check_initial_delay_ms": "1000",
            "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "4",
        }
        self.head = self.worker = None
        try:
            self._start(head_env, root)
        except BaseException:
            self.stop()  # a node that started must not outlive a failed start of the other
            raise

    def _start(self, head_env: dict, root: Path) -> None:
        self.head = _Node(
            "head",
            [
                "--head", "--node-ip-address", self.head_ip, "--port", str(self.port),
                "--num-cpus", "1", "--num-gpus", "0", "--include-dashboard", "false",
                "--dashboard-port", str(_free_port()), "--ray-client-server-port", str(_free_port()),
                "--temp-dir", str(self.temp_dir),
            ],
            head_env,
            root,
        )  # fmt: skip
        self.head.wait_started()
        self.worker = _Node(
            "worker",
            ["--address", self.address, "--node-ip-address", self.worker_ip, "--num-cpus", "1", "--num-gpus", "0"],
            self.env,
            root,
        )
        self.worker.wait_started()
        self.node_ids = self._wait_for_nodes(2)

    def nodes(self) -> list[dict]:
        code = (
            "import json, ray; ray.init(address=%r, logging_level='error', log_to_driver=False); "
            "print(json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], 'ip': n['NodeManagerAddress'], "
            "'head': 'node:__internal_head__' in n['Resources']} for n in ray.nodes()]))" % self.address
        )
        done = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def _wait_for_nodes(self, count: int) -> dict[str, str]:
        deadline = time.monotonic() + 60
        while True:
            alive = [n for n in self.nodes() if n["alive"]]
            if len(alive) == count:
                assert {n["ip"] for n in alive} == {self.head_ip, self.worker_ip}, alive  # loopback only
                return {"head" if n["head"] else "worker": n["id"] for n in alive}
            assert time.monotonic() < deadline, alive
            time.sleep(1)

    def search(self, space: Path, storage: Path, name: str, *options: str, env: dict | None = None) -> subprocess.Popen:
        command = [
            sys.executable, "-m", "search", "run", str(space), "--address", self.address,
            "--storage", str(storage), "--name", name, "--seed", "1", *options,
        ]  # fmt: skip
        return subprocess.Popen(command, cwd=REPO, env=self.env | (env or {}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> None:
        for node in (self.worker, self.head):
            if node is not None:
                node.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    cluster = TwoNodes(tmp_path_factory.mktemp("cluster-logs"))
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not cluster.head.group_alive() and not cluster.worker.group_alive(), "a node outlived the test"


def _finish(search: subprocess.Popen, timeout: float = 300) -> str:
    try:
        output, _ = search.communicate(timeout=timeout)
    finally:
        if search.poll() is None:  # timed out: the driver must not outlive the test
            search.kill()
            search.wait()
    assert search.returncode == 0, output[-4000:]
    return output


def test_a_search_uses_both_nodes_and_loses_no_result(two_nodes, tmp_path):
    search = two_nodes.search(
        REPO / "spaces" / "scratch_cnn.py", tmp_path, "two-nodes",
        "--trials", "6", "--max-epochs", "2", "--grace-period-epochs", "1", "--data-fraction", "0.3",
    )  # fmt: skip
    output = _finish(search)
    run_dir = tmp_path / "two-nodes"
    table = pd.read_csv(run_dir / "leaderboard.csv")
    trials = read_trials(run_dir)
    assert len(table) == len(trials) == 6 and set(table["trial_id"]) == {t.trial_id for t in trials}
    assert table["status"].str.match(r"^(completed|stopped early at epoch \d+)$").all(), table["status"]
    assert table["val_acc"].notna().all()
    nodes = {t.trial_id: t.status["node_id"] for t in trials}
    for trial in trials:  # every epoch of a trial ran where its status says
        assert {m["node_id"] for m in trial.metrics} == {nodes[trial.trial_id]}
    split = {role: sum(1 for n in nodes.values() if n == node) for role, node in two_nodes.node_ids.items()}
    print(f"trials per node: {split}")
    assert split["head"] >= 1 and split["worker"] >= 1 and sum(split.values()) == 6, (split, output[-2000:])
    assert "up to 2 at once" in output  # one CPU on each node: two trials at a time


def test_out_of_memory_at_every_micro_batch_ends_infeasible_without_blind_retries(two_nodes, tmp_path):
    # Every Ray worker of this search gets a one-image "GPU" (tests/memory_limit.py), through the
    # job's runtime_env, as `ray job submit` passes it: no micro-batch fits.
    hook = {"runtime_env": {"worker_process_setup_hook": "tests.memory_limit.install"}}
    search = two_nodes.search(
        REPO / "spaces" / "scratch_cnn.py", tmp_path, "oom",
        "--trials", "2", "--max-epochs", "1", "--grace-period-epochs", "1", "--data-fraction", "0.3",
        env={"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(hook)},
    )  # fmt: skip
    output = _finish(search)
    run_dir = tmp_path / "oom"
    table = pd.read_csv(run_dir / "leaderboard.csv", keep_default_na=False)
    assert len(table) == 2 and (table["status"] == "infeasible: out of memory").all(), table
    assert table["error"].str.match(r"^infeasible: out of memory at micro-batch 2 \(batch size \d+\)").all(), table["error"]
    assert (table["epochs"] == 0).all() and (table["rank"] == "").all()  # no score, no rank
    assert "2 errors" in output
    for trial_id in table["trial_id"]:
        assert read_json(run_dir / "trials" / trial_id / "status.json")["retries"] == 0
        # Ray restarted it once (max_failures is 2), and that attempt re-raised without training.
        (errors,) = (run_dir / "ray").glob(f"*{trial_id}*/error.txt")
        attempts = errors.read_text().split("Failure # ")[1:]
        assert len(attempts) == 2 and "RepeatedFailure" in attempts[1], errors.read_text()[-2000:]


# Every trial costs the same and trains long enough to be caught mid-run; ASHA stops none.
_STEADY_SPACE = '''
MODEL = "scratch_resnet"
IMAGE_SIZE = 16
CPUS_PER_TRIAL = 1


def space(trial):
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    return {"conv_blocks": 2, "base_width": 32, "batch_size": 32}
'''


def test_trials_of_a_lost_node_resume_from_their_checkpoints_on_the_other(two_nodes, tmp_path):
    # Runs last in this module: it stops the second node.
    space = tmp_path / "steady.py"
    space.write_text(_STEADY_SPACE)
    epochs = 6
    search = two_nodes.search(
        space, tmp_path, "node-lost", "--trials", "3", "--max-epochs", str(epochs),
        "--grace-period-epochs", str(epochs), "--data-fraction", "0.6", "--max-failures", "2",
    )  # fmt: skip
    run_dir, worker = tmp_path / "node-lost", two_nodes.node_ids["worker"]
    victim, deadline = None, time.monotonic() + 240
    try:
        while victim is None:  # the first trial on the second node with a checkpoint and epochs to go
            assert search.poll() is None and time.monotonic() < deadline, "no trial reached the second node"
            for trial in read_trials(run_dir) if (run_dir / "trials").exists() else []:
                last = trial.metrics[-1] if trial.metrics else {}
                if last.get("node_id") == worker and 1 <= last["epoch"] <= epochs - 3:
                    victim, killed_after = trial.trial_id, last["epoch"]
                    break
            time.sleep(0.1)
    finally:
        if victim is None and search.poll() is None:
            search.kill()
            search.wait()
    two_nodes.worker.kill()
    assert not two_nodes.worker.group_alive()
    output = _finish(search)

    trials = {t.trial_id: t for t in read_trials(run_dir)}
    table = pd.read_csv(run_dir / "leaderboard.csv")
    assert len(table) == len(trials) == 3 and (table["status"] == "completed").all(), (table, output[-3000:])
    lost = trials[victim]
    assert lost.status["retries"] >= 1 and lost.status["node_id"] == two_nodes.node_ids["head"]
    raw = [json.loads(line) for line in (run_dir / "trials" / victim / "metrics.jsonl").read_text().splitlines()]
    on_worker = [m["epoch"] for m in raw if m["node_id"] == worker]
    on_head = [m["epoch"] for m in raw if m["node_id"] != worker]
    # It resumed from its last checkpoint, not from scratch: the head went on after the epochs the
    # lost node had finished (at most the one epoch after the last checkpoint is trained again).
    assert on_worker and on_head and on_head[-1] == epochs
    assert on_head[0] in (on_worker[-1], on_worker[-1] + 1) and on_head[0] > 1, raw
    assert [m["epoch"] for m in lost.metrics] == list(range(1, epochs + 1))
    status = read_json(run_dir / "trials" / victim / "status.json")
    print(
        f"killed the worker node after trial {victim} reported epoch {killed_after}; it resumed on the "
        f"head at epoch {on_head[0]} ({status['retries']} retry); epochs on worker {on_worker}, on head {on_head}"
    )
    assert f"trial {victim} failed" in output and "from its last checkpoint" in output

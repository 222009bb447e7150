"""`ray up` for real: Ray's cluster launcher runs clusters/local.yaml's own commands on this machine.

The "cluster" is this machine reached over SSH on loopback, as the dedicated user that
`.ci/launcher-node.sh` makes (sshd on 127.0.0.1:2222 only, a key made for the test, an
environment with the pinned dependencies to reuse). The test writes a copy of clusters/local.yaml
in which only the addresses, the SSH user, the key (with `ssh_proxy_command` for the port) and the
shared directory are substituted, then runs what a user runs: `ray get-auth-token --generate`,
`ray up -y`, `ray exec` of a search with `--address auto`, reads the leaderboard from the shared
directory, `ray down -y`, and checks that no process of the node user is left.

Without that SSH server (a developer machine where `.ci/launcher-node.sh` did not run) the test
is skipped, saying so; under CI=true it fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from tests.conftest import REPO
from tests.listening_sockets import tree_listeners

pytestmark = pytest.mark.slow

CI_DIR = Path("/etc/image-search-ci")
KEY = CI_DIR / "id_ed25519"
NODE_USER = "raylaunch"
SSH_PORT = 2222
HEAD_IP = "127.0.0.1"
RAY = str(Path(sys.executable).parent / "ray")  # the client's Ray, the one the tests run with
# The search of the issue; --grace-period-epochs 1 because ASHA's default grace period (2) is
# longer than one epoch, which the CLI rejects before anything starts.
SEARCH = (
    "cd ~/image-search && python -m search run spaces/scratch_cnn.py --address auto --storage {runs} "
    "--name launcher --trials 2 --max-epochs 1 --grace-period-epochs 1 --no-retrain"
)


def _missing() -> str | None:
    """Why this machine cannot run the test, or None."""
    try:
        import pwd

        pwd.getpwnam(NODE_USER)
    except KeyError:
        return f"no user {NODE_USER!r}"
    if not os.access(KEY, os.R_OK):
        return f"no readable test key {KEY}"
    for tool in ("ssh", "rsync", "nc"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    try:
        socket.create_connection((HEAD_IP, SSH_PORT), timeout=3).close()
    except OSError as error:
        return f"no SSH server on {HEAD_IP}:{SSH_PORT} ({error})"
    return None


def _port_busy(port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in psutil.net_connections("tcp"))


def _node_processes() -> list[str]:
    found = []
    for p in psutil.process_iter(["username", "pid", "cmdline"]):
        if p.info["username"] == NODE_USER:
            found.append(f"{p.info['pid']} {' '.join(p.info['cmdline'] or [])[:150]}")
    return found


@pytest.fixture
def node():
    reason = _missing()
    if reason:
        reason += ": run `sudo bash .ci/launcher-node.sh` first (the SSH server the launcher test needs)"
    elif _port_busy(6379):
        # clusters/local.yaml starts the head on --port=6379; the test does not change the file's commands.
        reason = "port 6379 is taken on this machine; clusters/local.yaml's head needs it"
    if reason:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)  # CI never skips it silently
    assert not _node_processes(), f"processes of {NODE_USER} before the test: {_node_processes()}"


def _cluster_file(tmp: Path, shared: Path) -> Path:
    """clusters/local.yaml with the addresses, user, key and shared directory of this machine."""
    original = (REPO / "clusters" / "local.yaml").read_text()
    config = yaml.safe_load(original.replace("/shared", str(shared)))
    config["provider"]["head_ip"] = HEAD_IP
    config["provider"]["worker_ips"] = []  # one machine, one node user: see the README's launcher note
    config["auth"] = {
        "ssh_user": NODE_USER,
        "ssh_private_key": str(KEY),
        "ssh_proxy_command": f"nc %h {SSH_PORT}",  # the port, without touching the file's commands
    }
    path = tmp / "local.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _ray(args: list[str], env: dict, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([RAY, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def test_ray_up_exec_down_on_loopback_with_the_files_own_commands(node, tmp_path):
    home = tmp_path / "home"  # the laptop's home: ~/.ray/auth_token lives here, root's is not touched
    home.mkdir()
    # Not under tmp_path: pytest's base directory is root's only, and the node user must reach this.
    base = Path(f"/tmp/image-search-launcher-{os.getpid()}")
    shared = base / "shared"
    shared.mkdir(parents=True)
    base.chmod(0o755)
    shutil.chown(shared, NODE_USER, NODE_USER)
    shared.chmod(0o755)  # writable by the Ray user only, as the README asks of /shared
    cluster = _cluster_file(tmp_path, shared)
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("PYTHONPATH", None)
    env.pop("RAY_ADDRESS", None)
    timings = {}
    try:
        done, _ = _ray(["get-auth-token", "--generate"], env, 60)
        assert done.returncode == 0 and (home / ".ray" / "auth_token").is_file(), done.stderr[-2000:]
        (home / ".ray" / "auth_token").chmod(0o600)  # as the README says: Ray writes it readable by all

        done, timings["ray up"] = _ray(["up", "-y", "--no-config-cache", str(cluster)], env, 900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

        # What the launched head exposes (printed for the record: a cluster node listens beyond loopback).
        for pid in sorted({p.pid for p in psutil.process_iter(["username"]) if p.info["username"] == NODE_USER}):
            for listener in sorted(tree_listeners(pid, children=False)):
                print(f"launched head: {listener}")

        search = SEARCH.format(runs=shared / "runs")
        done, timings["ray exec (search)"] = _ray(["exec", str(cluster), search], env, 600)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert "top 5 by val_acc" in done.stdout, done.stdout[-3000:]
    finally:
        done, timings["ray down"] = _ray(["down", "-y", str(cluster)], env, 300)
        print("launcher timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
        deadline = time.monotonic() + 60
        while _node_processes() and time.monotonic() < deadline:
            time.sleep(1)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not _node_processes(), f"left behind after ray down: {_node_processes()}"

    table = pd.read_csv(shared / "runs" / "launcher" / "leaderboard.csv")
    assert len(table) == 2 and table["val_acc"].notna().all()
    # The token file_mounts copies is the one the cluster runs with (the node's ~/.ray/auth_token).
    node_home = Path(os.path.expanduser(f"~{NODE_USER}"))
    node_token = node_home / ".ray" / "auth_token"
    assert node_token.read_text().strip() == (home / ".ray" / "auth_token").read_text().strip()
    assert node_token.stat().st_mode & 0o077 == 0, oct(node_token.stat().st_mode)  # rsync kept it private
    # rsync honoured .gitignore and the .git exclusion: the checkout was copied without them.
    assert (node_home / "image-search" / "search" / "engine.py").is_file()
    assert not (node_home / "image-search" / ".git").exists()
    shutil.rmtree(base, ignore_errors=True)

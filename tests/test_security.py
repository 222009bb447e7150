"""What the local Ray session actually exposes: every listening socket of its processes, measured.

The session is started the way the CLI starts it (``search.ray_session.connect``, no address) in
a subprocess; its sockets are those of that subprocess's process tree (Ray's GCS, raylet, agents
and workers are all descendants of the driver), so other Ray sessions on the machine are not
counted. The README's "Security" section states what this checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from search.ray_session import token_path
from tests.conftest import REPO
from tests.listening_sockets import is_loopback, tree_listeners

# The driver the CLI would be: connect starts the local session; two tasks start worker processes
# (each with its own gRPC server, as trial workers have); then it waits until stdin closes.
_SESSION = """
import sys, ray
from search.ray_session import connect
from search.config.settings import Settings
assert connect(Settings())
@ray.remote
def node_ip():
    return ray.util.get_node_ip_address()
ips = sorted(set(ray.get([node_ip.remote() for _ in range(4)])))
print(ips, ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""

# Not on loopback, and why that is acceptable (none today; an entry needs its reason in the README).
DOCUMENTED_EXCEPTIONS: dict[str, str] = {}


def _explain(listeners) -> str:
    return "\n".join(f"  {x}" for x in sorted(listeners))


@pytest.mark.slow
def test_the_cli_local_session_listens_on_loopback_only():
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    session = subprocess.Popen(
        [sys.executable, "-c", _SESSION], cwd=REPO, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        ready = session.stdout.readline()
        assert ready, f"the session did not start:\n{session.stderr.read()[-3000:]}"
        time.sleep(1.0)  # let the idle workers Ray prestarts open their servers too
        listeners = tree_listeners(session.pid)
    finally:
        session.stdin.close()
        session.wait(timeout=60)
    assert ready.startswith("['127.0.0.1'] 127.0.0.1:"), ready  # every task ran on a loopback node; GCS there
    names = {x.process for x in listeners}
    # The servers are really there (the test cannot pass on an empty list): GCS, raylet, workers.
    assert {"gcs_server", "raylet"} <= names, _explain(listeners)
    assert any(n.startswith("ray::") for n in names), _explain(listeners)
    exposed = {x for x in listeners if not is_loopback(x.ip) and x.process not in DOCUMENTED_EXCEPTIONS}
    assert not exposed, f"listening beyond loopback:\n{_explain(exposed)}\nall:\n{_explain(listeners)}"
    assert session.returncode == 0
    # The token that protects those ports is readable by this user only.
    assert token_path().stat().st_mode & 0o077 == 0, oct(token_path().stat().st_mode)


def test_the_shared_test_session_is_on_loopback_too(ray_session):
    assert ray_session.util.get_node_ip_address() == "127.0.0.1"
    assert ray_session.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    listeners = tree_listeners(os.getpid())  # this pytest process's Ray session
    assert listeners and all(is_loopback(x.ip) for x in listeners), _explain(listeners)


def test_loopback_addresses_are_told_from_wildcards():
    assert is_loopback("127.0.0.1") and is_loopback("::ffff:127.0.0.1") and is_loopback("::1")
    assert not any(is_loopback(ip) for ip in ("0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1"))

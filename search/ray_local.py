"""A local Ray session that listens on loopback only, with token authentication on.

Ray 2.60's servers (GCS, raylet, object manager, every worker's core-worker server, the
runtime-env and dashboard agents) bind to the node's IP when it is a loopback address, and to
every interface otherwise. ``ray.init(_node_ip_address="127.0.0.1")`` alone does not make the
node IP loopback: ``ray.init`` replaces a loopback address by the machine's external one
(``services.resolve_ip_for_localhost``) unless Ray runs in its single-machine mode, the one it
uses by default on macOS and Windows: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
(``ray._private.ray_constants.ENABLE_RAY_CLUSTER``). That constant is read when Ray is imported,
so this module sets both the variable (for the processes Ray starts) and the already imported
constant (for this process), for the time ``ray.init`` takes only: a later ``ray start`` or
``ray.init(address=...)`` in the same process is not affected. The same mode lets a driver join
a session at ``127.0.0.1:PORT`` without its address being rewritten to the external one.

Token authentication is switched on explicitly, whatever ``RAY_AUTH_MODE`` says, the way Ray's
own default does it for a new local session (``authentication_token_setup._enable_token_auth``:
``RAY_AUTH_MODE=token`` for this process's cached config and for its children; setting the
variable alone after Ray is imported leaves this process's config at "disabled", and its GCS
then refuses the driver). Ray creates ``~/.ray/auth_token`` if there is none, readable by
everyone (mode 0644 under the usual umask); ``init_local`` makes a token file of this user
readable by this user only (0600). Loopback keeps other machines out; the token keeps out other
users' processes on this machine, as long as they cannot read it.

The private attributes are used in this module only; tests/search/test_ray_local.py pins them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import ray
from ray._private import ray_constants
from ray._private.authentication import authentication_token_setup

SINGLE_MACHINE_ENV = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR  # "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def single_machine_mode() -> Iterator[None]:
    """Ray's single-machine mode (loopback node IP) inside the block, as it was outside it."""
    saved_env, saved_flag = os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved_env


def init_local(**options: Any) -> None:
    """``ray.init`` a new local session whose servers all listen on 127.0.0.1 (``options``: ray.init's)."""
    authentication_token_setup._enable_token_auth()
    with single_machine_mode():
        ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, **options)
    _keep_token_private()
    node_ip = ray.util.get_node_ip_address()  # this session's node IP (public API)
    if node_ip != LOOPBACK:
        ray.shutdown()
        raise RuntimeError(
            f"the local Ray session came up on {node_ip}, not {LOOPBACK}: this Ray version no longer "
            f"honours {SINGLE_MACHINE_ENV}=0 (see search/ray_local.py)"
        )


def init_join(address: str, **options: Any) -> None:
    """``ray.init(address)``; an address on 127.0.0.1 or localhost is joined there, not on the external IP."""
    loopback = address.rpartition(":")[0].strip("[]") in (LOOPBACK, "localhost", "::1")  # what Ray rewrites
    with single_machine_mode() if loopback else contextlib.nullcontext():
        ray.init(address=address, **options)


def token_path() -> Path:
    """The token file Ray reads: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def _keep_token_private() -> None:
    path = token_path()
    try:
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # no token file (RAY_AUTH_TOKEN in the environment), or not ours to change

"""Pins the Ray internals search/ray_local.py relies on, without starting Ray.

If an upgrade of Ray renames or changes them, these fail before the socket test
(tests/test_security.py) finds a session listening on every interface.
"""

import os

from ray._private import ray_constants, services
from ray._private.authentication import authentication_token_setup

from search.ray_local import LOOPBACK, SINGLE_MACHINE_ENV, single_machine_mode


def test_the_single_machine_switch_is_the_one_ray_reads():
    assert SINGLE_MACHINE_ENV == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)


def test_single_machine_mode_keeps_a_loopback_node_ip_and_is_undone_after():
    before_env, before_flag = os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    with single_machine_mode():
        # What ray.init does with _node_ip_address="127.0.0.1" (and with an address on 127.0.0.1).
        assert services.resolve_ip_for_localhost(LOOPBACK) == LOOPBACK
        assert services.resolve_ip_for_localhost("localhost") == LOOPBACK
        assert os.environ[SINGLE_MACHINE_ENV] == "0"  # the processes Ray starts inherit it
    assert (os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER) == (before_env, before_flag)


def test_ray_enables_token_auth_for_this_process_and_its_children():
    saved = os.environ.get(authentication_token_setup.AUTH_MODE_ENV_VAR)
    try:
        authentication_token_setup._enable_token_auth()
        assert os.environ["RAY_AUTH_MODE"] == "token"
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved

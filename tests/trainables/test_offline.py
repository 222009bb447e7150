"""Offline is declared, not assumed: with IMAGE_SEARCH_OFFLINE or HF_HUB_OFFLINE set, MODEL "auto"
resolves without opening a socket. A guard replaces the socket functions for the test's duration
and records every attempt (and refuses it), so a probe of the hub cannot pass unseen."""

from __future__ import annotations

import importlib.util
import socket

import pytest

from search.config.spaces import load_space, resolve_settings
from search.prepare import prepare_run
from tests.conftest import REPO
from trainables.models import OFFLINE_MODEL, resolve_auto_model
from trainables.offline import offline_reason


@pytest.fixture
def attempts(monkeypatch):
    """Every network call made while the test runs: (function, address); each is refused."""
    seen: list[tuple[str, object]] = []

    def refuse(name):
        def refused(*args, **kwargs):
            address = args[1] if name.startswith("socket.") and len(args) > 1 else (args[0] if args else None)
            seen.append((name, address))
            raise OSError(f"test guard: {name}({address!r}) refused")

        return refused

    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    return seen


@pytest.mark.parametrize("variable", ["IMAGE_SEARCH_OFFLINE", "HF_HUB_OFFLINE"])
def test_auto_resolves_offline_without_a_socket_when_either_variable_is_set(monkeypatch, attempts, variable):
    monkeypatch.delenv("IMAGE_SEARCH_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    assert resolve_auto_model() == (OFFLINE_MODEL, "offline", f"{variable} is set")
    assert attempts == []


def test_the_guard_sees_the_hub_probe_when_nothing_is_declared(monkeypatch, attempts):
    # Without a declaration "auto" asks the hub: the guard records that and refuses it, so the
    # tests above would fail if a declared-offline resolution still opened a socket.
    monkeypatch.delenv("IMAGE_SEARCH_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model, weights, why = resolve_auto_model(timeout_s=0.1)
    assert (model, weights) == (OFFLINE_MODEL, "offline") and "unreachable" in why and "test guard" in why
    assert attempts and attempts[0][1] == ("huggingface.co", 443)


def test_the_suite_is_declared_offline():
    assert offline_reason(("IMAGE_SEARCH_OFFLINE",)) and offline_reason(
        ("HF_HUB_OFFLINE",)
    )  # tests/conftest.py


def test_the_shipped_spaces_resolve_auto_offline_without_a_socket(attempts, tmp_path):
    # spaces/transfer.py chooses its backbones when the file is loaded.
    spec = importlib.util.spec_from_file_location("transfer_space", REPO / "spaces" / "transfer.py")
    transfer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(transfer)
    assert transfer._BACKBONES == {OFFLINE_MODEL: "offline"}
    # spaces/resnet.py (the first command): MODEL "auto", resolved before anything runs.
    space = load_space(REPO / "spaces" / "resnet.py")
    settings = resolve_settings(
        space, {"storage": str(tmp_path / "runs"), "data_cache": str(tmp_path / "cache")}
    )
    lines: list[str] = []
    prepared = prepare_run(space, settings, out=lines.append)
    assert (prepared.settings.model, prepared.settings.weights) == (OFFLINE_MODEL, "offline")
    assert lines[0] == f"model auto -> {OFFLINE_MODEL} with offline weights (IMAGE_SEARCH_OFFLINE is set)"
    assert attempts == []

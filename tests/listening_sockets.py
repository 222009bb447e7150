"""The listening sockets of one process tree: what a local run of this tool actually opens.

``python -m tests.listening_sockets -- python -m search run ...`` runs the command and prints every
TCP socket in LISTEN state (and every bound UDP socket) that any process of its tree held while
it ran, with the bind address. Ray's processes of a local session (GCS, raylet, agents, workers)
are all descendants of the driver, so the tree is that session and no other helper's.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, order=True)
class Listener:
    process: str  # the process name as Ray sets it (gcs_server, raylet, ray::IDLE, ...)
    protocol: str  # "tcp" or "udp"
    ip: str  # the bind address: 127.0.0.1, or 0.0.0.0 / :: for every interface
    port: int

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.process:<28} {self.protocol} {host}:{self.port}"


def _name(process: psutil.Process) -> str:
    try:
        cmdline = process.cmdline()
        name = cmdline[0] if process.name().startswith("python") and cmdline else process.name()
        return name.rsplit("/", 1)[-1]
    except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
        return "?"


def tree_listeners(root_pid: int, children: bool = True) -> set[Listener]:
    """The listening TCP and bound UDP sockets that the process ``root_pid`` and its descendants hold now."""
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)] if children else [root]
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for c in connections:
            tcp = c.type == socket.SOCK_STREAM
            if (tcp and c.status == psutil.CONN_LISTEN) or (not tcp and c.laddr and not c.raddr):
                found.add(Listener(_name(process), "tcp" if tcp else "udp", c.laddr.ip, c.laddr.port))
    return found


def watch(command: list[str], every_s: float = 0.25, **popen) -> tuple[int, set[Listener]]:
    """Run ``command``; return its exit status and every listener its process tree held meanwhile."""
    seen: set[Listener] = set()
    with subprocess.Popen(command, **popen) as child:
        while child.poll() is None:
            seen |= tree_listeners(child.pid)
            time.sleep(every_s)
    return child.returncode, seen


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4 loopback address on an IPv6 socket (::ffff:127.0.0.1)."""
    return ip.removeprefix("::ffff:").startswith("127.") or ip == "::1"


if __name__ == "__main__":
    argv = sys.argv[1:]
    status, listeners = watch(argv[1:] if argv[:1] == ["--"] else argv, stdout=subprocess.DEVNULL)
    for listener in sorted(listeners):
        print(listener, "" if is_loopback(listener.ip) else "  <- not loopback")
    print(f"exit status {status}; {len(listeners)} listening sockets, "
          f"{sum(not is_loopback(x.ip) for x in listeners)} not on loopback")

"""The demo's process plumbing: ports it hands out never repeat, and a child counts as started only when the port
answers from that child, not from whoever else holds it."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from meshtrace.demo.processes import Supervisor, free_port, listener_owned_by
from meshtrace.errors import MeshtraceError

LISTEN = """
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
time.sleep(60)
"""


def test_free_port_never_hands_out_a_port_twice() -> None:
    # Plain bind-to-0 repeats a port within a few hundred calls; 2000 ports here would hold dozens of repeats.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:  # and each was free when handed out
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_wait_port_accepts_the_child_listening(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path)
    port = free_port()
    try:
        child = supervisor.start("listener", [sys.executable, "-c", LISTEN, str(port)], cwd=tmp_path, env={})
        supervisor.wait_port(child, port, time.monotonic() + 30)
        assert listener_owned_by(child.pid, port) is True
        assert listener_owned_by(child.pid, free_port()) is False
    finally:
        supervisor.stop()


def test_wait_port_refuses_a_port_answered_by_another_process(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        try:
            child = supervisor.start("late", [sys.executable, "-c", LISTEN, str(port)], cwd=tmp_path, env={})
            # The port answers all along (from this test), yet the child never gets it: it dies, and the demo says so.
            with pytest.raises(MeshtraceError, match="Address already in use"):
                supervisor.wait_port(child, port, time.monotonic() + 30)
        finally:
            supervisor.stop()

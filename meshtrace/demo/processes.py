"""Child processes that never outlive the demo: each in its own process group, all stopped together.

Theory of operation. Every child starts in a new session (its own process group), so a terminal's Ctrl-C reaches
only the demo, which then stops the children in reverse start order: SIGTERM to each group, a grace period, then
SIGKILL to any group still alive. Signalling the group also reaches grandchildren (a server's workers). `stop()`
is idempotent and is also registered with atexit, so an exception or SIGTERM/SIGHUP (turned into SystemExit by
the CLI) ends the same way.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshtrace.errors import MeshtraceError

__all__ = ["Child", "Supervisor", "free_port", "listener_owned_by"]


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A loopback port nothing listens on now and that this process has not handed out before.

    Why remember: the kernel may give the same port to two bind-to-port-0 calls once the first socket is closed.
    The demo picks 29 ports before it starts anything, and drew a duplicate in about 3% of runs; then two children
    raced for one port, the loser died with EADDRINUSE while the port still answered from the winner, and the
    mesh ran with every call to that service failing.
    """
    with _handed_out_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Supervisor:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        self._stopped = False
        atexit.register(self.stop)

    def start(self, name: str, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> Child:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def wait_port(self, child: Child, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise MeshtraceError(f"{child.name} exited with {child.process.returncode}:\n{child.tail()}")
            owner = listener_owned_by(child.pid, port)
            if owner is None:  # no /proc to ask: an answer on the port has to do
                with socket.socket() as sock:
                    owner = sock.connect_ex(("127.0.0.1", port)) == 0
            if owner:
                return
            time.sleep(0.05)
        raise MeshtraceError(f"{child.name} is not listening on 127.0.0.1:{port}:\n{child.tail()}")

    def wait_http(self, child: Child, url: str, deadline: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise MeshtraceError(f"{child.name} exited with {child.process.returncode}:\n{child.tail()}")
            try:
                with opener.open(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise MeshtraceError(f"{child.name} not ready at {url}:\n{child.tail()}")

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every group, wait up to `grace` seconds, SIGKILL what is left; reap everything."""
        if self._stopped:
            return
        self._stopped = True
        alive = [c for c in reversed(self.children) if c.process.poll() is None]
        for child in alive:
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.0, deadline - time.monotonic()))
        for child in alive:
            # Also kill what a finished leader may have left behind in its group.
            _signal_group(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
        atexit.unregister(self.stop)


def listener_owned_by(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds a socket listening on TCP `port`; None where /proc cannot tell (not Linux).

    Why not just connect: a port that answers may answer from another process. A child that lost its port to
    someone else dies with EADDRINUSE a moment later, and the mesh would run with that service missing.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            return None
        for row in rows:
            fields = row.split()
            # local address is HEX_IP:HEX_PORT; state 0A is LISTEN; field 9 is the socket's inode
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)

"""A forked child (a pre-fork server's worker) never writes on the kept-alive export connection it inherited.

The child and the parent POST large bodies at the same time through the one DirectHTTPTransport the parent had
already connected; a real loopback server checks that every POST arrives whole, and on which connection.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meshtrace.exporters.direct_http import DirectHTTPTransport

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

POSTS = 20
SIZE = 256 * 1024   # larger than a socket buffer: a send is split, so two writers on one stream interleave


def body(tag: bytes, index: int) -> bytes:
    """A body whose every byte says who sent it, with its number at the front: a mixed one is told at once."""
    label = tag + b"%03d:" % index
    return label + tag[:1] * (SIZE - len(label))


class Server:
    """Records (client port, body) for each POST it could frame, and every request it could not."""

    def __init__(self) -> None:
        self.received: list[tuple[int, bytes]] = []
        self.malformed: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.received.append((self.client_address[1], data))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                server.malformed.append(f"{code} {message}")
                super().send_error(code, message, explain)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1/traces"


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.http.shutdown()
    running.http.server_close()


def post_all(transport: DirectHTTPTransport, url: str, tag: bytes) -> bool:
    results = [transport.request("POST", url, headers={"Content-Type": "application/x-protobuf"}, timeout=5,
                                 data=body(tag, index)) for index in range(POSTS)]
    return all(result.status_code == 200 and result.error is None and result.content() == b"{}"
               for result in results)


def wait_for(pid: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -9


def test_a_forked_child_opens_its_own_connection_and_every_post_arrives_whole(server: Server) -> None:
    transport = DirectHTTPTransport()
    assert transport.request("POST", server.url, headers={}, timeout=5, data=b"first").status_code == 200
    parent_port = server.received[0][0]

    pid = os.fork()
    if pid == 0:  # the child: its exports, then straight out (no pytest teardown in a forked child)
        ok = False
        try:
            ok = post_all(transport, server.url, b"c")
        finally:
            os._exit(0 if ok else 1)
    parent_ok = post_all(transport, server.url, b"p")
    child_exit = wait_for(pid, 60)

    assert server.malformed == []
    assert child_exit == 0
    assert parent_ok
    bodies = [data for _, data in server.received[1:]]
    assert sorted(bodies) == sorted([body(b"c", i) for i in range(POSTS)] + [body(b"p", i) for i in range(POSTS)])
    child_ports = {port for port, data in server.received[1:] if data.startswith(b"c")}
    parent_ports = {port for port, data in server.received[1:] if data.startswith(b"p")}
    assert parent_ports == {parent_port}   # the parent keeps its connection
    assert len(child_ports) == 1   # the child makes one connection of its own and keeps it
    assert parent_port not in child_ports
    transport.close()


def test_the_parent_connection_survives_the_child_closing_its_copy(server: Server) -> None:
    transport = DirectHTTPTransport()
    assert transport.request("POST", server.url, headers={}, timeout=5, data=b"first").status_code == 200
    pid = os.fork()
    if pid == 0:
        transport.close()   # the child's copy of the parent's socket, closed: must not end the parent's connection
        os._exit(0)
    assert wait_for(pid, 30) == 0
    assert transport.request("POST", server.url, headers={}, timeout=5, data=b"again").status_code == 200
    assert [port for port, _ in server.received] == [server.received[0][0]] * 2
    transport.close()


def test_a_fork_that_ran_no_hooks_is_told_by_the_pid(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = DirectHTTPTransport()
    assert transport.request("POST", server.url, headers={}, timeout=5, data=b"first").status_code == 200
    real = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real + 1)   # as a child forked from C sees it: another pid
    assert transport.request("POST", server.url, headers={}, timeout=5, data=b"child").status_code == 200
    assert transport.request("POST", server.url, headers={}, timeout=5, data=b"again").status_code == 200
    ports = [port for port, _ in server.received]
    assert ports[0] != ports[1] == ports[2]   # a new connection once, then kept
    transport.close()

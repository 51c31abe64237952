"""Test helpers for the sidecar: an in-process sidecar on its own uvloop thread, upstream servers, raw clients.

Everything binds 127.0.0.1 on ports the OS picks; every thread and socket is closed by the fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import uvloop
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Tracer

from meshtrace.proxy.config import Address, SidecarConfig
from meshtrace.proxy.hop import Hop
from meshtrace.proxy.server import Sidecar

T = TypeVar("T")
BLOCK = 64 * 1024


def generated(size: int, seed: int) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes in blocks, so 100 MB never sits in memory."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(BLOCK, left)
        yield rng.randbytes(n)
        left -= n


def digest(size: int, seed: int) -> str:
    h = hashlib.sha256()
    for block in generated(size, seed):
        h.update(block)
    return h.hexdigest()


class Recorder:
    """A HopObserver that keeps every hop (thread-safe enough: appends from the proxy thread)."""

    def __init__(self) -> None:
        self.hops: list[Hop] = []

    def on_hop(self, hop: Hop) -> None:
        self.hops.append(hop)


class SidecarThread:
    """A Sidecar served by a uvloop loop in a daemon thread."""

    def __init__(self, config: SidecarConfig, *, tracer: Tracer | None = None,
                 propagator: TextMapPropagator | None = None) -> None:
        self.recorder = Recorder()
        self.sidecar = Sidecar(config, tracer=tracer, propagator=propagator, observers=[self.recorder])
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.sidecar.start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def port(self, direction: str = "inbound") -> int:
        return self.sidecar.port(direction)

    @property
    def hops(self) -> list[Hop]:
        return self.recorder.hops

    def wait_hops(self, count: int, timeout: float = 5.0) -> list[Hop]:
        deadline = threading.Event()
        for _ in range(int(timeout / 0.01)):
            if len(self.recorder.hops) >= count:
                break
            deadline.wait(0.01)
        return self.recorder.hops

    def close(self) -> None:
        try:
            self.call(self.sidecar.close(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def sidecar_config(upstream_port: int | None = None, **overrides: Any) -> SidecarConfig:
    base = SidecarConfig(service="reviews", tracing=False, access_log="",
                         listen=Address("127.0.0.1", 0) if upstream_port else None,
                         upstream=Address("127.0.0.1", upstream_port) if upstream_port else None)
    return replace(base, **overrides)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: UpstreamServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def _read_body(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left:
                    data = self.rfile.read(min(left, BLOCK))
                    if not data:
                        return
                    left -= len(data)
                    yield data
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, BLOCK))
                if not data:
                    return
                left -= len(data)
                yield data

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.requests.append((self.command, self.path, list(self.headers.items())))
        h = hashlib.sha256()
        length = 0
        for block in self._read_body():
            h.update(block)
            length += len(block)
        if url.path == "/download":
            size, seed = int(query["size"]), int(query.get("seed", "1"))
            chunked = query.get("chunked") == "1"
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return
            for block in generated(size, seed):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            return
        if url.path == "/slow":
            time.sleep(float(query.get("ms", "500")) / 1000)
        if url.path.startswith("/status/"):
            status = int(url.path.rsplit("/", 1)[1])
            self.send_response(status)
            if status not in (204, 304):
                self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"sha256": h.hexdigest(), "length": length, "method": self.command,
                           "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "keep-alive, X-Hop")
        self.send_header("X-Hop", "must-not-pass")
        self.send_header("Keep-Alive", "timeout=5")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle


class UpstreamServer(ThreadingHTTPServer):
    """A keep-alive HTTP/1.1 app: `/sha` hashes the body, `/download` streams generated bytes."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass                            # resets are part of the tests; nothing to print

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class RawServer:
    """A TCP server whose every connection is handled by `behaviour(sock)` in a thread (misbehaving upstreams)."""

    def __init__(self, behaviour: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.behaviour = behaviour
        self.stopped = threading.Event()
        self.accepted = 0
        self.clients: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self.clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.behaviour(client)
        client.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()
        for client in self.clients:
            client.close()


def read_head(sock: socket.socket) -> bytes:
    """Read a request head (up to the blank line) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def raw_exchange(port: int, payload: bytes, *, timeout: float = 5.0, shut: bool = False) -> bytes:
    """Send raw bytes, return everything received until the server closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        except ConnectionResetError:
            chunks.append(b"<RESET>")
        return b"".join(chunks)


def propagator_headers(propagator: TextMapPropagator, span: Any, context: Any) -> list[tuple[bytes, bytes]]:
    """What `propagator.inject` writes for `span`, as the hop tracer's `inject` must write it: lower-case byte
    pairs, without `x-request-id` and baggage (the proxy passes those through instead of injecting them)."""
    from opentelemetry import trace

    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=trace.set_span_in_context(span, context))
    return [(name.lower().encode(), value.encode()) for name, value in carrier.items()
            if name.lower() not in ("x-request-id", "baggage")
            and not name.lower().startswith(("uberctx-", "ot-baggage-"))]

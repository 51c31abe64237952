"""Upstream trouble becomes a local reply with Envoy's response flag, or a downstream reset after the head."""

from __future__ import annotations

import http.client
import socket
import threading
import time

from proxy_harness import RawServer, SidecarThread, raw_exchange, read_head, sidecar_config

from meshtrace.demo.processes import free_port

GET = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


def _run(upstream_port: int, **overrides: object) -> tuple[bytes, SidecarThread]:
    proxy = SidecarThread(sidecar_config(upstream_port, **overrides))
    try:
        return raw_exchange(proxy.port(), GET, timeout=10), proxy
    finally:
        proxy.wait_hops(1)
        proxy.close()


def test_refused_connection_is_503_uf() -> None:
    data, proxy = _run(free_port())
    assert data.startswith(b"HTTP/1.1 503 ")
    assert b"upstream connect error or disconnect/reset before headers. reset reason: connection failure" in data
    assert proxy.hops[0].response_flags == "UF"
    assert proxy.hops[0].status == 503


def test_hanging_upstream_is_504_ut() -> None:
    release = threading.Event()

    def hang(sock: socket.socket) -> None:
        read_head(sock)
        release.wait(10)

    server = RawServer(hang)
    try:
        data, proxy = _run(server.port, upstream_timeout=0.3)
    finally:
        release.set()
        server.close()
    assert data.startswith(b"HTTP/1.1 504 ")
    assert b"upstream request timeout" in data
    assert (proxy.hops[0].status, proxy.hops[0].response_flags) == (504, "UT")


def test_route_timeout_per_request_on_a_keep_alive_connection() -> None:
    # The route timeout rides on the connection's one timer: each request gets its own full timeout (requests that
    # together outlast it are fine), a timer woken earlier for the header timeout sleeps on, and a request that
    # does hang still gets its 504 when its own timeout runs out.
    release = threading.Event()

    def serve(sock: socket.socket) -> None:
        while True:
            head = read_head(sock)
            if not head:
                return
            if head.startswith(b"GET /hang "):
                release.wait(10)
                return
            time.sleep(0.15)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = RawServer(serve)
    proxy = SidecarThread(sidecar_config(server.port, upstream_timeout=0.5, header_timeout=0.2))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port(), timeout=10)
        for _ in range(5):                              # 0.75 s on one connection, 0.15 s each
            conn.request("GET", "/")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"ok")
        started = time.monotonic()
        conn.request("GET", "/hang")
        response = conn.getresponse()
        waited = time.monotonic() - started
        assert response.status == 504
        assert b"upstream request timeout" in response.read()
        assert 0.45 <= waited < 3.0
        hops = proxy.wait_hops(6)
        assert [(hop.status, hop.response_flags) for hop in hops] == [(200, "-")] * 5 + [(504, "UT")]
        conn.close()
    finally:
        release.set()
        proxy.close()
        server.close()


def test_close_before_headers_is_503_uc() -> None:
    def close(sock: socket.socket) -> None:
        read_head(sock)
        sock.close()

    server = RawServer(close)
    try:
        data, proxy = _run(server.port)
    finally:
        server.close()
    assert data.startswith(b"HTTP/1.1 503 ")
    assert b"reset reason: connection termination" in data
    assert proxy.hops[0].response_flags == "UC"


def test_close_mid_response_resets_the_downstream_with_uc() -> None:
    def half(sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        sock.close()

    server = RawServer(half)
    try:
        proxy = SidecarThread(sidecar_config(server.port))
        try:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port(), timeout=5)
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            try:
                response.read()
                raise AssertionError("a truncated body must not look complete")
            except (http.client.IncompleteRead, ConnectionResetError):
                pass
            hop = proxy.wait_hops(1)[0]
            assert (hop.status, hop.response_flags) == (200, "UC")
        finally:
            proxy.close()
    finally:
        server.close()


def test_garbage_from_upstream_is_502_upe() -> None:
    def garbage(sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    server = RawServer(garbage)
    try:
        data, proxy = _run(server.port)
    finally:
        server.close()
    assert data.startswith(b"HTTP/1.1 502 ")
    assert proxy.hops[0].response_flags == "UPE"


def test_stale_pooled_connection_is_retried_once() -> None:
    """The upstream closes a keep-alive connection after one response: the next request must still work."""
    def one_shot(sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        # No Connection: close, yet the socket is closed: exactly the race a pool must survive.
        sock.close()

    server = RawServer(one_shot)
    proxy = SidecarThread(sidecar_config(server.port))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port(), timeout=5)
        for _ in range(3):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"ok")
        assert [h.response_flags for h in proxy.wait_hops(3)] == ["-", "-", "-"]
    finally:
        proxy.close()
        server.close()


def test_upstream_timeout_starts_when_the_request_has_been_sent() -> None:
    """A slow upload is not an upstream timeout: the clock starts at the request's end, as in Envoy."""
    def app(sock: socket.socket) -> None:
        data = read_head(sock)
        while not data.endswith(b"0\r\n\r\n"):
            more = sock.recv(65536)
            if not more:
                return
            data += more
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    server = RawServer(app)
    proxy = SidecarThread(sidecar_config(server.port, upstream_timeout=0.3))
    try:
        with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(4):
                sock.sendall(b"1\r\nx\r\n")
                threading.Event().wait(0.2)
            sock.sendall(b"0\r\n\r\n")
            assert read_head(sock).startswith(b"HTTP/1.1 200 ")
    finally:
        proxy.close()
        server.close()


def test_stalled_body_hits_the_stream_idle_timeout() -> None:
    release = threading.Event()

    def stall(sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        release.wait(10)

    server = RawServer(stall)
    proxy = SidecarThread(sidecar_config(server.port, stream_idle_timeout=0.4))
    try:
        started = time.monotonic()
        data = raw_exchange(proxy.port(), GET, timeout=5)
        assert data.startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - started < 2
        hop = proxy.wait_hops(1)[0]
        assert (hop.status, hop.response_flags) == (200, "SI")
    finally:
        release.set()
        proxy.close()
        server.close()

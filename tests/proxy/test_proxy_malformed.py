"""Malformed and ambiguous requests are answered by the sidecar (400/431/408) and never reach the app."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from proxy_harness import SidecarThread, UpstreamServer, raw_exchange, sidecar_config

H = b"Host: a\r\n"

CASES: dict[str, tuple[bytes, int, bytes]] = {
    "cl-and-te": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                  400, b"Content-Length"),
    "te-and-cl": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
                  400, b"Transfer-Encoding"),
    "duplicate-cl": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                     400, b"Duplicate Content-Length"),
    "cl-list": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400, b"Content-Length"),
    "negative-cl": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400, b"Content-Length"),
    "obs-fold": (b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n", 400, b"whitespace"),
    "bad-chunk-size": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                       400, b"chunk size"),
    "chunk-size-overflow": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                            b"fffffffffffffffffff\r\n", 400, b"overflow"),
    "te-not-chunked": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nhello", 400,
                       b"Transfer-Encoding"),
    "te-in-http10": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, b"HTTP/1.0"),
    "control-char-in-value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x01c\r\n\r\n", 400, b"header value"),
    "nul-in-value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x00c\r\n\r\n", 400, b"header value"),
    "control-char-in-name": (b"GET / HTTP/1.1\r\n" + H + b"X\x01A: bc\r\n\r\n", 400, b"header token"),
    "space-before-colon": (b"GET / HTTP/1.1\r\n" + H + b"X-A : bc\r\n\r\n", 400, b"header token"),
    "bare-lf": (b"GET / HTTP/1.1\nHost: a\n\n", 400, b"CRLF"),
    "missing-host": (b"GET / HTTP/1.1\r\n\r\n", 400, b"missing Host"),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, b"multiple Host"),
    "bad-version": (b"GET / HTTP/9.9\r\n" + H + b"\r\n", 400, b"version"),
    "bad-target": (b"GET foo HTTP/1.1\r\n" + H + b"\r\n", 400, b"url"),
    "huge-header": (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n", 431, b"too large"),
    "too-many-headers": (b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
                         431, b"too large"),
    "huge-url": (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n" + H + b"\r\n", 431, b"too large"),
}


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[SidecarThread, UpstreamServer]]:
    upstream = UpstreamServer()
    proxy = SidecarThread(sidecar_config(upstream.port, header_timeout=0.5))
    try:
        yield proxy, upstream
    finally:
        proxy.close()
        upstream.close()


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_request_is_answered_locally(proxied: tuple[SidecarThread, UpstreamServer], name: str) -> None:
    proxy, upstream = proxied
    payload, status, reason = CASES[name]
    before = len(upstream.requests)
    data = raw_exchange(proxy.port(), payload)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), data[:200]
    assert b"connection: close" in head.lower()
    assert reason.lower() in body.lower()
    assert b"Traceback" not in data
    assert len(upstream.requests) == before           # never forwarded


def test_bad_chunk_after_forwarding_started_gets_400_and_close(proxied: tuple[SidecarThread, UpstreamServer]) -> None:
    proxy, _ = proxied
    with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as sock:
        sock.sendall(b"POST /sha HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.2)
        sock.sendall(b"zz\r\n")
        data = b""
        for _ in range(100):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"chunk size" in data


def test_slow_client_gets_408(proxied: tuple[SidecarThread, UpstreamServer]) -> None:
    proxy, _ = proxied
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHo")
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"request header timeout" in data
    assert 0.4 < time.monotonic() - started < 3


def test_protocol_errors_are_recorded_as_dpe(proxied: tuple[SidecarThread, UpstreamServer]) -> None:
    proxy, _ = proxied
    raw_exchange(proxy.port(), b"GET / HTTP/1.1\r\n\r\n")
    hop = proxy.wait_hops(1)[-1]
    assert (hop.status, hop.response_flags) == (400, "DPE")


def test_connect_is_refused_cleanly(proxied: tuple[SidecarThread, UpstreamServer]) -> None:
    proxy, upstream = proxied
    before = len(upstream.requests)
    data = raw_exchange(proxy.port(), b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 405 ")
    assert len(upstream.requests) == before

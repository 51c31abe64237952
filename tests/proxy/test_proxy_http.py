"""HTTP/1.1 through the sidecar on real sockets: bodies, keep-alive, framing, pipelining, upgrades."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
from typing import Any

import pytest
from proxy_harness import (
    RawServer,
    SidecarThread,
    UpstreamServer,
    digest,
    generated,
    raw_exchange,
    read_head,
    sidecar_config,
)

MB = 1024 * 1024


def _json(response: http.client.HTTPResponse) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.read())
    return data


@pytest.mark.parametrize("size", [0, 1, 65537, 3 * MB, 100 * MB], ids=lambda s: f"{s}B")
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_arrives_intact(sidecar: SidecarThread, size: int, chunked: bool) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=60)
    headers = {} if chunked else {"Content-Length": str(size)}
    conn.request("POST", "/sha", body=generated(size, seed=size), headers=headers, encode_chunked=chunked)
    body = _json(conn.getresponse())
    assert body["length"] == size
    assert body["sha256"] == digest(size, seed=size)
    conn.close()


@pytest.mark.parametrize("size", [0, 1, 65537, 3 * MB, 100 * MB], ids=lambda s: f"{s}B")
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_download_arrives_intact(sidecar: SidecarThread, size: int, chunked: bool) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=60)
    conn.request("GET", f"/download?size={size}&seed=7&chunked={int(chunked)}")
    response = conn.getresponse()
    assert response.status == 200
    h = hashlib.sha256()
    total = 0
    while block := response.read(1 << 16):
        h.update(block)
        total += len(block)
    assert total == size
    assert h.hexdigest() == digest(size, seed=7)
    if chunked:
        assert response.getheader("transfer-encoding") == "chunked"
    else:
        assert response.getheader("content-length") == str(size)
    conn.close()


def test_keep_alive_reuses_one_upstream_connection(sidecar: SidecarThread, upstream: UpstreamServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=10)
    for i in range(5):
        conn.request("POST", "/sha", body=b"x" * i)
        assert _json(conn.getresponse())["length"] == i
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=10)
    conn.request("GET", "/sha")
    conn.getresponse().read()
    conn.close()
    assert upstream.connections == 1
    assert len(upstream.requests) == 6


def test_both_sides_disable_nagle(sidecar: SidecarThread) -> None:
    """Small heads and bodies leave at once: with Nagle on, a response written in two pieces could wait for the
    peer's delayed ACK (tens of milliseconds) on either the client side or the upstream side."""
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=10)
    conn.request("GET", "/sha")
    conn.getresponse().read()

    async def nodelay_flags() -> list[int]:
        assert sidecar.sidecar.pools is not None
        transports = [c.transport for listener in sidecar.sidecar.listeners  # type: ignore[attr-defined]
                      for c in listener.context.connections]
        transports += [up.transport for pool in sidecar.sidecar.pools.all() for up in pool.idle]
        return [t.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for t in transports]

    flags = sidecar.call(nodelay_flags())
    conn.close()
    assert len(flags) == 2          # the client's connection and the pooled upstream one
    assert all(flags)


def test_hop_by_hop_headers_are_removed_both_ways(sidecar: SidecarThread) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=10)
    conn.request("GET", "/sha", headers={"Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "5",
                                         "Proxy-Authorization": "Basic x", "TE": "trailers", "X-Kept": "yes",
                                         "Proxy-Connection": "keep-alive", "Upgrade-Insecure-Requests": "1"})
    response = conn.getresponse()
    seen = _json(response)["headers"]
    for name in ("x-secret", "keep-alive", "proxy-authorization", "te", "proxy-connection"):
        assert name not in seen
    assert seen["x-kept"] == "yes"
    assert seen["upgrade-insecure-requests"] == "1"     # not hop-by-hop despite its name
    assert seen["x-request-id"]                          # made by the sidecar
    assert response.getheader("x-hop") is None           # named in the upstream's Connection header
    assert response.getheader("keep-alive") is None
    conn.close()


def test_request_id_is_kept_when_present(sidecar: SidecarThread) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=10)
    conn.request("GET", "/sha", headers={"X-Request-Id": "abc-123"})
    assert _json(conn.getresponse())["headers"]["x-request-id"] == "abc-123"
    assert sidecar.wait_hops(1)[0].request_id == "abc-123"


def test_head_and_bodiless_statuses(sidecar: SidecarThread) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=10)
    conn.request("HEAD", "/download?size=1000")
    response = conn.getresponse()
    assert response.getheader("content-length") == "1000"
    assert response.read() == b""
    for status in (204, 304):
        conn.request("GET", f"/status/{status}")
        response = conn.getresponse()
        assert response.status == status
        assert response.read() == b""
    conn.request("GET", "/sha")                          # the connection is still in sync
    assert _json(conn.getresponse())["method"] == "GET"
    conn.close()


def test_expect_100_continue_is_answered_before_the_body(sidecar: SidecarThread) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port()), timeout=5) as sock:
        sock.sendall(b"POST /sha HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 ")


def test_pipelined_requests_are_answered_in_order(sidecar: SidecarThread) -> None:
    requests = b"".join(b"POST /sha?n=%d HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
                        % (i, i, b"y" * i) for i in range(10))
    data = raw_exchange(sidecar.port(), requests + b"GET /sha?n=last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert data.count(b"HTTP/1.1 200 OK") == 11
    paths = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["path"]
             for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    assert paths == [f"/sha?n={i}" for i in range(10)] + ["/sha?n=last"]


def test_connection_close_is_honoured(sidecar: SidecarThread) -> None:
    data = raw_exchange(sidecar.port(), b"GET /sha HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", timeout=5)
    assert b"connection: close" in data.lower()
    assert data.count(b"HTTP/1.1 200") == 1          # and the server closed: raw_exchange returned before timeout


def test_http10_client_gets_a_close_delimited_body(sidecar: SidecarThread) -> None:
    data = raw_exchange(sidecar.port(), b"GET /download?size=100&chunked=1 HTTP/1.0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert len(body) == 100


def test_websocket_upgrade_is_tunnelled() -> None:
    def app(sock: socket.socket) -> None:
        head = read_head(sock)
        assert b"upgrade: websocket" in head.lower()
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        while data := sock.recv(1024):
            sock.sendall(data.upper())

    server = RawServer(app)
    proxy = SidecarThread(sidecar_config(server.port))
    try:
        with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as sock:
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            head = read_head(sock)
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"upgrade: websocket" in head.lower()
            sock.sendall(b"raw \x00\xff bytes")
            got = b""
            for _ in range(100):
                chunk = sock.recv(100)
                got += chunk
                if not chunk or len(got) >= 12:
                    break
            assert got == b"RAW \x00\xff BYTES"
    finally:
        proxy.close()
        server.close()


def test_outbound_forwards_absolute_form_and_host_header(upstream: UpstreamServer) -> None:
    from meshtrace.proxy.config import Address

    proxy = SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0)))
    try:
        port = proxy.port("outbound")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"http://127.0.0.1:{upstream.port}/sha?q=1", headers={"Host": "ignored"})
        seen = _json(conn.getresponse())
        assert seen["path"] == "/sha?q=1"
        assert seen["headers"]["host"] == f"127.0.0.1:{upstream.port}"
        assert "x-meshtrace-peer" in seen["headers"]
        conn.request("GET", "/sha", headers={"Host": f"127.0.0.1:{upstream.port}"})
        assert _json(conn.getresponse())["path"] == "/sha"
        conn.request("GET", "/sha", headers={"Host": f"127.0.0.1:{port}"})    # itself: would loop
        response = conn.getresponse()
        assert response.status == 404
        assert b"route not found" in response.read()
        hops = proxy.wait_hops(3)
        assert [h.response_flags for h in hops] == ["-", "-", "NR"]
        assert hops[0].direction == "outbound"
        assert hops[0].upstream_cluster == f"outbound|{upstream.port}||127.0.0.1"
    finally:
        proxy.close()


def test_thousands_of_pipelined_local_replies(upstream: UpstreamServer) -> None:
    """A long pipeline answered locally (404 NR) must neither recurse nor lose order."""
    from meshtrace.proxy.config import Address

    proxy = SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0)))
    try:
        port = proxy.port("outbound")
        request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port       # itself: no route
        data = raw_exchange(port, request * 3000 + b"GET / HTTP/1.1\r\nHost: x:1\r\nConnection: close\r\n\r\n"
                            .replace(b"x:1", b"127.0.0.1:%d" % port), timeout=20)
        assert data.count(b"HTTP/1.1 404 ") == 3001
    finally:
        proxy.close()

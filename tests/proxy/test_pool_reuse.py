"""Upstream keep-alive under concurrent clients: the pool never opens more connections than requests in flight.

A reconnect to the app costs a handshake on the request that pays for it; under a paced load of many client
connections (issue 4's 20) that is exactly the kind of occasional delay that sets the p99. These tests pin the
pool's reuse across client connections, so a change to the pool's idle limits or release rules that starts
churning upstream connections fails here rather than as a vague tail-latency regression.
"""

from __future__ import annotations

import http.client
import threading

from proxy_harness import SidecarThread, UpstreamServer

CLIENTS = 8
REQUESTS = 25


def _client(port: int, errors: list[BaseException], start: threading.Barrier) -> None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        start.wait(10)
        for _ in range(REQUESTS):
            conn.request("GET", "/sha")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        conn.close()
    except BaseException as exc:  # reported by the test thread, which can fail the test
        errors.append(exc)


def test_concurrent_clients_share_pooled_upstream_connections(sidecar: SidecarThread,
                                                              upstream: UpstreamServer) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(CLIENTS)
    threads = [threading.Thread(target=_client, args=(sidecar.port(), errors, start)) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(sidecar.wait_hops(CLIENTS * REQUESTS)) == CLIENTS * REQUESTS
    # At most one upstream connection per request in flight at once: never one per request, nor a reconnect
    # after some number of them.
    assert upstream.connections <= CLIENTS
    stats = sidecar.sidecar.stats()
    assert stats["cluster.upstream_cx_total"] == upstream.connections
    assert stats["cluster.upstream_cx_idle"] == upstream.connections      # all back in the pool, none closed


def test_sequential_clients_reuse_one_upstream_connection(sidecar: SidecarThread, upstream: UpstreamServer) -> None:
    """Requests that never overlap need one upstream connection, whichever client connection they arrive on."""
    conns = [http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=10) for _ in range(CLIENTS)]
    for _ in range(5):
        for conn in conns:
            conn.request("GET", "/sha")
            conn.getresponse().read()
    for conn in conns:
        conn.close()
    assert upstream.connections == 1
    assert sidecar.sidecar.stats()["cluster.upstream_cx_total"] == 1

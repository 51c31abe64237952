"""The running `meshtrace proxy` serves its admin endpoints, and /metrics counts a known sequence of requests."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess

from proxy_harness import UpstreamServer, read_head


def _admin(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read().decode()


def _count(metrics: str, code: str) -> float:
    pattern = re.compile(r'^istio_requests_total\{([^}]*)\} (\S+)$', re.M)
    total = 0.0
    for labels, value in pattern.findall(metrics):
        if f'response_code="{code}"' in labels and 'reporter="destination"' in labels:
            total += float(value)
    return total


def test_metrics_after_a_known_sequence(proxy_process: tuple[subprocess.Popen[bytes], int, int],
                                        upstream: UpstreamServer) -> None:
    _, listen, admin = proxy_process
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    for path in ("/sha", "/sha", "/sha", "/status/503", "/status/204"):
        conn.request("GET", path)
        conn.getresponse().read()
    conn.close()
    status, metrics = _admin(admin, "/metrics")
    assert status == 200
    assert (_count(metrics, "200"), _count(metrics, "503"), _count(metrics, "204")) == (3, 1, 1)
    assert 'destination_app="reviews"' in metrics
    status, dump = _admin(admin, "/config_dump")
    assert status == 200
    config = json.loads(dump)
    assert config["service"] == "reviews"
    assert config["listeners"][0]["address"] == f"127.0.0.1:{listen}"
    assert _admin(admin, "/ready") [0] == 200
    assert _admin(admin, "/healthz")[0] == 200
    status, stats = _admin(admin, "/stats")
    assert "listener.inbound.downstream_rq_completed: 5" in stats


def test_expect_continue_to_a_dead_upstream_gets_503_without_the_body(
        proxy_process: tuple[subprocess.Popen[bytes], int, int], upstream: UpstreamServer) -> None:
    _, listen, _ = proxy_process
    upstream.close()                          # nothing listens there any more
    with socket.create_connection(("127.0.0.1", listen), timeout=5) as sock:
        sock.sendall(b"POST /sha HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
        head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 503 ")      # never a 100 Continue first: the body was not wanted
    assert b"connection: close" in head.lower()

"""Retries and timeouts of Istio routes: policy logic with a seeded RNG, then real failing/hanging upstreams."""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from proxy_harness import RawServer, SidecarThread, read_head, sidecar_config
from traffic_support import API, service_entry

from meshtrace.demo.processes import free_port
from meshtrace.proxy.config import Address
from meshtrace.proxy.istio_config import Retries
from meshtrace.proxy.retry import RetryPolicy

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"


def test_retry_on_conditions() -> None:
    rng = random.Random(1)
    five = RetryPolicy(Retries(2, retry_on=("5xx",)), rng)
    assert five.retriable_status(500)
    assert five.retriable_status(599)
    assert not five.retriable_status(404)
    assert five.reset
    assert five.connect_failure
    gateway = RetryPolicy(Retries(2, retry_on=("gateway-error",)), rng)
    assert [gateway.retriable_status(s) for s in (500, 502, 503, 504)] == [False, True, True, True]
    assert gateway.connect_failure
    assert not gateway.reset
    bare = RetryPolicy(Retries(2, retry_on=("429", "retriable-4xx")), rng)
    assert [bare.retriable_status(s) for s in (429, 409, 503)] == [True, True, False]
    assert not bare.connect_failure
    assert not bare.reset
    assert RetryPolicy(Retries(1, retry_on=("reset",)), rng).reset


def test_backoff_is_jittered_from_25ms_and_capped_at_250ms() -> None:
    policy = RetryPolicy(Retries(10), random.Random(5))
    first = [policy.backoff(1) for _ in range(2000)]
    assert 0 <= min(first) < 0.002
    assert 0.023 < max(first) <= 0.025
    third = [policy.backoff(3) for _ in range(2000)]
    assert 0.17 < max(third) <= 0.175
    assert max(policy.backoff(9) for _ in range(2000)) <= 0.25


class Flaky:
    """A raw upstream: the first `failures` connections get `bad(sock)`, later ones a 200 per request."""

    def __init__(self, failures: int, bad: Callable[[socket.socket], None]) -> None:
        self.failures = failures
        self.bad = bad
        self.lock = threading.Lock()
        self.seen = 0
        self.server = RawServer(self._serve)

    def _serve(self, sock: socket.socket) -> None:
        with self.lock:
            self.seen += 1
            n = self.seen
        if n <= self.failures:
            self.bad(sock)
            return
        while read_head(sock):
            sock.sendall(OK)


def start(tmp_path: Path, port: int, route_extra: str) -> SidecarThread:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        API + "kind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n"
        "  - route: [{destination: {host: reviews}}]\n" + route_extra
        + "---\n" + service_entry("reviews", [("127.0.0.1", port, "v1")], port=9080))
    return SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules)))


def request(proxy: SidecarThread, body: bytes | None = None) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port("outbound"), timeout=10)
    try:
        conn.request("POST" if body is not None else "GET", "/", body=body, headers={"Host": "reviews:9080"})
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        conn.close()


def answer_503(sock: socket.socket) -> None:
    read_head(sock)
    sock.sendall(UNAVAILABLE)


def test_retriable_status_is_retried_until_success(tmp_path: Path) -> None:
    flaky = Flaky(2, answer_503)
    proxy = start(tmp_path, flaky.server.port, "    retries: {attempts: 3, retryOn: 5xx}\n")
    try:
        assert request(proxy)[0] == 200
        hop = proxy.wait_hops(1)[0]
        assert (hop.status, hop.response_flags, hop.attempts) == (200, "-", 3)
        assert flaky.seen == 3
    finally:
        proxy.close()
        flaky.server.close()


def test_exhausted_retries_pass_the_last_response_with_urx(tmp_path: Path) -> None:
    flaky = Flaky(100, answer_503)
    proxy = start(tmp_path, flaky.server.port, "    retries: {attempts: 2, retryOn: '503'}\n")
    try:
        assert request(proxy)[0] == 503
        hop = proxy.wait_hops(1)[0]
        assert (hop.response_flags, hop.attempts) == ("URX", 3)
        assert flaky.seen == 3
    finally:
        proxy.close()
        flaky.server.close()


def test_close_mid_response_head_is_a_reset_and_retried(tmp_path: Path) -> None:
    def half(sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")

    flaky = Flaky(1, half)
    proxy = start(tmp_path, flaky.server.port, "    retries: {attempts: 1, retryOn: reset}\n")
    try:
        assert request(proxy, b"small body is kept")[0] == 200
        assert proxy.wait_hops(1)[0].attempts == 2
    finally:
        proxy.close()
        flaky.server.close()


def test_no_retry_when_the_condition_is_not_listed(tmp_path: Path) -> None:
    flaky = Flaky(1, answer_503)
    proxy = start(tmp_path, flaky.server.port, "    retries: {attempts: 3, retryOn: connect-failure}\n")
    try:
        assert request(proxy)[0] == 503
        assert flaky.seen == 1
        assert proxy.wait_hops(1)[0].response_flags == "-"
    finally:
        proxy.close()
        flaky.server.close()


def read_all_then_503(sock: socket.socket) -> None:
    """Answer 503 only once the whole body arrived, so the proxy has seen every byte before the failure."""
    data = read_head(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    received = len(body)
    while received < length:                # bounded: EOF ends it (a closed peer must not spin a thread)
        chunk = sock.recv(65536)
        if not chunk:
            return
        received += len(chunk)
    sock.sendall(UNAVAILABLE)


def test_big_bodies_are_not_retried(tmp_path: Path) -> None:
    # Once more than 64 KiB went upstream the body is no longer kept whole: the 503 goes to the client.
    # (A failure while everything received so far is still kept is retried; the rest then streams on.)
    flaky = Flaky(1, read_all_then_503)
    proxy = start(tmp_path, flaky.server.port, "    retries: {attempts: 3, retryOn: 5xx}\n")
    try:
        status = request(proxy, b"x" * (65 * 1024))[0]
        hop = proxy.wait_hops(1)[0]
        assert status == 503, (hop, flaky.seen)
        assert (hop.attempts, hop.response_flags) == (1, "-")
        assert flaky.seen == 1
    finally:
        proxy.close()
        flaky.server.close()


def test_connect_failure_retries_then_uf_with_urx(tmp_path: Path) -> None:
    proxy = start(tmp_path, free_port(), "    retries: {attempts: 2, retryOn: connect-failure}\n")
    try:
        assert request(proxy)[0] == 503
        hop = proxy.wait_hops(1)[0]
        assert (hop.response_flags, hop.attempts) == ("URX,UF", 3)
    finally:
        proxy.close()


def hang(sock: socket.socket) -> None:
    read_head(sock)
    time.sleep(3)


def test_per_try_timeout_retries_a_hanging_upstream(tmp_path: Path) -> None:
    flaky = Flaky(1, hang)
    proxy = start(tmp_path, flaky.server.port,
                  "    retries: {attempts: 2, perTryTimeout: 200ms, retryOn: 5xx}\n    timeout: 2s\n")
    try:
        status, took = request(proxy)
        assert status == 200
        assert 0.2 <= took < 1.5
        assert proxy.wait_hops(1)[0].attempts == 2
    finally:
        proxy.close()
        flaky.server.close()


def test_route_timeout_covers_all_tries(tmp_path: Path) -> None:
    flaky = Flaky(100, hang)
    proxy = start(tmp_path, flaky.server.port,
                  "    retries: {attempts: 10, perTryTimeout: 300ms, retryOn: 5xx}\n    timeout: 500ms\n")
    try:
        status, took = request(proxy)
        assert status == 504
        assert 0.5 <= took < 1.2
        hop = proxy.wait_hops(1)[0]
        assert hop.response_flags == "URX,UT"
        assert hop.attempts == 2
    finally:
        proxy.close()
        flaky.server.close()


def test_route_timeout_without_retries(tmp_path: Path) -> None:
    flaky = Flaky(100, hang)
    proxy = start(tmp_path, flaky.server.port, "    timeout: 300ms\n")
    try:
        status, took = request(proxy)
        assert status == 504
        assert 0.3 <= took < 1.0
        assert proxy.wait_hops(1)[0].response_flags == "UT"
    finally:
        proxy.close()
        flaky.server.close()

"""LEAST_REQUEST reads real in-flight counts: up when a request is attached to a host, down when it finishes."""

from __future__ import annotations

import http.client
import random
import socket
import threading
from pathlib import Path

from proxy_harness import RawServer, SidecarThread, read_head, sidecar_config
from traffic_support import API, head, service_entry, subsets_rule

from meshtrace.proxy.balancer import Host, LeastRequestBalancer
from meshtrace.proxy.config import Address

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def test_least_request_follows_in_flight_counts() -> None:
    hosts = [Host("a", 80), Host("b", 80), Host("c", 80)]
    lr = LeastRequestBalancer(random.Random(3))
    for _ in range(30):                 # attach each pick as the exchange does: the counts stay level
        lr.choose(hosts).active += 1
    assert max(h.active for h in hosts) - min(h.active for h in hosts) <= 2
    for host in hosts:
        host.active = 0
    hosts[1].active = 1
    assert {lr.choose(hosts).address for _ in range(200)} <= {"a", "c"}


def test_in_flight_counts_rise_during_a_burst_and_return_to_zero(tmp_path: Path) -> None:
    release = threading.Event()
    reached = threading.Semaphore(0)

    def slow_ok(sock: socket.socket) -> None:
        read_head(sock)
        reached.release()
        release.wait(10)
        sock.sendall(OK)

    def slow_reset(sock: socket.socket) -> None:
        read_head(sock)
        reached.release()
        release.wait(10)                # then closes without an answer: 503 UC, an error still finishes

    good, bad = RawServer(slow_ok), RawServer(slow_reset)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        API + "kind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n"
        "  - route: [{destination: {host: reviews}}]\n---\n"
        + subsets_rule("reviews", [], "{loadBalancer: {simple: LEAST_REQUEST}}").replace("  subsets:\n", "")
        + "---\n" + service_entry("reviews", [("127.0.0.1", good.port, "v1"), ("127.0.0.1", bad.port, "v2")],
                                  port=9080))
    proxy = SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules)))
    statuses: list[int] = []

    def call() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port("outbound"), timeout=10)
        try:
            conn.request("GET", "/", headers={"Host": "reviews:9080"})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        finally:
            conn.close()

    burst = 10
    threads = [threading.Thread(target=call) for _ in range(burst)]
    try:
        router = proxy.sidecar.rule_router
        assert router is not None
        endpoints: set[Host] = set()
        for _ in range(50):
            decision = router.route(head(host="reviews:9080"))
            assert decision is not None
            assert decision.route.endpoint is not None
            endpoints.add(decision.route.endpoint)
        assert len(endpoints) == 2
        for thread in threads:
            thread.start()
        for _ in range(burst):
            assert reached.acquire(timeout=5)
        assert sum(h.active for h in endpoints) == burst
        assert all(h.active >= 3 for h in endpoints)     # least request spreads the burst over both
        release.set()
        for thread in threads:
            thread.join(10)
        assert sorted(set(statuses)) == [200, 503]
        assert len(statuses) == burst
        for _ in range(500):
            if not any(h.active for h in endpoints):
                break
            threading.Event().wait(0.01)
        assert [h.active for h in endpoints] == [0, 0]
    finally:
        release.set()
        proxy.close()
        good.close()
        bad.close()

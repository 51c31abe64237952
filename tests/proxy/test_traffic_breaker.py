"""Circuit breakers (DestinationRule connectionPool): the counters without sockets, then a real sidecar."""

from __future__ import annotations

import threading
from pathlib import Path

from proxy_harness import SidecarThread, UpstreamServer, sidecar_config
from traffic_support import API, service_entry, status_of_get

from meshtrace.proxy.breaker import CircuitBreaker, ClusterLimits
from meshtrace.proxy.config import Address
from meshtrace.proxy.istio_config import PoolPolicy, parse_rules
from meshtrace.proxy.upstream import UpstreamConnection


def test_circuit_breaker_counts_and_refuses_beyond_its_limit() -> None:
    breaker = CircuitBreaker(2)
    assert breaker.try_acquire()
    assert breaker.try_acquire()
    assert breaker.full
    assert not breaker.try_acquire()
    assert breaker.overflows == 1
    breaker.release()
    assert breaker.try_acquire()
    unlimited = CircuitBreaker(None)
    assert all(unlimited.try_acquire() for _ in range(10_000))
    assert not unlimited.full
    unlimited.release()
    assert unlimited.active == 9_999


class FakeWaiter:
    def __init__(self, key: object) -> None:
        self.wait_key = key
        self.slots = 0
        self.connections: list[UpstreamConnection] = []

    def on_slot(self) -> None:
        self.slots += 1

    def on_connection(self, conn: UpstreamConnection) -> None:
        self.connections.append(conn)


def test_pending_requests_queue_up_to_the_limit_and_get_freed_slots_in_order() -> None:
    limits = ClusterLimits("c", PoolPolicy(max_connections=1, http1_max_pending_requests=2))
    assert limits.connections.try_acquire()
    assert not limits.connections.try_acquire()
    pool_a, pool_b = object(), object()
    first, second, third = FakeWaiter(pool_a), FakeWaiter(pool_b), FakeWaiter(pool_a)
    assert limits.wait(first)
    assert limits.wait(second)
    assert not limits.wait(third)               # the third overflows: 503 UO
    assert limits.pending.overflows == 1
    assert limits.take_waiter(pool_b) is second   # a released connection of pool b goes to b's waiter
    limits.connection_closed()                  # the slot passes to the first waiter, still held
    assert first.slots == 1
    assert limits.connections.active == 1
    assert limits.pending.active == 0
    limits.connection_closed()                  # nobody waits: the slot is free again
    assert limits.connections.active == 0


def test_cancelled_waiters_give_their_pending_slot_back() -> None:
    limits = ClusterLimits("c", PoolPolicy(max_connections=1, http1_max_pending_requests=1))
    waiter = FakeWaiter(object())
    assert limits.wait(waiter)
    limits.cancel(waiter)
    limits.cancel(waiter)                       # twice is harmless
    assert limits.pending.active == 0
    assert limits.wait(FakeWaiter(object()))


def test_requests_per_connection_and_retry_budget() -> None:
    limits = ClusterLimits("c", PoolPolicy(max_requests_per_connection=2, max_retries=1))
    assert limits.keep_connection(1)
    assert not limits.keep_connection(2)
    assert limits.retries.try_acquire()
    assert not limits.retries.try_acquire()
    assert ClusterLimits("c", PoolPolicy()).keep_connection(10**9)


def test_connection_pool_fields_are_not_reported_as_unsupported() -> None:
    rules = parse_rules(
        API + "kind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: reviews\n  trafficPolicy:\n"
        "    connectionPool:\n      tcp: {maxConnections: 1, connectTimeout: 1s}\n"
        "      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1, maxRetries: 0, idleTimeout: 5s}\n")
    assert rules.warnings == ()
    pool = rules.destination_rules[0].traffic_policy.pool  # type: ignore[union-attr]
    assert pool == PoolPolicy(1, 1.0, 1, 1, 0, 5.0)


def start(tmp_path: Path, upstream: UpstreamServer, pool: str, route_extra: str = "") -> SidecarThread:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        API + "kind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n"
        "  - route: [{destination: {host: reviews}}]\n" + route_extra
        + "---\n" + service_entry("reviews", [("127.0.0.1", upstream.port, "v1")], port=9080)
        + "---\n" + API + "kind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n"
        "  trafficPolicy:\n    connectionPool:\n" + pool)
    return SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules)))


def get(proxy: SidecarThread, path: str) -> int:
    return status_of_get(proxy.port("outbound"), path)


def concurrently(proxy: SidecarThread, paths: list[str]) -> list[int]:
    statuses: list[int] = [0] * len(paths)

    def one(i: int) -> None:
        statuses[i] = get(proxy, paths[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    return statuses


def test_max_connections_and_pending_overflow_is_503_uo(tmp_path: Path) -> None:
    upstream = UpstreamServer()
    proxy = start(tmp_path, upstream, "      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1}\n")
    try:
        # One request holds the only connection for 600 ms, one waits for it, the rest overflow.
        statuses = concurrently(proxy, ["/slow?ms=600"] * 4)
        assert sorted(statuses) == [200, 200, 503, 503]
        hops = proxy.wait_hops(4)
        assert sorted(h.response_flags for h in hops) == ["-", "-", "UO", "UO"]
        assert upstream.connections == 1        # the waiter got the same connection back
        dump = proxy.sidecar.rule_router.describe()  # type: ignore[union-attr]
        breakers = dump["circuit_breakers"]["outbound|9080||reviews"]  # type: ignore[index]
        assert breakers["connections"]["active"] == 1
        assert breakers["pending"] == {"limit": 1, "active": 0, "overflows": 2}
        assert get(proxy, "/") == 200           # after the burst the breaker is closed again
    finally:
        proxy.close()
        upstream.close()


def test_max_requests_per_connection_closes_after_the_limit(tmp_path: Path) -> None:
    upstream = UpstreamServer()
    proxy = start(tmp_path, upstream, "      http: {maxRequestsPerConnection: 2}\n")
    try:
        assert [get(proxy, "/") for _ in range(5)] == [200] * 5
        assert upstream.connections == 3
    finally:
        proxy.close()
        upstream.close()


def test_max_retries_overflow_passes_the_failure_with_uo(tmp_path: Path) -> None:
    upstream = UpstreamServer()
    proxy = start(tmp_path, upstream, "      http: {maxRetries: 0}\n",
                  "    retries: {attempts: 3, retryOn: 5xx}\n")
    try:
        assert get(proxy, "/status/503") == 503
        hop = proxy.wait_hops(1)[0]
        assert (hop.attempts, hop.response_flags) == (1, "UO")
        assert len(upstream.requests) == 1
    finally:
        proxy.close()
        upstream.close()

"""Outlier detection: ejection and re-admission with an injected clock, then a real cluster with a bad host."""

from __future__ import annotations

import http.client
from pathlib import Path

from proxy_harness import SidecarThread, UpstreamServer, sidecar_config
from traffic_support import API, service_entry, status_of_get

from meshtrace.proxy.balancer import Host
from meshtrace.proxy.config import Address
from meshtrace.proxy.istio_config import OutlierPolicy, parse_rules
from meshtrace.proxy.outlier import OutlierDetector


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hosts(n: int) -> list[Host]:
    return [Host(f"10.0.0.{i}", 80) for i in range(n)]


def test_consecutive_5xx_ejects_for_base_time_then_readmits() -> None:
    clock = Clock()
    a, b = hs = hosts(2)
    od = OutlierDetector(OutlierPolicy(consecutive_5xx_errors=3, interval=10, base_ejection_time=30,
                                       max_ejection_percent=100), hs, clock)
    od.record(a, 500)
    od.record(a, 500)
    od.record(a, 200)                           # a success ends the run
    od.record(a, 500)
    od.record(a, 500)
    assert od.healthy() == [a, b]
    od.record(a, 503)
    assert od.healthy() == [b]
    clock.now += 29.9
    assert od.healthy() == [b]
    clock.now += 10                             # re-admitted at the first interval after 30 s
    assert od.healthy() == [a, b]


def test_ejection_time_grows_with_times_ejected() -> None:
    clock = Clock()
    a, b = hs = hosts(2)
    od = OutlierDetector(OutlierPolicy(consecutive_5xx_errors=1, interval=1, base_ejection_time=30,
                                       max_ejection_percent=100), hs, clock)
    od.record(a, 500)
    clock.now += 31
    assert a in od.healthy()
    od.record(a, 500)                           # second ejection: 60 s
    clock.now += 45
    assert od.healthy() == [b]
    clock.now += 16
    assert od.healthy() == [a, b]


def test_gateway_errors_and_connect_failures() -> None:
    clock = Clock()
    a, _ = hs = hosts(2)
    od = OutlierDetector(OutlierPolicy(consecutive_5xx_errors=0, consecutive_gateway_errors=2,
                                       max_ejection_percent=100), hs, clock)
    od.record(a, 500)                           # not a gateway error; 5xx detector is off (0)
    od.record(a, 500)
    assert a in od.healthy()
    od.record(a, 0)                             # connect failure
    od.record(a, 504)
    assert a not in od.healthy()


def test_max_ejection_percent_and_no_host_left() -> None:
    clock = Clock()
    hs = hosts(4)
    od = OutlierDetector(OutlierPolicy(consecutive_5xx_errors=1, max_ejection_percent=10), hs, clock)
    for h in hs:
        od.record(h, 500)
    assert len(od.healthy()) == 3               # 10 %: one host may always go, no second one
    all_out = OutlierDetector(OutlierPolicy(consecutive_5xx_errors=1, max_ejection_percent=100), hs, clock)
    for h in hs:
        all_out.record(h, 502)
    assert all_out.healthy() == []              # the router answers 503 UH


def test_min_health_percent_bypasses_detection() -> None:
    clock = Clock()
    hs = hosts(2)
    od = OutlierDetector(OutlierPolicy(consecutive_5xx_errors=1, max_ejection_percent=100,
                                       min_health_percent=60), hs, clock)
    od.record(hs[0], 500)
    assert od.healthy() == hs                   # 50 % healthy < 60 %: all hosts are used


def test_outlier_fields_are_not_reported_as_unsupported() -> None:
    rules = parse_rules(
        API + "kind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: reviews\n  trafficPolicy:\n"
        "    outlierDetection: {consecutive5xxErrors: 2, consecutiveGatewayErrors: 1, interval: 1s,\n"
        "                       baseEjectionTime: 2s, maxEjectionPercent: 50, minHealthPercent: 0}\n")
    assert rules.warnings == ()


def test_bad_host_is_ejected_then_uh_when_none_is_left(tmp_path: Path) -> None:
    good, bad = UpstreamServer(), UpstreamServer()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        service_entry("reviews", [("127.0.0.1", good.port, "v1"), ("127.0.0.1", bad.port, "v2")], port=9080)
        + "---\n" + API + "kind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n"
        "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n"
        "    outlierDetection: {consecutive5xxErrors: 2, interval: 60s, baseEjectionTime: 60s,"
        " maxEjectionPercent: 100}\n")
    proxy = SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules)))

    def get(path: str) -> int:
        return status_of_get(proxy.port("outbound"), path)

    try:
        # Both hosts answer /status/500 with a 500: after two each, both are ejected.
        assert [get("/status/500") for _ in range(4)] == [500] * 4
        assert get("/") == 503
        assert proxy.wait_hops(5)[-1].response_flags == "UH"
        dump = proxy.sidecar.rule_router.describe()  # type: ignore[union-attr]
        state = dump["outlier_detection"]["outbound|9080||reviews"]  # type: ignore[index]
        assert all(h["ejections"] == 1 for h in state.values())
    finally:
        proxy.close()
        good.close()
        bad.close()


def test_only_the_failing_host_is_skipped(tmp_path: Path) -> None:
    good, bad = UpstreamServer(), UpstreamServer()
    bad.shutdown()
    bad.server_close()                          # nothing listens there any more: connect failures
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        service_entry("reviews", [("127.0.0.1", good.port, "v1"), ("127.0.0.1", bad.port, "v2")], port=9080)
        + "---\n" + API + "kind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n"
        "  trafficPolicy:\n    outlierDetection: {consecutiveGatewayErrors: 1, interval: 60s,"
        " baseEjectionTime: 60s, maxEjectionPercent: 50}\n")
    proxy = SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules)))
    try:
        statuses = []
        for _ in range(12):
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port("outbound"), timeout=10)
            conn.request("GET", "/", headers={"Host": "reviews:9080"})
            statuses.append(conn.getresponse().status)
            conn.close()
        assert statuses.count(503) <= 1         # the dead host fails once, then is ejected
        assert statuses[-6:] == [200] * 6
    finally:
        proxy.close()
        good.close()

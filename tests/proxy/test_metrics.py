"""Istio standard metrics: exact values after known hops, labels, buckets and the text format, read back by
prometheus_client's own parser."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from meshtrace.proxy.hop import Direction, Hop, Workload
from meshtrace.proxy.metrics import (
    BYTE_BUCKETS,
    DURATION_BUCKETS_MS,
    HTTP_LABELS,
    MIXER_BYTE_BUCKETS,
    TCP_LABELS,
    IstioMetrics,
    escape_label_value,
    format_float,
)

PRODUCTPAGE = Workload(workload="productpage-v1", namespace="default", app="productpage", version="v1",
                       service="productpage.default.svc.cluster.local")
REVIEWS = Workload(workload="reviews-v2", namespace="default", app="reviews", version="v2",
                   service="reviews.default.svc.cluster.local", canonical_service="reviews")


def hop(direction: Direction = "inbound", *, status: int = 200, duration: float = 3.0, request_bytes: int = 0,
        response_bytes: int = 100, flags: str = "-", source: Workload = PRODUCTPAGE,
        destination: Workload = REVIEWS, protocol: str = "HTTP/1.1") -> Hop:
    return Hop(direction=direction, start_time=1_700_000_000.0, protocol=protocol, status=status,
               duration_ms=duration, request_bytes=request_bytes, response_bytes=response_bytes,
               response_flags=flags, source=source, destination=destination)


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def find(text: str, name: str, **labels: str) -> list[Sample]:
    return [s for s in samples(text) if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def value(text: str, name: str, **labels: str) -> float:
    found = find(text, name, **labels)
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples"
    return found[0].value


def buckets(text: str, name: str, **labels: str) -> dict[str, float]:
    return {s.labels["le"]: s.value for s in find(text, f"{name}_bucket", **labels)}


def test_known_sequence_gives_exact_values() -> None:
    metrics = IstioMetrics()
    for h in [hop(duration=3.0, response_bytes=100), hop(duration=7.5, response_bytes=2000),
              hop(status=503, flags="UF", duration=0.2, response_bytes=19),
              hop("outbound", duration=120.0, request_bytes=512, response_bytes=100)]:
        metrics.on_hop(h)
    text = metrics.render()

    assert value(text, "istio_requests_total", reporter="destination", response_code="200") == 2
    assert value(text, "istio_requests_total", reporter="destination", response_code="503",
                 response_flags="UF") == 1
    assert value(text, "istio_requests_total", reporter="source", response_code="200") == 1

    d = "istio_request_duration_milliseconds"
    assert value(text, f"{d}_count", reporter="destination", response_code="200") == 2
    assert value(text, f"{d}_sum", reporter="destination", response_code="200") == 10.5
    inbound_ok = buckets(text, d, reporter="destination", response_code="200")
    assert inbound_ok["1"] == 0
    assert inbound_ok["5"] == 1
    assert inbound_ok["10"] == 2
    assert inbound_ok["+Inf"] == 2
    assert buckets(text, d, response_code="503")["0.5"] == 1
    assert buckets(text, d, reporter="source")["100"] == 0
    assert buckets(text, d, reporter="source")["250"] == 1

    assert value(text, "istio_response_bytes_sum", reporter="destination", response_code="200") == 2100
    assert value(text, "istio_request_bytes_sum", reporter="source") == 512
    assert buckets(text, "istio_request_bytes", reporter="source")["500"] == 0
    assert buckets(text, "istio_request_bytes", reporter="source")["1000"] == 1
    # a zero-byte body lands in the first bucket
    assert buckets(text, "istio_request_bytes", reporter="destination", response_code="200")["0.5"] == 2


def test_labels_are_istios_and_filled_from_the_hop() -> None:
    metrics = IstioMetrics()
    metrics.on_hop(hop("inbound"))
    metrics.on_hop(hop("outbound", status=0, flags="UH"))
    text = metrics.render()
    (inbound,) = find(text, "istio_requests_total", reporter="destination")
    assert tuple(sorted(inbound.labels)) == tuple(sorted(HTTP_LABELS))
    assert inbound.labels == {
        "reporter": "destination",
        "source_workload": "productpage-v1", "source_workload_namespace": "default",
        "source_principal": "unknown", "source_app": "productpage", "source_version": "v1",
        "source_canonical_service": "productpage",            # falls back to the app label
        "destination_workload": "reviews-v2", "destination_workload_namespace": "default",
        "destination_principal": "unknown", "destination_app": "reviews", "destination_version": "v2",
        "destination_service": "reviews.default.svc.cluster.local", "destination_service_name": "reviews",
        "destination_service_namespace": "default", "destination_canonical_service": "reviews",
        "request_protocol": "http", "response_code": "200", "grpc_response_status": "",
        "response_flags": "-", "connection_security_policy": "none",
    }
    (outbound,) = find(text, "istio_requests_total", reporter="source")
    assert outbound.labels["response_code"] == "0"            # no response was sent
    assert outbound.labels["response_flags"] == "UH"
    assert outbound.labels["connection_security_policy"] == "unknown"


def test_unknown_workloads_and_short_service_names() -> None:
    metrics = IstioMetrics()
    metrics.on_hop(hop(source=Workload(), destination=Workload(service="ratings", namespace="shop")))
    metrics.on_hop(hop(source=Workload(), destination=Workload(service="api.stripe.com")))
    text = metrics.render()
    (short,) = find(text, "istio_requests_total", destination_service="ratings")
    assert short.labels["destination_service_name"] == "ratings"
    assert short.labels["destination_service_namespace"] == "shop"
    assert short.labels["source_workload"] == "unknown"
    (external,) = find(text, "istio_requests_total", destination_service="api.stripe.com")
    assert external.labels["destination_service_name"] == "api"
    assert external.labels["destination_service_namespace"] == "unknown"


def test_bucket_bounds_are_inclusive_and_cumulative() -> None:
    metrics = IstioMetrics()
    for bound in DURATION_BUCKETS_MS:
        metrics.on_hop(hop(duration=float(bound)))
    metrics.on_hop(hop(duration=DURATION_BUCKETS_MS[-1] + 0.001))   # only in +Inf
    got = buckets(metrics.render(), "istio_request_duration_milliseconds")
    for i, bound in enumerate(DURATION_BUCKETS_MS):
        assert got[format_float(bound)] == i + 1
    assert got["+Inf"] == len(DURATION_BUCKETS_MS) + 1


def test_le_values_read_as_on_a_real_sidecar() -> None:
    metrics = IstioMetrics()
    metrics.on_hop(hop())
    lines = [line for line in metrics.render().splitlines()
             if line.startswith("istio_request_duration_milliseconds_bucket")]
    les = [line.split('le="')[1].split('"')[0] for line in lines]
    assert les == ["0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
                   "30000", "60000", "300000", "600000", "1.8e+06", "3.6e+06", "+Inf"]
    assert BYTE_BUCKETS == DURATION_BUCKETS_MS
    assert MIXER_BYTE_BUCKETS == (1, 10, 100, 1000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)


def test_custom_byte_buckets() -> None:
    metrics = IstioMetrics(byte_buckets=MIXER_BYTE_BUCKETS)
    metrics.on_hop(hop(response_bytes=10))
    metrics.on_hop(hop(response_bytes=11))
    got = buckets(metrics.render(), "istio_response_bytes")
    assert got == {"1": 0, "10": 1, "100": 2, "1000": 2, "10000": 2, "100000": 2, "1e+06": 2, "1e+07": 2,
                   "1e+08": 2, "+Inf": 2}


def test_bad_buckets_are_refused() -> None:
    with pytest.raises(ValueError, match="increasing"):
        IstioMetrics(duration_buckets=(1, 5, 5))
    with pytest.raises(ValueError, match="finite"):
        IstioMetrics(byte_buckets=(1, math.inf))


@pytest.mark.parametrize("awkward", ['re"views', "back\\slash", "line\nfeed", 'all\\"\n', "ünïcode ✓", ""])
def test_label_values_are_escaped_and_read_back(awkward: str) -> None:
    metrics = IstioMetrics()
    metrics.on_hop(hop(source=Workload(workload=awkward)))
    (sample,) = find(metrics.render(), "istio_requests_total")
    assert sample.labels["source_workload"] == awkward


def test_escape_label_value() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_label_value("plain") == "plain"


def test_every_family_has_help_and_type() -> None:
    text = IstioMetrics().render()
    for name, kind in [("istio_requests_total", "counter"), ("istio_request_duration_milliseconds", "histogram"),
                       ("istio_request_bytes", "histogram"), ("istio_response_bytes", "histogram"),
                       ("istio_tcp_sent_bytes_total", "counter"), ("istio_tcp_received_bytes_total", "counter"),
                       ("istio_tcp_connections_opened_total", "counter"),
                       ("istio_tcp_connections_closed_total", "counter")]:
        assert f"# TYPE {name} {kind}\n" in text
        assert f"# HELP {name} " in text
    assert text.endswith("\n")


def test_tcp_counters() -> None:
    metrics = IstioMetrics()
    tcp_hop = hop(protocol="tcp", status=0)
    first = metrics.on_tcp_open(tcp_hop)
    second = metrics.on_tcp_open(tcp_hop)
    first.add_bytes(100, 7)
    first.add_bytes(1, 0)
    first.close()
    second.add_bytes(5, 5)
    metrics.on_hop(tcp_hop)                       # the finished TCP hop is not an HTTP request
    failed = metrics.on_tcp_open(hop("outbound", protocol="tcp", flags="UF"))
    failed.close()
    text = metrics.render()
    assert not find(text, "istio_requests_total")
    ok = {"reporter": "destination", "response_flags": "-"}
    assert value(text, "istio_tcp_connections_opened_total", **ok) == 2
    assert value(text, "istio_tcp_connections_closed_total", **ok) == 1
    assert value(text, "istio_tcp_received_bytes_total", **ok) == 106
    assert value(text, "istio_tcp_sent_bytes_total", **ok) == 12
    (sample,) = find(text, "istio_tcp_connections_opened_total", reporter="source")
    assert tuple(sorted(sample.labels)) == tuple(sorted(TCP_LABELS))
    assert sample.labels["request_protocol"] == "tcp"
    assert sample.labels["response_flags"] == "UF"
    assert sample.labels["connection_security_policy"] == "unknown"
    stats = metrics.stats()
    assert stats["tcp_downstream_cx_total"] == 3
    assert stats["tcp_downstream_cx_active"] == 1
    assert stats["tcp_upstream_cx_connect_fail"] == 1
    assert stats["tcp_downstream_cx_rx_bytes_total"] == 106


def test_stats_counts_classes_and_flags() -> None:
    metrics = IstioMetrics()
    for h in [hop(status=200), hop(status=204), hop(status=404, flags="NR"), hop(status=503, flags="UF,URX"),
              hop(status=504, flags="UT"), hop(status=0, flags="DC"), hop(status=101)]:
        metrics.on_hop(h)
    stats = metrics.stats()
    assert stats["downstream_rq_total"] == 7
    assert (stats["downstream_rq_1xx"], stats["downstream_rq_2xx"], stats["downstream_rq_3xx"],
            stats["downstream_rq_4xx"], stats["downstream_rq_5xx"]) == (1, 2, 0, 1, 2)
    assert stats["no_route"] == 1
    assert stats["upstream_cx_connect_fail"] == 1
    assert stats["upstream_rq_retry_limit_exceeded"] == 1
    assert stats["upstream_rq_timeout"] == 1
    assert stats["downstream_cx_destroy_remote_active_rq"] == 1
    assert all(isinstance(v, int) for v in stats.values())


def test_grpc_status_is_used_when_the_hop_carries_one() -> None:
    h = Hop(direction="inbound", start_time=0.0, status=200, source=PRODUCTPAGE, destination=REVIEWS, grpc_status=14)
    metrics = IstioMetrics()
    metrics.on_hop(h)
    (sample,) = find(metrics.render(), "istio_requests_total")
    assert sample.labels["request_protocol"] == "grpc"
    assert sample.labels["grpc_response_status"] == "14"


def test_series_cap_folds_new_identities_into_unknown() -> None:
    metrics = IstioMetrics(max_series=2)
    for i in range(10):
        metrics.on_hop(hop(source=Workload(workload=f"attacker-{i}")))
    text = metrics.render()
    totals = find(text, "istio_requests_total")
    assert sum(s.value for s in totals) == 10              # nothing is lost from the totals
    assert len(totals) == 3                                 # two real series and one folded one
    assert value(text, "istio_requests_total", source_workload="unknown", destination_workload="unknown") == 8
    assert metrics.stats()["metrics_series_overflow"] == 8


def test_equal_identities_in_distinct_objects_share_one_series() -> None:
    # The recorder finds series by the Workload objects' ids first: equal values in new objects (a peer header
    # decoded again) must still land in the same series, and the same objects with another status in another.
    metrics = IstioMetrics()
    for _ in range(3):
        metrics.on_hop(hop(source=Workload(workload="ratings-v1", app="ratings")))
        metrics.on_hop(hop(source=Workload(workload="ratings-v1", app="ratings"), status=503))
        metrics.on_hop(hop())
    text = metrics.render()
    assert value(text, "istio_requests_total", source_workload="ratings-v1", response_code="200") == 3
    assert value(text, "istio_requests_total", source_workload="ratings-v1", response_code="503") == 3
    assert value(text, "istio_requests_total", source_workload="productpage-v1") == 3
    assert metrics.stats()["metrics_series"] == 3


def test_a_run_of_one_series_and_its_changes_are_counted_exactly() -> None:
    # A request like the previous one (same identity objects, status, flags, direction) is counted through the
    # remembered series without a key: any field that differs must still reach its own series.
    metrics = IstioMetrics()
    for h in [hop(), hop(), hop(status=404), hop(), hop(flags="UF", status=503), hop(flags="UF", status=503),
              hop("outbound"), hop("outbound"), hop(), hop(destination=PRODUCTPAGE), hop(source=REVIEWS)]:
        metrics.on_hop(h)
    text = metrics.render()
    assert value(text, "istio_requests_total", reporter="destination", response_code="200",
                 destination_workload="reviews-v2", source_workload="productpage-v1") == 4
    assert value(text, "istio_requests_total", response_code="404") == 1
    assert value(text, "istio_requests_total", response_code="503", response_flags="UF") == 2
    assert value(text, "istio_requests_total", reporter="source") == 2
    assert value(text, "istio_requests_total", destination_workload="productpage-v1") == 1
    assert value(text, "istio_requests_total", source_workload="reviews-v2") == 1
    assert metrics.stats()["metrics_series"] == 6
    assert metrics._last_hits == 3        # hop() twice in a row, then the 503 and the outbound repeats


def test_observer_never_raises() -> None:
    metrics = IstioMetrics()
    # Hop's fields are typed (and checked, compiled), so break the observer's own state instead.
    metrics._duration_bounds = ("not a bound",)  # type: ignore[assignment]
    metrics.on_hop(hop())
    assert metrics.stats()["metrics_observer_errors"] == 1


@pytest.mark.parametrize(("number", "text"), [
    (0, "0"), (0.5, "0.5"), (1, "1"), (25, "25"), (600000, "600000"), (1800000, "1.8e+06"), (1e6, "1e+06"),
    (1234567.0, "1.234567e+06"), (0.0001, "0.0001"), (0.00001, "1e-05"), (-2.5, "-2.5"), (math.inf, "+Inf"),
])
def test_format_float_matches_go(number: float, text: str) -> None:
    assert format_float(number) == text


@given(st.lists(st.floats(min_value=0, max_value=4_000_000, allow_nan=False), min_size=1, max_size=40))
def test_buckets_agree_with_a_naive_count(durations: Iterable[float]) -> None:
    durations = list(durations)
    metrics = IstioMetrics()
    for d in durations:
        metrics.on_hop(hop(duration=d))
    got = buckets(metrics.render(), "istio_request_duration_milliseconds")
    for bound in DURATION_BUCKETS_MS:
        assert got[format_float(bound)] == sum(1 for d in durations if d <= bound)
    assert got["+Inf"] == len(durations)
    total = value(metrics.render(), "istio_request_duration_milliseconds_sum")
    assert total == pytest.approx(sum(durations))

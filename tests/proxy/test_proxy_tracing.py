"""Hop spans: a SERVER span inbound, a CLIENT span outbound, continuing any header format, Envoy tags."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from proxy_harness import SidecarThread, UpstreamServer, sidecar_config

from meshtrace.demo.processes import free_port
from meshtrace.propagation import MeshPropagator
from meshtrace.proxy.config import Address
from meshtrace.proxy.tracing import ProxySampler, span_name
from meshtrace.sampling import HintedSampler

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Traced:
    def __init__(self, percent: float = 100.0) -> None:
        self.exporter = InMemorySpanExporter()
        sampler = HintedSampler(ProxySampler(ParentBased(TraceIdRatioBased(percent / 100))))
        self.provider = TracerProvider(sampler=sampler)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def sidecar(self, upstream_port: int | None, **overrides: Any) -> SidecarThread:
        return SidecarThread(sidecar_config(upstream_port, tracing=True, **overrides), tracer=self.tracer,
                             propagator=MeshPropagator())

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


@pytest.fixture
def traced() -> Iterator[Traced]:
    traced = Traced()
    yield traced
    traced.provider.shutdown()


def _sampled(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)


def _get(port: int, path: str = "/sha", headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response.status, json.loads(raw) if raw.startswith(b"{") else {}


def test_inbound_server_span_with_envoy_tags(traced: Traced, upstream: UpstreamServer) -> None:
    proxy = traced.sidecar(upstream.port)
    try:
        _, seen = _get(proxy.port(), "/sha?x=1", {"User-Agent": "tester"})
        hop = proxy.wait_hops(1)[0]
    finally:
        proxy.close()
    (span,) = traced.spans()
    assert span.kind == SpanKind.SERVER
    assert span.name == f"127.0.0.1:{upstream.port}/*"
    ctx = span.context
    assert ctx is not None
    assert (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") == (hop.trace_id, hop.span_id)
    assert span.parent is None
    attrs = span.attributes or {}
    assert attrs["component"] == "proxy"
    assert attrs["http.status_code"] == 200
    assert attrs["http.response.status_code"] == 200
    assert attrs["response_flags"] == "-"
    assert attrs["guid:x-request-id"] == seen["headers"]["x-request-id"]
    assert attrs["upstream_cluster"] == f"inbound|{upstream.port}||"
    assert attrs["http.method"] == attrs["http.request.method"] == "GET"
    assert attrs["url.path"] == "/sha"
    assert attrs["url.query"] == "x=1"
    assert attrs["user_agent"] == attrs["user_agent.original"] == "tester"
    assert attrs["http.protocol"] == "HTTP/1.1"
    # The app sees our span as its parent, in every configured format.
    assert seen["headers"]["traceparent"].startswith(f"00-{hop.trace_id}-{hop.span_id}-")
    assert _sampled(seen["headers"]["traceparent"])
    assert seen["headers"]["x-b3-spanid"] == hop.span_id
    assert "uber-trace-id" in seen["headers"]


@pytest.mark.parametrize("headers", [
    {"traceparent": f"00-{TRACE}-{PARENT}-01"},
    {"b3": f"{TRACE}-{PARENT}-1"},
    {"X-B3-TraceId": TRACE, "X-B3-SpanId": PARENT, "X-B3-Sampled": "1"},
    {"uber-trace-id": f"{TRACE}:{PARENT}:0:1"},
], ids=["w3c", "b3-single", "b3-multi", "jaeger"])
def test_incoming_context_is_continued(traced: Traced, upstream: UpstreamServer, headers: dict[str, str]) -> None:
    proxy = traced.sidecar(upstream.port)
    try:
        _, seen = _get(proxy.port(), headers=headers)
    finally:
        proxy.close()
    (span,) = traced.spans()
    assert span.parent is not None
    assert f"{span.parent.trace_id:032x}" == TRACE
    assert f"{span.parent.span_id:016x}" == PARENT
    assert span.context is not None
    assert f"{span.context.span_id:016x}" != PARENT
    assert seen["headers"]["traceparent"].split("-")[1] == TRACE


def test_sampling_percentage_incoming_decision_and_force(upstream: UpstreamServer) -> None:
    traced = Traced(percent=0)
    proxy = traced.sidecar(upstream.port)
    try:
        # The client can read its response before the proxy's loop ends the hop; the hop is reported after its
        # span ends, so waiting for the hop makes each span count below exact rather than a race.
        _, seen = _get(proxy.port())
        assert not _sampled(seen["headers"]["traceparent"])      # not sampled, still propagated
        assert len(proxy.wait_hops(1)) == 1
        assert traced.spans() == ()
        _get(proxy.port(), headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert len(proxy.wait_hops(2)) == 2
        assert len(traced.spans()) == 1                              # an upstream decision wins
        _, seen = _get(proxy.port(), headers={"x-envoy-force-trace": "true"})
        assert _sampled(seen["headers"]["traceparent"])
        _get(proxy.port(), headers={"x-client-trace-id": "abc"})
        assert len(proxy.wait_hops(4)) == 4
        assert len(traced.spans()) == 3
    finally:
        proxy.close()
        traced.provider.shutdown()


def test_outbound_client_span_then_inbound_server_span(traced: Traced, upstream: UpstreamServer) -> None:
    inbound = traced.sidecar(upstream.port)
    outbound = traced.sidecar(None, outbound=Address("127.0.0.1", 0))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", outbound.port("outbound"), timeout=10)
        conn.request("GET", f"http://127.0.0.1:{inbound.port()}/sha",
                     headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        seen = json.loads(conn.getresponse().read())
        conn.close()
        out_hop = outbound.wait_hops(1)[0]
        in_hop = inbound.wait_hops(1)[0]
    finally:
        outbound.close()
        inbound.close()
    spans = {span.kind: span for span in traced.spans()}
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert client.context is not None
    assert server.context is not None
    assert server.parent is not None
    assert client.context.trace_id == server.context.trace_id == int(TRACE, 16)
    assert server.parent.span_id == client.context.span_id
    assert client.context.span_id != server.context.span_id
    assert (client.attributes or {})["url.full"] == f"http://127.0.0.1:{inbound.port()}/sha"
    assert client.name == f"127.0.0.1:{inbound.port()}/*"
    # Peer metadata: each side learns the other's workload.
    assert in_hop.source.app == "reviews"
    assert out_hop.destination.app == "reviews"
    assert "x-meshtrace-peer" not in seen["headers"]          # stripped before the app
    assert out_hop.request_id == in_hop.request_id == seen["headers"]["x-request-id"]


def test_failed_hop_marks_the_span(traced: Traced) -> None:
    proxy = traced.sidecar(free_port())
    try:
        status, _ = _get(proxy.port())
    finally:
        proxy.close()
    assert status == 503
    (span,) = traced.spans()
    attrs = span.attributes or {}
    assert attrs["response_flags"] == "UF"
    assert attrs["error"] is True
    assert attrs["http.status_code"] == 503
    assert span.status.status_code == StatusCode.ERROR


def test_span_name_follows_istio() -> None:
    assert span_name("reviews:9080", 80, "/*") == "reviews:9080/*"
    assert span_name("reviews", 9080, "/*") == "reviews:9080/*"


def test_debug_flag_survives_and_baggage_passes_unchanged(traced: Traced, upstream: UpstreamServer) -> None:
    proxy = traced.sidecar(upstream.port)
    baggage = "userId=alice,serverNode=DF%2028;prop"
    try:
        _, seen = _get(proxy.port(), headers={"X-B3-TraceId": TRACE, "X-B3-SpanId": PARENT, "X-B3-Flags": "1",
                                              "baggage": baggage, "uberctx-tenant": "acme"})
    finally:
        proxy.close()
    headers = seen["headers"]
    assert headers["x-b3-flags"] == "1"                  # debug is re-injected from the extracted context
    assert headers["x-b3-traceid"] == TRACE
    assert headers["baggage"] == baggage                 # byte for byte
    assert headers["uberctx-tenant"] == "acme"
    assert len(traced.spans()) == 1

"""HopTracer records a hop's tags the same way on its fast path and through the SDK's public set_attributes."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, SamplingResult
from opentelemetry.trace import StatusCode
from proxy_harness import propagator_headers

from meshtrace.propagation import MeshPropagator
from meshtrace.proxy.headers import Headers
from meshtrace.proxy.hop import Hop
from meshtrace.proxy.tracing import HopTracer


def record(limits: SpanLimits | None, *, inbound: bool, status: int = 200) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = HopTracer(provider.get_tracer("test"), MeshPropagator(["tracecontext", "b3"]), inbound=inbound,
                       node_id="sidecar~1", zone="z")
    span, context = tracer.start({b"host": b"reviews:9080"}, "reviews:9080/*", 1_000)
    out: Headers = []
    tracer.inject(span, context, out)
    tracer.inject(span, context, [])  # the second time from the header-name cache
    assert {name for name, _ in out} >= {b"traceparent", b"b3"}
    hop = Hop("inbound" if inbound else "outbound", 0.0, method="GET", path="/r?q=1", authority="reviews:9080",
              user_agent="curl", request_id="id-1", downstream_address="10.0.0.1:5000",
              upstream_address="10.0.0.2:9080", upstream_cluster="c", status=status, response_bytes=5,
              response_flags="UF" if status >= 500 else "-")
    tracer.finish(span, hop, 2_000)
    (finished,) = exporter.get_finished_spans()
    return finished


def test_fast_path_records_what_set_attributes_records() -> None:
    for inbound in (True, False):
        for status in (200, 503):
            fast = record(None, inbound=inbound, status=status)
            # A value-length limit sends the attributes through the SDK's own validation instead.
            slow = record(SpanLimits(max_attribute_length=1000), inbound=inbound, status=status)
            assert dict(fast.attributes or {}) == dict(slow.attributes or {})
            assert list(fast.attributes or {}) == list(slow.attributes or {})
            assert fast.status.status_code == slow.status.status_code
    failed = record(None, inbound=True, status=503)
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error"] is True
    assert (failed.attributes or {})["url.query"] == "q=1"


def test_attribute_limits_still_apply() -> None:
    span = record(SpanLimits(max_span_attributes=5), inbound=True)
    assert len(span.attributes or {}) == 5
    assert span.dropped_attributes > 0
    truncated = record(SpanLimits(max_attribute_length=3), inbound=True)
    assert (truncated.attributes or {})["component"] == "pro"


def test_unsampled_hop_records_nothing_and_still_propagates() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    tracer = HopTracer(provider.get_tracer("test"), MeshPropagator(["tracecontext"]), inbound=True)
    span, context = tracer.start({}, "x:80/*", 1)
    assert not span.is_recording()
    out: Headers = []
    tracer.inject(span, context, out)
    assert [name for name, _ in out] == [b"traceparent"]
    assert int(out[0][1][-2:], 16) & 1 == 0  # not sampled
    tracer.finish(span, Hop("inbound", 0.0, status=200), 2)
    assert tracer.ids(span)[0]


INCOMING: list[dict[bytes, bytes]] = [
    {},
    {b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
     b"tracestate": b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
    {b"b3": b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"},
    {b"b3": b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"},
    {b"b3": b"0"},
    {b"x-b3-traceid": b"463ac35c9f6413ad", b"x-b3-spanid": b"463ac35c9f6413ad"},
    {b"uber-trace-id": b"463ac35c9f6413ad:463ac35c9f6413ad:0:3"},
    {b"ot-tracer-traceid": b"463ac35c9f6413ad", b"ot-tracer-spanid": b"463ac35c9f6413ad",
     b"ot-tracer-sampled": b"true", b"ot-baggage-user": b"alice"},
    {b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", b"baggage": b"k=v"},
    {b"x-envoy-force-trace": b"true", b"x-request-id": b"abc"},
]


def test_injected_headers_are_the_propagators_own() -> None:
    """Whatever path inject takes, the headers sent upstream are exactly what the configured propagator writes
    for the hop span (minus baggage and x-request-id, which pass through unchanged), in the same order."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    formats = ["tracecontext", "baggage", "b3multi", "b3", "jaeger", "ottrace"]
    for sampler in (ALWAYS_ON, ALWAYS_OFF):
        for chosen in (formats, ["b3"], ["jaeger", "tracecontext"]):
            propagator = MeshPropagator(chosen)
            provider = TracerProvider(sampler=sampler)
            tracer = HopTracer(provider.get_tracer("test"), propagator, inbound=True)
            for incoming in INCOMING:
                span, context = tracer.start(incoming, "x:80/*", 1)
                out: Headers = []
                tracer.inject(span, context, out)
                assert out == propagator_headers(propagator, span, context), (chosen, incoming, sampler)


def test_proxy_sampler_is_as_attribute_blind_as_what_it_wraps() -> None:
    """ProxySampler never reads start attributes, so hop spans may take the core's light span path; a user's
    sampler wrapped inside it might read them, and then the hop spans must not."""
    from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

    from meshtrace.proxy.tracing import ProxySampler
    from meshtrace.sampling import is_attribute_blind

    assert is_attribute_blind(ProxySampler(ParentBased(TraceIdRatioBased(0.01))))

    class Curious(Sampler):
        def should_sample(self, *args: object, **kwargs: object) -> SamplingResult:
            raise NotImplementedError

        def get_description(self) -> str:
            return "curious"

    assert not is_attribute_blind(ProxySampler(Curious()))


def test_proxy_sampler_decides_without_should_sample_exactly_as_with_it() -> None:
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import SpanKind, get_current_span

    from meshtrace.proxy.tracing import ProxySampler
    from meshtrace.sampling import known_decision

    sampler = ProxySampler(ParentBased(TraceIdRatioBased(0.5)))
    tracer = HopTracer(TracerProvider().get_tracer("test"), MeshPropagator(["tracecontext"]), inbound=True)
    forced = {b"x-envoy-force-trace": b"true"}
    contexts = [{}, forced, *INCOMING, *({**incoming, **forced} for incoming in INCOMING)]
    for incoming in contexts:
        _, context = tracer.start(incoming, "x:80/*", 1)
        parent = get_current_span(context).get_span_context()
        for trace_id in (1, 2**127 + 5, 2**64 - 1, 0x0AF7651916CD43DD8448EB211C80319C):
            expected = sampler.should_sample(context, trace_id, "x", SpanKind.SERVER)
            known = known_decision(sampler, context, parent if parent.is_valid else None, trace_id)
            assert known == (expected.decision, expected.trace_state), incoming


def test_forced_trace_keeps_the_incoming_trace_state() -> None:
    """`x-envoy-force-trace` samples an unsampled incoming trace, and its W3C tracestate still goes upstream."""
    from meshtrace.proxy.tracing import ProxySampler

    provider = TracerProvider(sampler=ProxySampler(ALWAYS_OFF))
    tracer = HopTracer(provider.get_tracer("test"), MeshPropagator(["tracecontext"]), inbound=True)
    span, context = tracer.start({b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                                  b"tracestate": b"rojo=00f067aa0ba902b7", b"x-envoy-force-trace": b"1"}, "x", 1)
    assert span.is_recording()
    out: Headers = []
    tracer.inject(span, context, out)
    assert dict(out)[b"tracestate"] == b"rojo=00f067aa0ba902b7"
    assert dict(out)[b"traceparent"].endswith(b"-01")

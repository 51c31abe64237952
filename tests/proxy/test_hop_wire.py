"""Hop spans on the encoded lane: the same OTLP message as the SDK span path, chosen only when it can be.

With meshtrace's OTLP pipeline behind the tracer, a hop span is never an SDK span: `finish` writes its OTLP bytes
and queues them. Everything the exporter sends, and everything the proxy sees of the span on the way (headers
injected upstream, the hop record's ids, `is_recording`, the parent of attempt spans), must be what the SDK span
path gives for the same hop.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from encoded_support import otlp_processor, queued_provider
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind
from proxy_harness import propagator_headers
from tracing_support import CountingIds

from meshtrace.exporters import GuardedExporter
from meshtrace.exporters.encoded import EncodedSpan
from meshtrace.exporters.otlp_wire import encode_spans
from meshtrace.exporters.zipkin import ZipkinExporter
from meshtrace.processor import DroppingBatchSpanProcessor
from meshtrace.propagation import MeshPropagator
from meshtrace.proxy.attempt_span import end_attempt, start_attempt
from meshtrace.proxy.headers import Headers
from meshtrace.proxy.hop import Hop
from meshtrace.proxy.hop_span import HopSpan
from meshtrace.proxy.tracing import HopTracer, ProxySampler
from meshtrace.sampling import HintedSampler

FORMATS = ["tracecontext", "baggage", "b3multi", "b3", "jaeger", "ottrace"]
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
INCOMING: list[dict[bytes, bytes]] = [
    {},
    {b"traceparent": TRACEPARENT},
    {b"traceparent": TRACEPARENT, b"tracestate": b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
    {b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
    {b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", b"tracestate": b"rojo=1",
     b"x-envoy-force-trace": b"true"},
    {b"b3": b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"},
    {b"b3": b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"},
    {b"b3": b"0"},
    {b"b3": b"0", b"x-client-trace-id": b"abc"},
    {b"x-b3-traceid": b"463ac35c9f6413ad", b"x-b3-spanid": b"463ac35c9f6413ad"},
    {b"uber-trace-id": b"463ac35c9f6413ad:463ac35c9f6413ad:0:3"},
    {b"ot-tracer-traceid": b"463ac35c9f6413ad", b"ot-tracer-spanid": b"463ac35c9f6413ad",
     b"ot-tracer-sampled": b"true", b"ot-baggage-user": b"alice"},
    {b"traceparent": TRACEPARENT, b"baggage": b"k=v"},
    {b"x-envoy-force-trace": b"true", b"x-request-id": b"abc"},
    {b"uberctx-user": b"alice", b"accept": b"*/*"},     # Jaeger baggage alone: no trace header at all
]

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)   # what latin-1/utf-8 decoding yields
INT64ISH = st.one_of(st.integers(0, 10**6), st.sampled_from([0, 127, 128, (1 << 63) - 1, 1 << 63, 1 << 64]))


@st.composite
def hops(draw: st.DrawFn) -> tuple[bool, dict[bytes, bytes], Hop, int, int]:
    inbound = draw(st.booleans())
    host = draw(st.sampled_from(["reviews", "10.0.0.7", "[::1]", "", "rätings.default.svc"]))
    port = draw(st.sampled_from(["", ":9080", ":80", ":x", ":"]))
    path = draw(st.one_of(st.sampled_from(["/", "/r?q=1", "/a?", "/ü/x?y=é&z"]), TEXT))
    hop = Hop(
        "inbound" if inbound else "outbound", 0.0,
        protocol=draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "tcp", "HTTP/2"])),
        method=draw(st.one_of(st.sampled_from(["GET", "POST"]), TEXT)),
        path=path, authority=host + port, scheme=draw(st.sampled_from(["http", "https"])),
        user_agent=draw(st.one_of(st.sampled_from(["", "curl/8.0", "Mözilla/5.0 ☃"]), TEXT)),
        request_id=draw(st.one_of(st.uuids().map(str), TEXT)),
        downstream_address=draw(st.sampled_from(["10.0.0.1:5000", "127.0.0.1:40000", "", "[::1]:1"])),
        upstream_address=draw(st.sampled_from(["10.0.0.2:9080", ""])),
        upstream_cluster=draw(st.sampled_from(["inbound|9080||", "outbound|9080||reviews", ""])),
        status=draw(st.sampled_from([0, 200, 204, 302, 404, 429, 499, 500, 503, 504])),
        response_flags=draw(st.sampled_from(["-", "UF", "UF,URX", "NR", ""])),
        request_bytes=draw(INT64ISH), response_bytes=draw(INT64ISH))
    start = draw(st.sampled_from([0, 1, 1_700_000_000_123_456_789]))
    return inbound, draw(st.sampled_from(INCOMING)), hop, start, start + draw(st.integers(0, 10**9))


def _sampler(percent: float) -> Sampler:
    # What the sidecar configures: meshtrace.configure wraps the ProxySampler in a HintedSampler.
    return HintedSampler(ProxySampler(ParentBased(TraceIdRatioBased(percent / 100))))


class Both:
    """The same hop through a HopTracer on the encoded lane and through one on the SDK span path."""

    def __init__(self, percent: float = 100.0, inbound: bool = True) -> None:
        self.lane_ids, self.sdk_ids = CountingIds(), CountingIds()
        provider, self.queued = queued_provider(_sampler(percent), self.lane_ids)
        self.exporter = InMemorySpanExporter()
        sdk_provider = TracerProvider(sampler=_sampler(percent), id_generator=self.sdk_ids)
        sdk_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracers = {direction: (HopTracer(provider.get_tracer("meshtrace.proxy"), MeshPropagator(FORMATS),
                                              inbound=direction, node_id="sidecar~1", zone="z1"),
                                    HopTracer(sdk_provider.get_tracer("meshtrace.proxy"),
                                              MeshPropagator(FORMATS), inbound=direction, node_id="sidecar~1",
                                              zone="z1"))
                        for direction in (True, False)}

    def run(self, inbound: bool, incoming: dict[bytes, bytes], hop: Hop, start: int, end: int,
            ) -> tuple[list[Any], list[ReadableSpan], list[Headers], list[tuple[str, str]]]:
        self.queued.clear()
        self.exporter.clear()
        self.lane_ids.next = self.sdk_ids.next = 0
        outs: list[Headers] = []
        ids: list[tuple[str, str]] = []
        for tracer in self.tracers[inbound]:
            span, context = tracer.start(incoming, "reviews:9080/*", start)
            out: Headers = []
            tracer.inject(span, context, out)
            outs.append(out)
            ids.append(tracer.ids(span))
            tracer.finish(span, hop, end)
        return list(self.queued), list(self.exporter.get_finished_spans()), outs, ids


BOTH = Both()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hops())
def test_the_encoded_lane_exports_what_the_sdk_path_exports(case: tuple[bool, dict[bytes, bytes], Hop, int, int],
                                                           ) -> None:
    inbound, incoming, hop, start, end = case
    queued, finished, (lane_out, sdk_out), (lane_ids, sdk_ids) = BOTH.run(inbound, incoming, hop, start, end)
    # The hop path queues an EncodedSpan's fields as a plain tuple (meshtrace.exporters.encoded).
    assert all(type(span) is tuple and type(EncodedSpan._make(span).data) is bytes for span in queued)
    assert len(queued) == len(finished)  # both sampled, or neither
    lane_message = ExportTraceServiceRequest.FromString(encode_spans(queued))
    sdk_message = ExportTraceServiceRequest.FromString(encode_spans(finished))
    assert lane_message == sdk_message
    assert encode_spans(queued) == encode_spans(finished)
    assert lane_out == sdk_out      # the headers sent upstream
    assert lane_ids == sdk_ids      # the hop record's ids
    # The same hop again with another request id: now the lane's encoder has it cached whole.
    again = dataclasses.replace(hop, request_id=hop.request_id + "-2")
    queued, finished, (lane_out, sdk_out), _ = BOTH.run(inbound, incoming, again, start, end)
    assert encode_spans(queued) == encode_spans(finished)
    assert lane_out == sdk_out


def test_a_sampled_hop_is_a_hop_span_and_leaves_as_bytes_once() -> None:
    provider, queued = queued_provider(_sampler(100))
    tracer = HopTracer(provider.get_tracer("meshtrace.proxy"), MeshPropagator(["tracecontext"]), inbound=True)
    span, _ = tracer.start({}, "x:80/*", 1)
    assert type(span) is HopSpan
    assert span.is_recording()
    hop = Hop("inbound", 0.0, status=200)
    tracer.finish(span, hop, 2)
    tracer.finish(span, hop, 3)  # ending twice exports once, as with the SDK span
    assert not span.is_recording()
    assert [type(item) for item in queued] == [tuple]
    item: Any = queued[0]
    assert EncodedSpan._make(item).context == span.get_span_context()
    (message,) = ExportTraceServiceRequest.FromString(encode_spans(queued)).resource_spans
    (scope_spans,) = message.scope_spans
    assert scope_spans.scope.name == "meshtrace.proxy"
    assert [span.end_time_unix_nano for span in scope_spans.spans] == [2]
    assert {kv.key for kv in message.resource.attributes} >= {"service.name"}


def test_unsampled_hops_are_not_recorded_nor_queued_and_still_propagate() -> None:
    provider, queued = queued_provider(_sampler(0))
    tracer = HopTracer(provider.get_tracer("meshtrace.proxy"), MeshPropagator(["tracecontext", "b3"]),
                       inbound=True)
    span, context = tracer.start({}, "x:80/*", 1)
    assert type(span) is trace.NonRecordingSpan
    out: Headers = []
    tracer.inject(span, context, out)
    assert int(dict(out)[b"traceparent"][-2:], 16) & 1 == 0    # not sampled
    tracer.finish(span, Hop("inbound", 0.0, status=200), 2)
    assert queued == []
    # ... unless forced: then it is sampled, keeps the incoming trace and its trace state.
    forced, context = tracer.start({b"traceparent": TRACEPARENT[:-2] + b"00", b"tracestate": b"rojo=1",
                                    b"x-envoy-force-trace": b"1"}, "x:80/*", 1)
    assert type(forced) is HopSpan
    out = []
    tracer.inject(forced, context, out)
    assert int(dict(out)[b"traceparent"][-2:], 16) & 1 == 1
    assert dict(out)[b"tracestate"] == b"rojo=1"
    tracer.finish(forced, Hop("inbound", 0.0, status=200), 2)
    assert len(queued) == 1


def test_injected_headers_are_the_propagators_own_on_the_lane() -> None:
    """As tests/proxy/test_proxy_tracing_record.py checks for SDK spans: `inject` writes exactly what the
    propagator writes for the hop span, B3's parent span id included."""
    for percent in (100.0, 0.0):
        for chosen in (FORMATS, ["b3"], ["jaeger", "tracecontext"]):
            propagator = MeshPropagator(chosen)
            provider, _ = queued_provider(_sampler(percent))
            tracer = HopTracer(provider.get_tracer("test"), propagator, inbound=True)
            for incoming in INCOMING:
                span, context = tracer.start(incoming, "x:80/*", 1)
                out: Headers = []
                tracer.inject(span, context, out)
                assert out == propagator_headers(propagator, span, context), (chosen, incoming, percent)


def test_attempt_spans_stay_sdk_spans_under_the_hop_span_in_the_same_batch() -> None:
    provider, queued = queued_provider(_sampler(100))
    tracer = HopTracer(provider.get_tracer("meshtrace.proxy"), MeshPropagator(["tracecontext"]), inbound=False)
    hop_span, context = tracer.start({b"traceparent": TRACEPARENT}, "reviews:9080/*", 1)
    attempt = start_attempt(tracer.tracer, hop_span, context, "outbound|9080||reviews", 2, "10.0.0.2:9080")
    assert isinstance(attempt, ReadableSpan)
    assert attempt.parent == hop_span.get_span_context()
    end_attempt(attempt, 503)
    tracer.finish(hop_span, Hop("outbound", 0.0, status=200), 5)
    assert [type(span) for span in queued] == [type(attempt), tuple]
    (resource_spans,) = ExportTraceServiceRequest.FromString(encode_spans(queued)).resource_spans
    (scope_spans,) = resource_spans.scope_spans   # one resource, one scope: the same tracer's
    attempt_message, hop_message = scope_spans.spans
    assert attempt_message.parent_span_id == hop_message.span_id
    assert hop_message.trace_id == attempt_message.trace_id == bytes.fromhex(TRACEPARENT[3:35].decode())


class _Curious(Sampler):
    """A sampler nobody declared attribute-blind: it might read the start attributes."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> str:
        return "curious"


def _in_memory(provider: TracerProvider) -> None:
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))


def _zipkin(provider: TracerProvider) -> None:
    exporter = GuardedExporter(lambda: ZipkinExporter("http://127.0.0.1:9/api/v2/spans", 1.0), "zipkin")
    provider.add_span_processor(DroppingBatchSpanProcessor(exporter, schedule_delay_millis=3_600_000))


def _otlp(provider: TracerProvider) -> None:
    provider.add_span_processor(otlp_processor())


@pytest.mark.parametrize(("why", "pipeline", "limits", "sampler"), [
    ("an in-memory exporter", [_in_memory], None, ALWAYS_ON),
    ("a zipkin exporter", [_zipkin], None, ALWAYS_ON),
    ("a second processor", [_otlp, _in_memory], None, ALWAYS_ON),
    ("a value length limit", [_otlp], SpanLimits(max_attribute_length=1000), ALWAYS_ON),
    ("an attribute count limit", [_otlp], SpanLimits(max_span_attributes=10), ALWAYS_ON),
    ("a sampler that may read attributes", [_otlp], None, ProxySampler(_Curious())),
])
def test_hop_spans_are_sdk_spans_unless_the_lane_applies(why: str, pipeline: list[Any], limits: SpanLimits | None,
                                                         sampler: Sampler) -> None:
    provider = TracerProvider(sampler=sampler, span_limits=limits)
    for add in pipeline:
        add(provider)
    tracer = HopTracer(provider.get_tracer("t"), MeshPropagator(["tracecontext"]), inbound=True)
    span, _ = tracer.start({}, "x:80/*", 1)
    assert isinstance(span, ReadableSpan), why
    # The same provider wired the sidecar's way does take the lane: the condition above is what ruled it out.
    wired = TracerProvider(sampler=ALWAYS_ON)
    _otlp(wired)
    span, _ = HopTracer(wired.get_tracer("t"), MeshPropagator(["tracecontext"]), inbound=True).start({}, "x", 1)
    assert type(span) is HopSpan


def test_the_lane_is_left_as_soon_as_the_pipeline_changes() -> None:
    provider, queued = queued_provider(_sampler(100))
    tracer = HopTracer(provider.get_tracer("meshtrace.proxy"), MeshPropagator(["tracecontext"]), inbound=True)
    assert type(tracer.start({}, "x", 1)[0]) is HopSpan
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))    # e.g. a test adding its own processor
    span, _ = tracer.start({}, "x", 1)
    assert isinstance(span, ReadableSpan)
    tracer.finish(span, Hop("inbound", 0.0, status=200), 2)
    assert len(exporter.get_finished_spans()) == 1
    assert [type(item) for item in queued] == [type(span)]   # the OTLP pipeline still gets it, as an SDK span


def test_a_span_recorded_but_not_sampled_is_recording_and_never_queued() -> None:
    class RecordOnly(Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            return SamplingResult(Decision.RECORD_ONLY)

        def get_description(self) -> str:
            return "record-only"

    from meshtrace.sampling import declare_attribute_blind

    declare_attribute_blind(RecordOnly, decide=lambda *_: (Decision.RECORD_ONLY, None))
    provider, queued = queued_provider(RecordOnly())
    tracer = HopTracer(provider.get_tracer("t"), MeshPropagator(["tracecontext"]), inbound=True)
    span, _ = tracer.start({}, "x", 1)
    assert type(span) is HopSpan
    assert span.is_recording()          # so a route with retries still gets attempt spans, as with the SDK
    assert not span.get_span_context().trace_flags.sampled
    tracer.finish(span, Hop("inbound", 0.0, status=200), 2)
    assert queued == []


def test_a_hop_that_cannot_be_encoded_is_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    provider, queued = queued_provider(_sampler(100))
    tracer = HopTracer(provider.get_tracer("t"), MeshPropagator(["tracecontext"]), inbound=True)
    span, _ = tracer.start({}, "x", 1)
    with caplog.at_level(logging.ERROR, logger="meshtrace.proxy"):
        tracer.finish(span, Hop("inbound", 0.0, status=200, user_agent="\udcff"), 2)   # not encodable as UTF-8
    assert queued == []
    assert "could not encode" in caplog.text
    assert SpanKind.SERVER is tracer.kind

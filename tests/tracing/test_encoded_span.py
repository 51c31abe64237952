"""Pre-encoded spans: the bytes an SDK span would encode to, mixed freely with SDK spans, and only where taken.

A span encoded by its maker (meshtrace.exporters.encoded) must leave the exporter exactly as the same span made
through the SDK would; only meshtrace's OTLP pipeline may be handed one; `encoded_lane` offers it only then.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from encoded_support import otlp_processor, queued_provider
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from meshtrace.encodedlane import encoded_lane
from meshtrace.exporters import GuardedExporter
from meshtrace.exporters.encoded import (
    EncodedFields,
    EncodedSpan,
    accepts_encoded,
    attribute,
    encode_span,
    kind_field,
    name_field,
    status_field,
)
from meshtrace.exporters.file import OtlpJsonFileExporter
from meshtrace.exporters.otlp import FastOTLPSpanExporter, direct_session
from meshtrace.exporters.otlp_wire import encode_spans
from meshtrace.processor import DroppingBatchSpanProcessor
from meshtrace.sampling import HintedSampler, known_decision

IDS64 = st.integers(min_value=1, max_value=(1 << 64) - 1)
IDS128 = st.integers(min_value=1, max_value=(1 << 128) - 1)
VALUES = st.one_of(st.text(max_size=140), st.booleans(), st.floats(allow_nan=False),
                   st.integers(-(1 << 64), 1 << 64),
                   st.sampled_from([0, 1, -1, True, False, 127, 128, (1 << 63) - 1, -(1 << 63), 0.0, -0.0]))
ATTRIBUTES = st.dictionaries(st.text(min_size=1, max_size=130), VALUES, max_size=8)
STATUSES = [Status(StatusCode.UNSET), Status(StatusCode.OK), Status(StatusCode.ERROR),
            Status(StatusCode.ERROR, "UF upstream é")]
RESOURCES = [Resource.create({"service.name": "reviews"}), Resource({"service.name": "reviews"}),
             Resource.create({"service.name": "reviews"})]   # the last equals the first: one group
SCOPES = [InstrumentationScope("meshtrace.proxy", "1.0"), None, InstrumentationScope("meshtrace.proxy", "1.0")]


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    trace_state = draw(st.sampled_from([TraceState(), TraceState([("rojo", "00f067aa0ba902b7"), ("congo", "t")])]))
    parent = draw(st.one_of(st.none(), st.builds(SpanContext, IDS128, IDS64, st.booleans())))
    return ReadableSpan(
        name=draw(st.text(max_size=140)),
        context=SpanContext(draw(IDS128), draw(IDS64), False, TraceFlags(TraceFlags.SAMPLED), trace_state),
        parent=parent, resource=draw(st.sampled_from(RESOURCES)), attributes=draw(ATTRIBUTES),
        kind=draw(st.sampled_from(list(SpanKind))), status=draw(st.sampled_from(STATUSES)),
        start_time=draw(st.sampled_from([0, 1, 1 << 62])), end_time=draw(st.integers(0, (1 << 64) - 1)),
        instrumentation_scope=draw(st.sampled_from(SCOPES)))


def encoded(span: ReadableSpan) -> EncodedSpan:
    """`span` as its maker would encode it."""
    context = span.get_span_context()
    assert context is not None
    attributes = b"".join(attribute(key, value) or b"" for key, value in (span.attributes or {}).items())  # type: ignore[arg-type]
    data = encode_span(context, span.parent, name_field(span.name), kind_field(span.kind), span.start_time or 0,
                       span.end_time or 0, attributes,
                       status_field(span.status.status_code, span.status.description))
    return EncodedSpan(span.resource, span.instrumentation_scope, context, data)


def plain(span: ReadableSpan) -> EncodedFields:
    """`encoded(span)` as a plain tuple of its fields, as the sidecar's hop path queues it."""
    resource, scope, context, data = encoded(span)
    return resource, scope, context, data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(spans(), st.sampled_from(["sdk", "encoded", "plain"])), max_size=6))
def test_encoded_spans_mixed_with_sdk_spans_encode_as_the_sdk_spans_alone(batch: list[tuple[ReadableSpan, str]],
                                                                        ) -> None:
    # "plain": an EncodedSpan's fields as a plain tuple, as the sidecar's hop path queues them.
    sdk = [span for span, _ in batch]
    mixed = [span if form == "sdk" else encoded(span) if form == "encoded" else plain(span)
             for span, form in batch]
    expected = encode_spans(sdk)
    assert ExportTraceServiceRequest.FromString(encode_spans(mixed)) == ExportTraceServiceRequest.FromString(
        expected)
    assert encode_spans(mixed) == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans(), min_size=1, max_size=6), st.sampled_from([None, "https://opentelemetry.io/schemas/1.21.0"]))
def test_a_batch_of_encoded_spans_alone_encodes_as_the_sdk_spans(batch: list[ReadableSpan], schema: str | None,
                                                                ) -> None:
    # The sidecar's every batch: encoded spans only, usually under one resource and scope (told in C passes).
    if schema is not None:
        resource = Resource({"service.name": "reviews"}, schema)
        scope = InstrumentationScope("meshtrace.proxy", "1.0", schema)
        batch = [ReadableSpan(name=span.name, context=span.get_span_context(), parent=span.parent,
                              resource=resource, attributes=span.attributes, kind=span.kind, status=span.status,
                              start_time=span.start_time, end_time=span.end_time, instrumentation_scope=scope)
                 for span in batch]
    assert encode_spans([encoded(span) for span in batch]) == encode_spans(batch)
    # The hop path's plain tuples (meshtrace.exporters.encoded), alone or after an EncodedSpan, the same.
    assert encode_spans([plain(span) for span in batch]) == encode_spans(batch)
    assert encode_spans([encoded(batch[0]), *(plain(span) for span in batch[1:])]) == encode_spans(batch)


def test_attribute_leaves_out_what_the_otlp_encoders_leave_out_and_refuses_other_types() -> None:
    assert attribute("big", 1 << 63) is None
    assert attribute("a", True) != attribute("a", 1)
    with pytest.raises(TypeError):
        attribute("list", [1])  # type: ignore[arg-type]


def _guarded(factory: Any) -> GuardedExporter:
    return GuardedExporter(factory, "test")


def test_only_the_otlp_pipeline_accepts_encoded_spans(tmp_path: Any) -> None:
    assert accepts_encoded(otlp_processor())
    assert accepts_encoded(otlp_processor().span_exporter)
    file_exporter = _guarded(lambda: OtlpJsonFileExporter(str(tmp_path / "spans.jsonl")))
    assert not accepts_encoded(file_exporter)
    assert not accepts_encoded(DroppingBatchSpanProcessor(file_exporter, schedule_delay_millis=3_600_000))
    assert not accepts_encoded(BatchSpanProcessor(otlp_processor().span_exporter, schedule_delay_millis=3_600_000))
    assert not accepts_encoded(SimpleSpanProcessor(InMemorySpanExporter()))

    class Custom(FastOTLPSpanExporter):
        def export(self, spans: Any) -> SpanExportResult:   # may not know EncodedSpans
            return SpanExportResult.SUCCESS

    custom = Custom(endpoint="http://127.0.0.1:9/v1/traces", session=direct_session())
    assert not accepts_encoded(custom)
    assert not accepts_encoded(_guarded(lambda: custom))


class _Capture(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        _Capture.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Capture.bodies = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


def test_the_otlp_exporter_posts_encoded_and_sdk_spans_in_one_request(collector: str) -> None:
    processor = otlp_processor(collector)
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("meshtrace.proxy")
    sdk_span = tracer.start_span("attempt", kind=SpanKind.CLIENT, attributes={"k": "v"})
    sdk_span.end()
    lane = encoded_lane(tracer)
    assert lane is not None
    started = lane.start(trace.set_span_in_context(sdk_span))
    assert started is not None
    context, parent, recording, sampled = started
    assert parent == sdk_span.get_span_context()
    assert context == SpanContext(parent.trace_id, context.span_id, False, context.trace_flags, parent.trace_state)
    assert context.is_valid
    assert context.trace_flags.sampled
    assert recording
    assert sampled
    data = encode_span(context, parent, name_field("hop"), kind_field(SpanKind.SERVER), 5, 6,
                       attribute("n", 1) or b"")
    lane.export(context, data)
    assert processor.force_flush(10_000)
    (body,) = _Capture.bodies
    (resource_spans,) = ExportTraceServiceRequest.FromString(body).resource_spans
    (scope_spans,) = resource_spans.scope_spans
    assert [span.name for span in scope_spans.spans] == ["attempt", "hop"]
    assert scope_spans.spans[1].parent_span_id == scope_spans.spans[0].span_id
    provider.shutdown()


class _Curious(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> str:
        return "curious"


def test_encoded_lane_only_for_a_tracer_whose_spans_nobody_else_could_see_differently() -> None:
    provider, _ = queued_provider(ALWAYS_ON)
    tracer = provider.get_tracer("t")
    lane = encoded_lane(tracer)
    assert lane is not None
    assert encoded_lane(tracer) is lane                         # cached
    assert encoded_lane(trace.NoOpTracer()) is None             # not the SDK's tracer
    for limits in (SpanLimits(max_attribute_length=10), SpanLimits(max_span_attribute_length=10),
                   SpanLimits(max_span_attributes=20)):
        limited = TracerProvider(span_limits=limits)
        limited.add_span_processor(otlp_processor())
        assert encoded_lane(limited.get_tracer("t")) is None, limits
    curious = TracerProvider(sampler=_Curious())
    curious.add_span_processor(otlp_processor())
    assert encoded_lane(curious.get_tracer("t")) is None
    # Changed in place after the lane was made: the lane is no longer current, and none is offered.
    tracer._span_limits.max_attribute_length = 5  # type: ignore[attr-defined]
    assert not lane.current(tracer)
    assert encoded_lane(tracer) is None
    tracer._span_limits.max_attribute_length = None  # type: ignore[attr-defined]
    assert encoded_lane(tracer) is not None
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    assert encoded_lane(tracer) is None


def test_no_encoded_lane_for_a_disabled_tracer_or_one_counting_its_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import _disable_tracer_configurator

    disabled = TracerProvider(_tracer_configurator=_disable_tracer_configurator)
    disabled.add_span_processor(otlp_processor())
    assert encoded_lane(disabled.get_tracer("t")) is None
    provider, _ = queued_provider(ALWAYS_ON)
    tracer = provider.get_tracer("t")
    assert encoded_lane(tracer) is not None
    tracer._tracer_config.is_enabled = False  # type: ignore[attr-defined]
    assert encoded_lane(tracer) is None                         # turned off in place
    # The SDK's internal span metrics count spans at start and end: only SDK spans would be counted.
    uncounted = TracerProvider(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    uncounted.add_span_processor(otlp_processor())
    assert encoded_lane(uncounted.get_tracer("t")) is not None
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    counted = TracerProvider(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    counted.add_span_processor(otlp_processor())
    assert encoded_lane(counted.get_tracer("t")) is None


@pytest.mark.parametrize("ratio", [0.5, 1.0, 0.0, None])
def test_a_root_span_without_trace_headers_draws_both_ids_at_once_and_decides_by_the_root_rule(
        monkeypatch: pytest.MonkeyPatch, ratio: float | None) -> None:
    """The SDK's RandomIdGenerator: one 192-bit draw, never a zero id; the decision is the sampler's for the id
    (a ratio of 1 or 0 and always-on decide without comparing)."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from meshtrace import encodedlane
    from meshtrace.proxy.tracing import ProxySampler

    sampler = HintedSampler(ProxySampler(ParentBased(TraceIdRatioBased(ratio) if ratio is not None else ALWAYS_ON)))
    provider, _ = queued_provider(sampler)
    lane = encoded_lane(provider.get_tracer("t"))
    assert lane is not None
    seen = set()
    for _ in range(200):
        started = lane.start(Context())
        assert started is not None
        context, parent, recording, sampled = started
        assert parent is None
        assert context.is_valid
        assert context.trace_flags.random_trace_id
        known = known_decision(sampler, Context(), None, context.trace_id)
        assert known is not None
        assert sampled is recording is (known[0] is Decision.RECORD_AND_SAMPLE) is context.trace_flags.sampled
        seen.add(context.trace_id)
    assert len(seen) == 200
    for draw in (0, 5 << 64, 5):     # a zero trace id, span id or both: the generator draws again, as ever
        monkeypatch.setattr(encodedlane, "_getrandbits", lambda bits, draw=draw: draw)
        started = lane.start(Context())
        assert started is not None
        assert started[0].is_valid
        assert started[0].trace_id not in {0, 5}


def test_a_root_spans_ids_drawn_at_once_equal_the_sdks_draw_for_draw() -> None:
    """As meshtrace.lightspan's light spans: one getrandbits(192) gives what the SDK's span would have got."""
    import random

    provider, _ = queued_provider(ALWAYS_ON)
    lane = encoded_lane(provider.get_tracer("t"))
    assert lane is not None
    random.seed(11)
    drawn = []
    for _ in range(5):
        started = lane.start(Context())
        assert started is not None
        drawn.append((started[0].trace_id, started[0].span_id))
    random.seed(11)
    sdk = [span.get_span_context() for span in (provider.get_tracer("t").start_span("s", Context())
                                                 for _ in range(5))]
    assert drawn == [(context.trace_id, context.span_id) for context in sdk]


def test_a_lane_kept_per_span_is_left_when_the_sdk_api_changes_the_tracer() -> None:
    provider, _ = queued_provider(ALWAYS_ON)
    tracer = provider.get_tracer("t")
    lane = encoded_lane(tracer)
    assert lane is not None
    assert lane.unchanged(tracer)
    assert not lane.unchanged(provider.get_tracer("other"))
    config = tracer._tracer_config  # type: ignore[attr-defined]
    config.is_enabled = False
    assert not lane.unchanged(tracer)
    config.is_enabled = True
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    assert not lane.unchanged(tracer)

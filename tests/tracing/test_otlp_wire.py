"""meshtrace's OTLP/protobuf encoder writes the bytes OpenTelemetry's encoder writes, for every span shape."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as otel_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from meshtrace.exporters.otlp import FastOTLPSpanExporter
from meshtrace.exporters.otlp_wire import encode_spans

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
SCALARS = st.one_of(st.text(max_size=40), st.booleans(), INT64, st.floats(allow_nan=False),
                    st.sampled_from([0, -1, 1, 127, 128, -(1 << 63), (1 << 63) - 1, 0.0, -0.0, "", True, False]))
ARRAYS = st.one_of(st.lists(st.text(max_size=10), max_size=4), st.lists(st.booleans(), max_size=4),
                   st.lists(INT64, max_size=4), st.lists(st.floats(allow_nan=False), max_size=4))
VALUES = st.one_of(SCALARS, ARRAYS, st.text(min_size=100, max_size=300))
ATTRIBUTES: st.SearchStrategy[dict[str, Any]] = st.dictionaries(st.text(min_size=1, max_size=20), VALUES, max_size=8)
IDS64 = st.integers(min_value=1, max_value=(1 << 64) - 1)
IDS128 = st.integers(min_value=1, max_value=(1 << 128) - 1)
TRACE_STATES = st.one_of(st.none(), st.just(TraceState()),
                         st.just(TraceState([("vendor", "value"), ("other", "x=1")])))


def context(trace_id: int, span_id: int, remote: bool, trace_state: TraceState | None = None) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(TraceFlags.SAMPLED),
                       trace_state=trace_state)


@st.composite
def readable_spans(draw: st.DrawFn, resources: list[Resource],
                   scopes: list[InstrumentationScope | None]) -> ReadableSpan:
    parent = draw(st.one_of(st.none(), st.builds(context, IDS128, IDS64, st.booleans())))
    events = draw(st.lists(st.builds(Event, st.text(max_size=10), ATTRIBUTES,
                                     st.one_of(st.none(), st.integers(0, (1 << 64) - 1))), max_size=3))
    links = draw(st.lists(st.builds(Link, st.builds(context, IDS128, IDS64, st.booleans(), TRACE_STATES),
                                    ATTRIBUTES), max_size=3))
    return ReadableSpan(
        name=draw(st.text(max_size=30)),
        context=context(draw(IDS128), draw(IDS64), False, draw(TRACE_STATES)),
        parent=parent,
        resource=draw(st.sampled_from(resources)),
        attributes=draw(ATTRIBUTES),
        events=events,
        links=links,
        kind=draw(st.sampled_from(list(SpanKind))),
        status=draw(st.sampled_from([Status(StatusCode.UNSET), Status(StatusCode.OK),
                                     Status(StatusCode.ERROR), Status(StatusCode.ERROR, "UF upstream é")])),
        start_time=draw(st.one_of(st.just(0), st.integers(1, (1 << 64) - 1))),
        end_time=draw(st.integers(0, (1 << 64) - 1)),
        instrumentation_scope=draw(st.sampled_from(scopes)),
    )


RESOURCES = [Resource.create({"service.name": "reviews", "pid": 7, "ratio": 0.5, "tags": ("a", "b")}),
             Resource({"service.name": "reviews", "pid": 7, "ratio": 0.5, "tags": ("a", "b")}),  # != the first
             Resource.get_empty(), Resource({"k": "v"}, schema_url="https://opentelemetry.io/schemas/1.21.0"),
             Resource({"k": "v"}, schema_url="https://opentelemetry.io/schemas/1.21.0")]  # == the one before
SCOPES: list[InstrumentationScope | None] = [
    None, InstrumentationScope("meshtrace.proxy", "1.0"), InstrumentationScope("meshtrace.proxy", "1.0"),
    InstrumentationScope("other", None, "https://schema", {"scope.attr": 3}), InstrumentationScope("")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(readable_spans(RESOURCES, SCOPES), min_size=0, max_size=6))
def test_same_bytes_as_opentelemetry_encoder(spans: list[ReadableSpan]) -> None:
    ours = encode_spans(spans)
    theirs = otel_encode_spans(spans)
    assert ExportTraceServiceRequest.FromString(ours) == theirs
    assert ours == theirs.SerializeToString()


def finished_spans(count: int, limits: SpanLimits | None = None) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "wire"}), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("meshtrace.proxy", "0.1")
    for index in range(count):
        with tracer.start_as_current_span("outer", kind=SpanKind.SERVER,
                                          attributes={"http.status_code": index, "error": index % 2 == 0}) as span:
            span.add_event("retry", {"attempt": index, "ok": True, "why": "UF"})
            span.set_attributes({"a": "x" * index, "b": (1, 2, 3), "c": 1.5, "d": True, "e": 1})
            with tracer.start_as_current_span("inner", links=[Link(span.get_span_context(), {"l": "v"})]):
                pass
    return list(exporter.get_finished_spans())


def test_sdk_spans_with_dropped_counts_and_repeated_values() -> None:
    spans = finished_spans(40, SpanLimits(max_span_attributes=4, max_events=1, max_links=1,
                                          max_event_attributes=2, max_link_attributes=1))
    assert any(span.dropped_attributes for span in spans)
    # Twice: the second pass is served from the value caches and must not change a byte.
    for _ in range(2):
        assert encode_spans(spans) == otel_encode_spans(spans).SerializeToString()


def test_values_that_cache_alike_encode_apart() -> None:
    # True == 1 == 1.0 and 0.0 == -0.0 in Python; on the wire they differ.
    values: list[Any] = [1, True, 1.0, 0, False, 0.0, -0.0, math.inf, "1"]
    spans = []
    for value in values * 2:
        spans.append(ReadableSpan(name="s", context=context(1, 2, False), attributes={"v": value},
                                  resource=RESOURCES[0], start_time=1, end_time=2))
    assert encode_spans(spans) == otel_encode_spans(spans).SerializeToString()


def test_unencodable_value_is_logged_and_left_out(caplog: pytest.LogCaptureFixture) -> None:
    span = ReadableSpan(name="s", context=context(1, 2, False), attributes={"big": 1 << 70, "ok": "yes"},
                        resource=RESOURCES[0], start_time=1, end_time=2)
    with caplog.at_level(logging.ERROR):
        decoded = ExportTraceServiceRequest.FromString(encode_spans([span]))
    attributes = decoded.resource_spans[0].scope_spans[0].spans[0].attributes
    assert [kv.key for kv in attributes] == ["ok"]
    assert "big" in caplog.text


def test_exporter_posts_the_encoder_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[bytes] = []

    class Result:
        success, error, status_code = True, None, 200

    exporter = FastOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    def export(body: bytes) -> Result:
        posted.append(body)
        return Result()

    monkeypatch.setattr(exporter._client, "export", export)
    spans = finished_spans(3)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert posted == [otel_encode_spans(spans).SerializeToString()]


def test_exporter_refuses_an_oversized_batch_without_posting(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = FastOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", max_request_size=100)
    monkeypatch.setattr(exporter._client, "export", lambda body: pytest.fail("posted"))
    assert exporter.export(finished_spans(3)) is SpanExportResult.FAILURE


def test_exporter_after_shutdown_fails() -> None:
    exporter = FastOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    exporter.shutdown()  # type: ignore[no-untyped-call]
    assert exporter.export(finished_spans(1)) is SpanExportResult.FAILURE

"""meshtrace.spans: the cheap start/attribute path yields the very spans the plain SDK calls yield.

Every scenario runs twice on identically configured providers (same deterministic ids): once through the
public SDK calls, once through `meshtrace.start_span` / `meshtrace.set_clean_attributes`; the exported spans
must be equal field by field. Configurations cover the fast path (default limits, the SDK's and meshtrace's
samplers) and every fallback (span limits, a sampler or span processor that looks at attributes at start).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flask
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes, AttributeValue
from tracing_support import CountingIds

import meshtrace
from meshtrace import spans
from meshtrace.integrations import flask as mt_flask
from meshtrace.processor import DroppingBatchSpanProcessor
from meshtrace.sampling import HintedSampler

SERVER_ATTRIBUTES: dict[str, AttributeValue] = {
    "http.request.method": "GET", "url.path": "/users/42", "url.scheme": "http", "server.address": "localhost",
    "server.port": 8080, "client.address": "127.0.0.1", "user_agent.original": "test/1",
    "network.protocol.version": "1.1",
}


class DropsHealthChecks(Sampler):
    """A user's sampler that reads the start attributes: it must keep seeing them."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def should_sample(  # noqa: PLR0917
        self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
        attributes: Attributes = None, links: Sequence[Link] | None = None, trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.seen.append(dict(attributes or {}))
        if attributes and attributes.get("url.path") == "/healthz":
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {**(attributes or {}), "sampler.tag": "yes"})

    def get_description(self) -> str:
        return "DropsHealthChecks"


class StartRecorder(SpanProcessor):
    """A user's processor that reads attributes in on_start: it must keep seeing them there."""

    def __init__(self) -> None:
        self.at_start: list[dict[str, Any]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.at_start.append(dict(span.attributes or {}))


Config = Callable[[], tuple[TracerProvider, InMemorySpanExporter, object]]


def provider_with(sampler: Sampler | None = None, limits: SpanLimits | None = None,
                  extra: SpanProcessor | None = None) -> Config:
    def make() -> tuple[TracerProvider, InMemorySpanExporter, object]:
        provider = TracerProvider(sampler=sampler if sampler is not None else ParentBased(ALWAYS_ON),
                                  span_limits=limits, id_generator=CountingIds(), shutdown_on_exit=False)
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        if extra is not None:
            provider.add_span_processor(extra)
        return provider, exporter, extra
    return make


CONFIGS: dict[str, tuple[Config, bool]] = {  # name -> (factory, fast path expected)
    "default": (provider_with(), True),
    "hinted-ratio": (provider_with(HintedSampler(ParentBased(TraceIdRatioBased(1.0)))), True),
    "count-limit": (provider_with(limits=SpanLimits(max_span_attributes=5)), True),
    "length-limit": (provider_with(limits=SpanLimits(max_span_attribute_length=4)), True),
    "user-sampler": (provider_with(DropsHealthChecks()), False),
    "user-processor": (provider_with(extra=StartRecorder()), False),
}


def fields(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name, "kind": span.kind, "context": span.context, "parent": span.parent,
        "attributes": dict(span.attributes or {}), "dropped_attributes": span.dropped_attributes,
        "status": (span.status.status_code, span.status.description),
        "events": [(event.name, dict(event.attributes or {})) for event in span.events],
        "links": list(span.links), "resource": span.resource, "scope": span.instrumentation_scope,
    }


def scenario(provider: TracerProvider, fast: bool, path: str = "/users/42", fail: bool = False) -> None:
    """A server request as the integrations make it, with a user's OTel span (and event) nested inside."""
    tracer = provider.get_tracer("meshtrace.test")
    user = provider.get_tracer("user")
    attributes = {**SERVER_ATTRIBUTES, "url.path": path}
    parent = otel_context.get_current()
    if fast:
        span = meshtrace.start_span(tracer, "GET", parent, SpanKind.SERVER, attributes)
    else:
        span = tracer.start_span("GET", parent, SpanKind.SERVER, attributes, record_exception=False,
                                 set_status_on_exception=False)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        with user.start_as_current_span("user-work", attributes={"work": "yes"}) as child:
            child.add_event("checkpoint", {"step": 1})
    finally:
        otel_context.detach(token)
    finish: Mapping[str, AttributeValue] = {"http.route": "/users/<int:uid>", "http.response.status_code": 200}
    if span.is_recording():
        span.update_name("GET /users/<int:uid>")
        if fast:
            meshtrace.set_clean_attributes(span, finish)
        else:
            span.set_attributes(finish)
        if fail:
            span.set_status(Status(StatusCode.ERROR))
    span.end()


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "error"])
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_fast_path_spans_equal_plain_sdk_spans(config: str, fail: bool) -> None:
    factory, fast_expected = CONFIGS[config]
    results = []
    for use_fast in (False, True):
        provider, exporter, extra = factory()
        tracer = provider.get_tracer("meshtrace.test")
        assert spans._attributes_may_follow(tracer) is fast_expected
        scenario(provider, use_fast, fail=fail)
        scenario(provider, use_fast, path="/healthz")
        finished = exporter.get_finished_spans()
        results.append(([fields(span) for span in finished], [(s.start_time, s.end_time) for s in finished],
                        getattr(extra, "at_start", None), getattr(provider.sampler, "seen", None)))
    (plain, plain_times, plain_start, plain_seen), (fast, fast_times, fast_start, fast_seen) = results
    assert fast == plain
    assert fast_start == plain_start  # a processor reading attributes in on_start saw the same ones
    assert fast_seen == plain_seen  # and so did a sampler reading them
    for spans_times in (plain_times, fast_times):
        for start, end in spans_times:
            assert start is not None
            assert end is not None
            assert start <= end
    # Each user span is a child of its request's server span, and lies inside it in time.
    children = [i for i, span in enumerate(fast) if span["name"] == "user-work"]
    assert children
    for i in children:
        child = fast[i]
        servers = [j for j, span in enumerate(fast)
                   if span["kind"] is SpanKind.SERVER and span["context"] == child["parent"]]
        if not servers:  # the user's sampler dropped the request (and not its own span)
            assert config == "user-sampler"
            continue
        server = servers[0]
        assert fast_times[server][0] <= fast_times[i][0] <= fast_times[i][1] <= fast_times[server][1]  # type: ignore[operator]


def test_limits_applied_exactly_as_the_sdk() -> None:
    provider, exporter, _ = provider_with(limits=SpanLimits(max_span_attributes=5, max_span_attribute_length=4))()
    scenario(provider, fast=True)
    server = next(span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER)
    assert len(server.attributes or {}) == 5
    assert server.dropped_attributes == 5  # 8 at start + 2 at the end, 5 kept
    assert all(len(value) <= 4 for value in (server.attributes or {}).values() if isinstance(value, str))


def test_user_sampler_still_sees_attributes_and_drops() -> None:
    sampler = DropsHealthChecks()
    provider, exporter, _ = provider_with(sampler)()
    scenario(provider, fast=True, path="/healthz")
    assert sampler.seen[0]["url.path"] == "/healthz"
    assert [span.name for span in exporter.get_finished_spans()] == ["user-work"]  # the server span was dropped
    exporter.clear()
    scenario(provider, fast=True)
    server = next(span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER)
    assert (server.attributes or {})["sampler.tag"] == "yes"


@pytest.mark.parametrize("value", [["a", "b"], None, b"bytes", {"nested": 1}], ids=["list", "none", "bytes", "dict"])
def test_values_the_sdk_would_convert_or_refuse_take_the_public_path(value: Any) -> None:
    results = []
    for use_fast in (False, True):
        provider, exporter, _ = provider_with()()
        span = provider.get_tracer("t").start_span("s")
        attributes = {"ok": 1, "odd": value}
        if use_fast:
            meshtrace.set_clean_attributes(span, attributes)
        else:
            span.set_attributes(attributes)
        span.end()
        results.append(fields(exporter.get_finished_spans()[0]))
    assert results[0] == results[1]


def test_overwritten_keys_keep_the_sdk_order() -> None:
    results = []
    for use_fast in (False, True):
        provider, exporter, _ = provider_with()()
        span = provider.get_tracer("t").start_span("s", attributes={"a": 1, "b": 2})
        if use_fast:
            meshtrace.set_clean_attributes(span, {"a": 3, "c": 4})
        else:
            span.set_attributes({"a": 3, "c": 4})
        span.end()
        results.append(list((exporter.get_finished_spans()[0].attributes or {}).items()))
    assert results[1] == results[0] == [("b", 2), ("a", 3), ("c", 4)]


def test_ended_span_is_left_alone() -> None:
    provider, exporter, _ = provider_with()()
    span = provider.get_tracer("t").start_span("s", attributes={"a": 1})
    span.end()
    meshtrace.set_clean_attributes(span, {"b": 2})
    assert dict(exporter.get_finished_spans()[0].attributes or {}) == {"a": 1}
    assert dict(span.attributes or {}) == {"a": 1}  # type: ignore[attr-defined]


def test_non_sdk_span_and_tracer_take_the_public_path() -> None:
    span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
    meshtrace.set_clean_attributes(span, {"a": 1})  # no error, nothing recorded
    proxy_tracer = trace.ProxyTracer("x")
    started = meshtrace.start_span(proxy_tracer, "s", None, SpanKind.CLIENT, {"a": 1})
    assert not started.is_recording()


def test_processor_added_later_turns_the_fast_path_off() -> None:
    provider, _, _ = provider_with()()
    tracer = provider.get_tracer("t")
    assert spans._attributes_may_follow(tracer)
    recorder = StartRecorder()
    provider.add_span_processor(recorder)
    assert not spans._attributes_may_follow(tracer)
    meshtrace.start_span(tracer, "s", None, SpanKind.SERVER, {"a": 1}).end()
    assert recorder.at_start == [{"a": 1}]


def test_batch_processors_keep_the_fast_path() -> None:
    provider, _, _ = provider_with(HintedSampler(ParentBased(ALWAYS_ON)))()  # as meshtrace.configure() builds it
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    provider.add_span_processor(DroppingBatchSpanProcessor(InMemorySpanExporter()))
    assert spans._attributes_may_follow(provider.get_tracer("t"))
    provider.shutdown()


# --- Through the Flask integration: the same request with the fast path on and forced off. ---------------


def flask_spans(monkeypatch: pytest.MonkeyPatch, fast: bool, path: str) -> list[dict[str, Any]]:
    provider, exporter, _ = provider_with()()
    if not fast:
        monkeypatch.setattr(spans, "_attributes_may_follow", lambda tracer: False)
    app = flask.Flask("fast_path")
    user = provider.get_tracer("user")

    @app.get("/users/<int:uid>")
    def users(uid: int) -> str:
        with user.start_as_current_span("user-work") as child:
            child.add_event("in-view")
        return "ok"

    @app.get("/fail")
    def fail() -> tuple[str, int]:
        return "down", 503

    mt_flask.instrument_app(app, tracer_provider=provider)
    try:
        response = app.test_client().get(path, headers={"User-Agent": "test/1"})
        response.close()
    finally:
        mt_flask.uninstrument_app(app)
        monkeypatch.undo()
    return [fields(span) for span in exporter.get_finished_spans()]


@pytest.mark.parametrize("path", ["/users/42", "/fail", "/missing"])
def test_flask_request_spans_equal_with_and_without_fast_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    plain = flask_spans(monkeypatch, False, path)
    fast = flask_spans(monkeypatch, True, path)
    assert fast == plain
    server = next(span for span in fast if span["kind"] is SpanKind.SERVER)
    assert server["attributes"]["url.path"] == path
    if path == "/users/42":
        child = next(span for span in fast if span["name"] == "user-work")
        assert child["parent"] == server["context"]
        assert server["name"] == "GET /users/<int:uid>"


@pytest.fixture(autouse=True)
def _fresh_verdicts() -> Iterator[None]:
    spans._verdicts.clear()
    yield
    spans._verdicts.clear()

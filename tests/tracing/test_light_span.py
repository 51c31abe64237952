"""meshtrace.lightspan: meshtrace's lighter span is the SDK's span in every way anyone can observe.

Each scenario runs twice on identically configured providers (same deterministic ids, explicit timestamps):
once with `tracer.start_span(...)`, once with `meshtrace.start_span(...)`; the ReadableSpans the exporter gets
must be equal field by field, and so must the bytes/documents of meshtrace's OTLP, OTLP-JSON and Zipkin
encoders and the console exporter's JSON.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import (
    ConcurrentMultiSpanProcessor,
    ReadableSpan,
    Span,
    SpanLimits,
    SpanProcessor,
    TracerProvider,
    _disable_tracer_configurator,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
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
from meshtrace import lightspan
from meshtrace.exporters import otlp_wire, zipkin
from meshtrace.exporters.file import to_otlp_json
from meshtrace.lightspan import LightSpan
from meshtrace.processor import DroppingBatchSpanProcessor
from meshtrace.propagation import MeshPropagator
from meshtrace.sampling import HintedSampler, declare_attribute_blind, is_attribute_blind, known_decision

ATTRIBUTES: dict[str, AttributeValue] = {"http.request.method": "GET", "url.path": "/users/42", "url.scheme": "http",
              "server.address": "localhost", "server.port": 8080, "client.address": "127.0.0.1",
              "user_agent.original": "test/1", "network.protocol.version": "1.1", "ratio": 0.5, "tls": False}
T0 = 1_700_000_000_000_000_000


class Recorder(SpanProcessor):
    """A user's processor: what it sees at start, at ending and at end."""

    def __init__(self) -> None:
        self.started: list[tuple[str, dict[str, Any], Context | None]] = []
        self.ending: list[str] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started.append((span.name, dict(span.attributes or {}), parent_context))

    def _on_ending(self, span: Span) -> None:
        self.ending.append(span.name)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def make_provider(sampler: Sampler | None = None, **kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(sampler=sampler or HintedSampler(ParentBased(ALWAYS_ON)), id_generator=CountingIds(),
                              shutdown_on_exit=False, **kwargs)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def fields(span: ReadableSpan) -> dict[str, Any]:
    return {
        "type": isinstance(span, ReadableSpan), "name": span.name, "kind": span.kind, "context": span.context,
        "parent": span.parent, "start": span.start_time, "end": span.end_time,
        "attributes": list((span.attributes or {}).items()), "dropped_attributes": span.dropped_attributes,
        "status": (span.status.status_code, span.status.description),
        "events": [(e.name, e.timestamp, dict(e.attributes or {}), e.dropped_attributes) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "dropped_links": span.dropped_links, "resource": span.resource, "scope": span.instrumentation_scope,
    }


def request(provider: TracerProvider, light: bool, parent: Context | None = None, fail: bool = False) -> None:
    """A server span as an integration makes it, a user's span inside, then every mutator a caller may use."""
    tracer = provider.get_tracer("meshtrace.test", "1.0")
    user = provider.get_tracer("user")
    parent = otel_context.get_current() if parent is None else parent
    if light:
        span = meshtrace.start_span(tracer, "GET", parent, SpanKind.SERVER, ATTRIBUTES, T0)
    else:
        span = tracer.start_span("GET", parent, SpanKind.SERVER, ATTRIBUTES, start_time=T0, record_exception=False,
                                 set_status_on_exception=False)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        with user.start_as_current_span("user-work", attributes={"work": "yes"}, start_time=T0 + 10,
                                        end_on_exit=False) as child:
            child.add_event("checkpoint", {"step": 1}, timestamp=T0 + 20)
            child.end(T0 + 30)
    finally:
        otel_context.detach(token)
    span.update_name("GET /users/<int:uid>")
    span.set_attribute("http.route", "/users/<int:uid>")
    span.set_attributes({"http.response.status_code": 500 if fail else 200, "tags": ["a", "b"]})
    span.set_attribute("", "dropped: empty key")
    span.add_event("sent", {"bytes": 2, "list": [1, 2]}, timestamp=T0 + 40)
    span.add_link(trace.SpanContext(0xF00, 0xBA5, is_remote=True), {"link.kind": "follows"})
    if fail:
        span.record_exception(ValueError("bad id"), {"extra": 1}, timestamp=T0 + 50)
        span.set_status(Status(StatusCode.ERROR, "ValueError: bad id"))
    span.end(T0 + 100)


def run_both(make: Any, scenario: Any) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
    results = []
    for light in (False, True):
        provider, exporter = make()
        scenario(provider, light)
        results.append(list(exporter.get_finished_spans()))
    return results[0], results[1]


def encodings(spans: Sequence[ReadableSpan]) -> tuple[bytes, Any, str, list[str]]:
    return (otlp_wire.encode_spans(spans), to_otlp_json(spans), zipkin.encode_spans(spans),
            [span.to_json() for span in spans])


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "error"])
def test_exporters_see_what_the_sdk_span_gives(fail: bool) -> None:
    plain, light = run_both(make_provider, lambda provider, use: request(provider, use, fail=fail))
    assert [fields(span) for span in light] == [fields(span) for span in plain]
    assert encodings(light) == encodings(plain)
    server = next(span for span in light if span.kind is SpanKind.SERVER)
    assert type(server) is LightSpan
    assert isinstance(server, Span)
    assert isinstance(server, ReadableSpan)
    child = next(span for span in light if span.name == "user-work")
    assert child.parent == server.context  # the user's SDK span nests under ours
    assert server.dropped_attributes == 1  # the empty key, counted as the SDK counts it


PARENTS = {
    "root": {},
    "sampled": {"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7",
                "x-b3-sampled": "1"},
    "not-sampled": {"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7",
                    "x-b3-sampled": "0"},
    "deferred": {"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7"},
    "deny": {"b3": "0"},
    "debug": {"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7",
              "x-b3-flags": "1", "x-b3-sampled": "0"},
    "traceparent-state": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                          "tracestate": "vendor=value"},
}
SAMPLERS: dict[str, Callable[[], Sampler]] = {
    "hinted-parentbased-on": lambda: HintedSampler(ParentBased(ALWAYS_ON)),
    "hinted-parentbased-off": lambda: HintedSampler(ParentBased(ALWAYS_OFF)),
    "hinted-ratio-0": lambda: HintedSampler(ParentBased(TraceIdRatioBased(0.0))),
    "ratio-1": lambda: TraceIdRatioBased(1.0),
}


@pytest.mark.parametrize("parent", list(PARENTS))
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_sampling_decisions_and_hints_are_the_sdk_ones(sampler: str, parent: str) -> None:
    propagator = MeshPropagator(["b3multi", "b3", "tracecontext"])
    decided: list[list[Any]] = []
    for light in (False, True):
        provider, exporter = make_provider(SAMPLERS[sampler]())
        tracer = provider.get_tracer("meshtrace.test")
        context = propagator.extract(PARENTS[parent])
        if light:
            span = meshtrace.start_span(tracer, "GET", context, SpanKind.SERVER, ATTRIBUTES, T0)
        else:
            span = tracer.start_span("GET", context, SpanKind.SERVER, ATTRIBUTES, start_time=T0,
                                     record_exception=False, set_status_on_exception=False)
        recording = span.is_recording()
        span.end(T0 + 1)
        decided.append([type(span) is LightSpan, recording, span.get_span_context(),
                        [fields(s) for s in exporter.get_finished_spans()]])
    assert decided[1][1:] == decided[0][1:]
    assert decided[1][0] is decided[1][1]  # a recorded span is a light one; a dropped one is NonRecordingSpan


DECISION_SAMPLERS: dict[str, Callable[[], Sampler]] = {
    **SAMPLERS,
    "ratio-half": lambda: TraceIdRatioBased(0.5),
    "mixed-parentbased": lambda: HintedSampler(ParentBased(
        TraceIdRatioBased(0.5), remote_parent_sampled=ALWAYS_OFF, remote_parent_not_sampled=ALWAYS_ON,
        local_parent_sampled=TraceIdRatioBased(0.25), local_parent_not_sampled=ALWAYS_ON)),
    "hinted-hinted": lambda: HintedSampler(HintedSampler(ALWAYS_OFF)),
}


@pytest.mark.parametrize("local", [None, True, False], ids=["extracted", "local-sampled", "local-not-sampled"])
@pytest.mark.parametrize("parent", list(PARENTS))
@pytest.mark.parametrize("sampler", list(DECISION_SAMPLERS))
def test_known_decisions_are_what_should_sample_returns(sampler: str, parent: str, local: bool | None) -> None:
    made = DECISION_SAMPLERS[sampler]()
    context = MeshPropagator(["b3multi", "b3", "tracecontext"]).extract(PARENTS[parent])
    if local is not None:  # a span of this process as the parent, over whatever was extracted
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if local else trace.TraceFlags.DEFAULT)
        own = trace.SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x1234, False, flags, TraceState([("k", "v")]))
        context = trace.set_span_in_context(trace.NonRecordingSpan(own), context)
    span_context = trace.get_current_span(context).get_span_context()
    parent_span = span_context if span_context.is_valid else None
    trace_ids = [parent_span.trace_id] if parent_span is not None else [
        0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xABC, (1 << 127) + (1 << 63), (1 << 62) - 1]
    for trace_id in trace_ids:
        expected = made.should_sample(context, trace_id, "GET", SpanKind.SERVER, None, ())
        assert known_decision(made, context, parent_span, trace_id) == (expected.decision, expected.trace_state)


FORCE = otel_context.create_key("test-force")


class ForcingWithDecide(Sampler):
    """Like the proxy's ProxySampler: forces sampling when the context says so, else its delegate decides."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate
        self.asked = 0

    def should_sample(  # noqa: PLR0917
        self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
        attributes: Attributes = None, links: Sequence[Link] | None = None, trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.asked += 1
        if parent_context is not None and parent_context.get(FORCE) is True:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "ForcingWithDecide"

    @staticmethod
    def decide(sampler: Any, parent_context: Context | None, parent: trace.SpanContext | None,
               trace_id: int) -> tuple[Decision, TraceState | None] | None:
        if parent_context is not None and parent_context.get(FORCE) is True:
            return Decision.RECORD_AND_SAMPLE, None
        return known_decision(sampler.delegate, parent_context, parent, trace_id)


@pytest.mark.parametrize("forced", [False, True])
@pytest.mark.parametrize("parent", list(PARENTS))
def test_a_declared_decide_function_replaces_should_sample_with_the_same_spans(parent: str, forced: bool) -> None:
    declare_attribute_blind(ForcingWithDecide, lambda sampler: (sampler.delegate,), ForcingWithDecide.decide)
    propagator = MeshPropagator(["b3multi", "b3", "tracecontext"])
    results = []
    for light in (False, True):
        sampler = ForcingWithDecide(HintedSampler(ParentBased(ALWAYS_OFF)))
        provider, exporter = make_provider(HintedSampler(sampler))
        tracer = provider.get_tracer("meshtrace.test")
        context = propagator.extract(PARENTS[parent])
        if forced:
            context = otel_context.set_value(FORCE, True, context)
        if light:
            span = meshtrace.start_span(tracer, "hop", context, SpanKind.SERVER, ATTRIBUTES, T0)
        else:
            span = tracer.start_span("hop", context, SpanKind.SERVER, ATTRIBUTES, start_time=T0,
                                     record_exception=False, set_status_on_exception=False)
        span.end(T0 + 1)
        results.append((span.get_span_context(), [fields(s) for s in exporter.get_finished_spans()], sampler.asked))
    assert results[1][:2] == results[0][:2]
    assert results[1][2] == 0  # never asked: decided by its declared function


def test_samplers_not_known_get_asked() -> None:
    assert known_decision(Forcing(ALWAYS_ON), None, None, 1) is None
    assert known_decision(ParentBased(Forcing(ALWAYS_ON)), None, None, 1) is None
    assert known_decision(HintedSampler(ReadsAttributes()), None, None, 1) is None


def test_every_mutator_refuses_once_ended_and_on_end_sees_the_final_span() -> None:
    provider, _ = make_provider()
    recorder = Recorder()
    provider.add_span_processor(recorder)
    span = meshtrace.start_span(provider.get_tracer("t"), "s", None, SpanKind.CLIENT, {"a": 1}, T0)
    assert recorder.started == [("s", {"a": 1}, None)]  # attributes already there at on_start, as in the SDK
    span.end(T0 + 5)
    (ended,) = recorder.ended
    before = fields(ended)
    span.set_attribute("b", 2)
    span.set_attributes({"c": 3})
    span.add_event("late")
    span.add_link(trace.SpanContext(1, 2, is_remote=False))
    span.update_name("renamed")
    span.set_status(Status(StatusCode.ERROR))
    span.record_exception(RuntimeError("late"))
    span.end(T0 + 9)  # a second end changes nothing and calls no processor again
    assert fields(ended) == before
    assert recorder.ended == [ended]
    assert recorder.ending == ["s"]
    with pytest.raises(TypeError):
        ended.attributes["x"] = 1  # type: ignore[index]  # read-only to a processor, as the SDK's copy is


def test_processor_added_after_start_still_gets_on_end() -> None:
    provider, exporter = make_provider()
    span = meshtrace.start_span(provider.get_tracer("t"), "s", None, SpanKind.CLIENT, {"a": 1})
    late = Recorder()
    provider.add_span_processor(late)
    span.end()
    assert [s.name for s in late.ended] == ["s"]
    assert late.ending == ["s"]
    assert late.started == []
    assert [s.name for s in exporter.get_finished_spans()] == ["s"]


def test_our_span_nests_under_a_users_span() -> None:
    provider, exporter = make_provider()
    user = provider.get_tracer("user")
    with user.start_as_current_span("handler") as outer:
        span = meshtrace.start_span(provider.get_tracer("t"), "GET", None, SpanKind.CLIENT, {"a": 1})
        span.end()
    assert type(span) is LightSpan
    assert span.parent == outer.get_span_context()
    assert span.get_span_context().trace_id == outer.get_span_context().trace_id
    assert [s.name for s in exporter.get_finished_spans()] == ["GET", "handler"]


class ReadsAttributes(Sampler):
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def should_sample(  # noqa: PLR0917
        self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
        attributes: Attributes = None, links: Sequence[Link] | None = None, trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.seen.append(dict(attributes or {}))
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "ReadsAttributes"


class Forcing(Sampler):
    """A wrapper defined outside the core, like the proxy's ProxySampler."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(  # noqa: PLR0917
        self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
        attributes: Attributes = None, links: Sequence[Link] | None = None, trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "Forcing"


def test_a_wrapper_sampler_declared_blind_keeps_the_light_path_only_over_blind_samplers() -> None:
    reader = ReadsAttributes()
    assert not is_attribute_blind(Forcing(ParentBased(ALWAYS_ON)))  # undeclared: the SDK path, attributes at start
    declare_attribute_blind(Forcing, lambda sampler: (sampler.delegate,))
    assert is_attribute_blind(HintedSampler(Forcing(ParentBased(TraceIdRatioBased(0.5)))))
    assert not is_attribute_blind(Forcing(reader))  # only as blind as what it wraps

    class SubForcing(Forcing):
        pass

    assert not is_attribute_blind(SubForcing(ALWAYS_ON))  # a subclass is not declared by its base
    provider, _ = make_provider(HintedSampler(Forcing(ParentBased(ALWAYS_ON))))
    assert type(meshtrace.start_span(provider.get_tracer("t"), "s", None, SpanKind.SERVER, {"a": 1})) is LightSpan
    provider, _ = make_provider(Forcing(reader))
    span = meshtrace.start_span(provider.get_tracer("t"), "s", None, SpanKind.SERVER, {"a": 1})
    assert type(span) is not LightSpan
    assert reader.seen == [{"a": 1}]


def _concurrent_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    multi = ConcurrentMultiSpanProcessor(1)
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), id_generator=CountingIds(), shutdown_on_exit=False,
                              active_span_processor=multi)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


FALLBACKS = {
    "span-limits": lambda: make_provider(span_limits=SpanLimits(max_span_attributes=5, max_attribute_length=3)),
    "event-limit": lambda: make_provider(span_limits=SpanLimits(max_events=1)),
    "user-sampler": lambda: make_provider(ReadsAttributes()),
    "concurrent-processors": _concurrent_provider,
    "disabled-tracer": lambda: make_provider(_tracer_configurator=_disable_tracer_configurator),
}


@pytest.mark.parametrize("config", list(FALLBACKS))
def test_unusual_configurations_take_the_sdk_path_with_the_same_result(config: str) -> None:
    plain, light = run_both(FALLBACKS[config], lambda provider, use: request(provider, use, fail=True))
    assert [fields(span) for span in light] == [fields(span) for span in plain]
    assert not any(type(span) is LightSpan for span in light)


def test_a_tracer_disabled_or_limited_in_place_leaves_the_light_path() -> None:
    provider, _ = make_provider()
    tracer = provider.get_tracer("t")
    assert type(meshtrace.start_span(tracer, "s", None, SpanKind.SERVER, {"a": 1})) is LightSpan
    provider._span_limits.max_span_attribute_length = 2
    span = meshtrace.start_span(tracer, "s", None, SpanKind.SERVER, {"a": "long"})
    assert type(span) is not LightSpan
    assert dict(span.attributes or {}) == {"a": "lo"}  # type: ignore[attr-defined]
    provider._span_limits.max_span_attribute_length = None
    assert type(meshtrace.start_span(tracer, "s", None, SpanKind.SERVER, {"a": 1})) is LightSpan
    tracer._tracer_config.is_enabled = False  # type: ignore[attr-defined]
    assert not meshtrace.start_span(tracer, "s", None, SpanKind.SERVER, {"a": 1}).is_recording()


def test_non_sdk_tracer_gets_its_own_span() -> None:
    span = meshtrace.start_span(trace.ProxyTracer("x"), "s", None, SpanKind.CLIENT, {"a": 1})
    assert not span.is_recording()


def test_sdk_internal_span_metrics_count_light_spans_as_sdk_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    points = []
    for light in (False, True):
        reader = InMemoryMetricReader()
        provider, _ = make_provider(HintedSampler(ParentBased(TraceIdRatioBased(1.0))),
                                    meter_provider=MeterProvider(metric_readers=[reader]))
        tracer = provider.get_tracer("t")
        spans = [meshtrace.start_span(tracer, "s", None, SpanKind.SERVER, {"a": 1}) if light else
                 tracer.start_span("s", None, SpanKind.SERVER, {"a": 1}) for _ in range(3)]
        assert all(type(span) is LightSpan for span in spans) is light
        spans[0].end()
        data = reader.get_metrics_data()
        assert data is not None
        points.append(sorted(
            (metric.name, tuple(sorted((point.attributes or {}).items())), point.value)  # type: ignore[union-attr]
            for resource in data.resource_metrics for scope in resource.scope_metrics
            for metric in scope.metrics for point in metric.data.data_points))
    assert points[1] == points[0]
    assert ("otel.sdk.span.live", (("otel.span.sampling_result", "RECORD_AND_SAMPLE"),), 2) in points[1]


def test_the_batch_processor_meshtrace_installs_exports_light_spans() -> None:
    provider = TracerProvider(sampler=HintedSampler(ParentBased(ALWAYS_ON)), shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    processor = DroppingBatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    span = meshtrace.start_span(provider.get_tracer("t"), "s", None, SpanKind.SERVER, {"a": 1})
    span.end()
    processor.force_flush()
    assert type(span) is LightSpan
    assert [(s.name, dict(s.attributes or {})) for s in exporter.get_finished_spans()] == [("s", {"a": 1})]
    provider.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_spans_carry_the_childs_resource() -> None:
    provider, _ = make_provider()
    tracer = provider.get_tracer("t")
    meshtrace.start_span(tracer, "warm", None, SpanKind.SERVER, {"a": 1}).end()  # the plan is cached before fork
    before = provider.resource
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        try:
            span = meshtrace.start_span(tracer, "child", None, SpanKind.SERVER, {"a": 1})
            span.end()
            result = {"light": type(span) is LightSpan, "current": span.resource is provider.resource,  # type: ignore[attr-defined]
                      "updated": provider.resource is not before}
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)
    assert result == {"light": True, "current": True, "updated": True}


@pytest.mark.parametrize("sampler", ["hinted-parentbased-on", "hinted-ratio-0", "ratio-1"])
def test_root_ids_drawn_at_once_equal_the_sdks_draw_for_draw(sampler: str) -> None:
    # The SDK's own RandomIdGenerator: a light root span takes its two ids from one getrandbits(192).
    contexts = []
    for light in (False, True):
        provider = TracerProvider(sampler=SAMPLERS[sampler](), shutdown_on_exit=False)
        tracer = provider.get_tracer("t")
        random.seed(7)
        spans = [meshtrace.start_span(tracer, "s", Context(), SpanKind.SERVER, {"a": 1}) if light else
                 tracer.start_span("s", Context(), SpanKind.SERVER, {"a": 1}) for _ in range(5)]
        assert all(type(span) is LightSpan for span in spans) is (light and spans[0].is_recording())
        contexts.append([span.get_span_context() for span in spans])
    assert contexts[1] == contexts[0]


def _writes(span: Any) -> None:
    """Attribute writes that the plain dict must either do as BoundedAttributes does or hand over to it."""
    span.set_attribute("url.path", "/moved-to-the-end")  # a re-set key moves to the end
    span.set_attributes({"a": 1, "server.port": 9090, "b": 2.5})  # overlapping keys
    span.set_attribute("flag", True)
    for number in range(130):  # past the count limit: the oldest are evicted and counted
        span.set_attribute(f"k{number}", number)
    span.set_attribute("tags", ["x", "y"])  # a list: copied into a tuple


@pytest.mark.parametrize("writes", ["plain", "with-limit-and-lists"])
def test_attribute_writes_give_the_sdks_attributes(writes: str) -> None:
    def scenario(provider: TracerProvider, light: bool) -> None:
        tracer = provider.get_tracer("t")
        span: Any = (meshtrace.start_span(tracer, "GET", None, SpanKind.SERVER, ATTRIBUTES, T0) if light else
                     tracer.start_span("GET", None, SpanKind.SERVER, ATTRIBUTES, start_time=T0))
        if writes == "plain":
            span.set_attribute("url.path", "/moved")
            span.set_attributes({"a": 1, "server.port": 9090})
        else:
            _writes(span)
        span.end(T0 + 1)

    plain, light = run_both(make_provider, scenario)
    assert [fields(span) for span in light] == [fields(span) for span in plain]
    assert encodings(light) == encodings(plain)


def test_rename_and_add_equals_update_name_and_set_attributes() -> None:
    def scenario(provider: TracerProvider, light: bool) -> None:
        span: Any = meshtrace.start_span(provider.get_tracer("t"), "GET", None, SpanKind.SERVER, ATTRIBUTES, T0)
        added = {"http.route": "/users/<int:uid>", "http.response.status_code": 200}
        if not (light and span.rename_and_add("GET /users/<int:uid>", added)):
            span.update_name("GET /users/<int:uid>")
            span.set_attributes(added)
        span.end(T0 + 1)

    plain, light = run_both(make_provider, scenario)
    assert [fields(span) for span in light] == [fields(span) for span in plain]
    provider, _ = make_provider()
    span: Any = meshtrace.start_span(provider.get_tracer("t"), "GET", None, SpanKind.SERVER, ATTRIBUTES, T0)
    assert not span.rename_and_add("renamed", {"url.path": "/again"})  # a key it has: the SDK would move it
    assert not span.rename_and_add("renamed", {"tags": ["a"]})  # not plain
    assert span.name == "GET"
    span.end(T0 + 1)
    assert not span.rename_and_add("renamed", {"late": 1})
    assert span.name == "GET"


@pytest.fixture(autouse=True)
def _fresh_plans() -> Iterator[None]:
    lightspan._plans.clear()
    lightspan._refusals.clear()
    yield
    lightspan._plans.clear()
    lightspan._refusals.clear()

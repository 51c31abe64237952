"""A client span's common path (meshtrace.lightspan): a child of a local sampled parent, decided without the
sampler, ended with its status code by `end_with_attribute`, queued straight into the SDK's batch queue.

Each scenario runs the SDK's way (`tracer.start_span`, `set_attribute`, `end`) and meshtrace's on identically
configured providers; the exported spans must be equal field by field. Every condition that must send a span
down the general path has a case whose result differs if the fast path were taken anyway.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes, AttributeValue
from tracing_support import CountingIds

from meshtrace import lightspan, spans
from meshtrace.lightspan import LightSpan
from meshtrace.propagation import MeshPropagator
from meshtrace.propagation._context import set_debug, set_sampling_hint
from meshtrace.sampling import HintedSampler, declare_attribute_blind, known_decision, sampled_local_rule

STATUS = "http.response.status_code"
CLIENT_ATTRIBUTES: dict[str, AttributeValue] = {
    "http.request.method": "GET", "url.full": "http://backend.local:8080/items/1", "server.address": "backend.local",
    "server.port": 8080}
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
INCOMING = {
    "none": {},
    "b3": {"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7",
           "x-b3-sampled": "1"},
    "traceparent-state": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                          "tracestate": "vendor=value,other=x"},
    "traceparent-random": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"},
    "debug": {"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7",
              "x-b3-flags": "1"},
}


def fields(span: ReadableSpan) -> dict[str, Any]:
    """Everything an exporter reads, times as their order (the two ways read the clock at different moments)."""
    assert span.start_time is not None
    assert span.end_time is not None
    return {
        "name": span.name, "kind": span.kind, "context": span.context, "parent": span.parent,
        "flags": (span.context.trace_flags, type(span.context.trace_flags)) if span.context else None,
        "times in order": span.start_time <= span.end_time,
        "attributes": list((span.attributes or {}).items()), "dropped_attributes": span.dropped_attributes,
        "status": (span.status.status_code, span.status.description),
        "events": list(span.events), "links": list(span.links), "resource": span.resource,
        "scope": span.instrumentation_scope,
    }


def make_provider(sampler: Sampler | None = None, ids: Any = None,
                  **kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(sampler=sampler or HintedSampler(ParentBased(ALWAYS_ON)),
                              id_generator=CountingIds() if ids is None else ids, shutdown_on_exit=False,
                              resource=Resource.create({"service.name": "client-test"}), **kwargs)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def parent_span(provider: TracerProvider, parent: str, context: Context) -> trace.Span:
    """The span a client call is made under: the SDK's, meshtrace's server span, or a bare local context."""
    tracer = provider.get_tracer("server")
    if parent == "sdk":
        return tracer.start_span("server", context, SpanKind.SERVER)
    if parent == "light":
        return spans.start_span(provider.get_tracer("meshtrace.server"), "server", context, SpanKind.SERVER, {"a": 1})
    flags = TraceFlags(TraceFlags.SAMPLED | (TraceFlags.RANDOM_TRACE_ID if parent == "non-recording-random" else 0))
    return trace.NonRecordingSpan(trace.SpanContext(TRACE_ID, 0xBEEF, False, flags, TraceState([("k", "v")])))


def client_call(provider: TracerProvider, light: bool, context: Context, attributes: dict[str, AttributeValue],
                status_code: int | None = 200) -> trace.Span:
    """A client span as the integration makes it (meshtrace's way) or as the SDK's public API makes it."""
    tracer = provider.get_tracer("meshtrace.integrations.requests", "1.0")
    if light:
        span = spans.start_owned_span(tracer, "GET", context, SpanKind.CLIENT, dict(attributes))
        if status_code is not None:
            if type(span) is LightSpan:
                span.end_with_attribute(STATUS, status_code)
            else:
                span.set_attribute(STATUS, status_code)
                span.end()
        return span
    span = tracer.start_span("GET", context, SpanKind.CLIENT, attributes, record_exception=False,
                             set_status_on_exception=False)
    if status_code is not None:
        span.set_attribute(STATUS, status_code)
        span.end()
    return span


def both_ways(make: Callable[[], tuple[TracerProvider, InMemorySpanExporter]],
              scenario: Callable[[TracerProvider, bool], object]) -> tuple[list[Any], list[Any]]:
    results = []
    for light in (False, True):
        provider, exporter = make()
        random.seed(11)  # the same draws both ways, for a RandomIdGenerator
        scenario(provider, light)
        results.append([fields(span) for span in exporter.get_finished_spans()])
    return results[0], results[1]


PARENTS = ["sdk", "light", "non-recording", "non-recording-random"]
plain_values = st.one_of(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), st.booleans(),
                         st.floats(allow_nan=False))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parent=st.sampled_from(PARENTS), incoming=st.sampled_from(sorted(INCOMING)),
       extra=st.dictionaries(st.text(min_size=1, max_size=6), plain_values, max_size=4),
       status_code=st.sampled_from([200, 204, 302, 404, 503]), random_ids=st.booleans())
def test_a_client_span_under_a_local_parent_exports_what_the_sdk_exports(
        parent: str, incoming: str, extra: dict[str, AttributeValue], status_code: int, random_ids: bool) -> None:
    attributes = {**CLIENT_ATTRIBUTES, **extra}

    def scenario(provider: TracerProvider, light: bool) -> None:
        context = MeshPropagator(["b3multi", "b3", "tracecontext"]).extract(INCOMING[incoming])
        server = parent_span(provider, parent, context)
        client = client_call(provider, light, trace.set_span_in_context(server, context), attributes, status_code)
        assert (type(client) is LightSpan) is light
        server.end()

    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    plain, light = both_ways(lambda: make_provider(ids=RandomIdGenerator() if random_ids else None), scenario)
    assert light == plain
    assert light  # the client span itself was exported (not only its parent)


def test_the_common_path_is_taken_for_a_child_of_a_local_sampled_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    # The point of the fast path: no sampler call, no known_decision walk, for the client span under our server span.
    provider, _ = make_provider()
    context = MeshPropagator().extract(INCOMING["b3"])
    server = parent_span(provider, "light", context)
    monkeypatch.setattr(lightspan, "known_decision", _must_not_be_called)
    client = client_call(provider, True, trace.set_span_in_context(server, context), CLIENT_ATTRIBUTES, None)
    assert type(client) is LightSpan
    assert client.parent == server.get_span_context()


def _must_not_be_called(*args: object) -> None:
    raise AssertionError("the sampler's decision was worked out per span")


class Counting(Sampler):
    """A sampler meshtrace knows nothing of (declared attribute-blind, no decide function): it must be asked."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate
        self.asked = 0

    def should_sample(  # noqa: PLR0917
        self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
        attributes: Attributes = None, links: Any = None, trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.asked += 1
        return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "Counting"


declare_attribute_blind(Counting, lambda sampler: (sampler.delegate,))


def _remote_parent(context: Context) -> Context:
    return context  # the extracted context itself: the client span's parent is remote


def _local_not_sampled(context: Context) -> Context:
    span_context = trace.SpanContext(TRACE_ID, 0xBEEF, False, TraceFlags(TraceFlags.DEFAULT))
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context), context)


def _local_sampled(context: Context) -> Context:
    return trace.set_span_in_context(parent_span(TracerProvider(), "non-recording", context), context)


def _denied(context: Context) -> Context:
    return set_sampling_hint(False, _local_sampled(context))


def _denied_but_debug(context: Context) -> Context:
    return set_debug(True, _denied(context))


def _invalid_local_parent(context: Context) -> Context:
    return trace.set_span_in_context(trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT), context)


#: Each fallback: (sampler, how the client's context is made from the extracted one, is the client sampled?).
#: The sampled column is the SDK's answer; the fast path (which always samples) would get the False ones wrong.
FALLBACKS: dict[str, tuple[Callable[[], Sampler], Callable[[Context], Context], bool]] = {
    "remote-parent": (lambda: ParentBased(ALWAYS_ON, remote_parent_sampled=ALWAYS_OFF), _remote_parent, False),
    "local-not-sampled": (lambda: ParentBased(ALWAYS_ON), _local_not_sampled, False),
    "local-sampled-rule-off": (lambda: ParentBased(ALWAYS_ON, local_parent_sampled=ALWAYS_OFF), _local_sampled,
                               False),
    "local-sampled-ratio": (lambda: ParentBased(ALWAYS_ON, local_parent_sampled=TraceIdRatioBased(0.0)),
                            _local_sampled, False),
    "hint-false": (lambda: HintedSampler(ParentBased(ALWAYS_ON)), _denied, False),
    "hint-false-debug": (lambda: HintedSampler(ParentBased(ALWAYS_ON)), _denied_but_debug, True),
    "unknown-sampler": (lambda: Counting(ParentBased(ALWAYS_OFF, local_parent_sampled=ALWAYS_OFF)), _local_sampled,
                        False),
    "invalid-parent": (lambda: ParentBased(ALWAYS_OFF), _invalid_local_parent, False),
}


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_every_other_parent_and_sampler_gets_the_sdks_decision(case: str) -> None:
    make_sampler, make_context, sampled = FALLBACKS[case]
    decided = []
    for light in (False, True):
        sampler = make_sampler()
        provider, exporter = make_provider(sampler)
        context = make_context(MeshPropagator().extract(INCOMING["b3"]))
        span = client_call(provider, light, context, CLIENT_ATTRIBUTES)
        decided.append((span.get_span_context(), [fields(s) for s in exporter.get_finished_spans()]))
        if isinstance(sampler, Counting):
            assert sampler.asked == 1  # asked, not decided on its behalf
    assert decided[1] == decided[0]
    assert decided[1][0].trace_flags.sampled is sampled


class OwnContext(trace.NonRecordingSpan):
    """A span type whose get_span_context() is its own: it must be asked, not have its field read."""

    def get_span_context(self) -> trace.SpanContext:
        return trace.SpanContext(TRACE_ID, 0xFEED, False, TraceFlags(TraceFlags.SAMPLED))


def test_a_parent_type_with_its_own_get_span_context_is_asked() -> None:
    provider, _ = make_provider()
    hidden = trace.SpanContext(TRACE_ID + 1, 0xBAD, False, TraceFlags(TraceFlags.SAMPLED))
    span = client_call(provider, True, trace.set_span_in_context(OwnContext(hidden)), CLIENT_ATTRIBUTES, None)
    assert span.parent == trace.SpanContext(TRACE_ID, 0xFEED, False, TraceFlags(TraceFlags.SAMPLED))  # type: ignore[attr-defined]


@pytest.mark.parametrize("processor", ["simple", "batch"])
def test_internal_span_metrics_count_client_spans_as_the_sdk_does(monkeypatch: pytest.MonkeyPatch,
                                                                   processor: str) -> None:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    points = []
    for light in (False, True):
        reader = InMemoryMetricReader()
        if processor == "simple":
            provider, _ = make_provider(meter_provider=MeterProvider(metric_readers=[reader]))
        else:  # the batch queue alone: a light span's end may append to it in place, but must count the end first
            provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), shutdown_on_exit=False,
                                      meter_provider=MeterProvider(metric_readers=[reader]))
            provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter(), schedule_delay_millis=3_600_000))
        context = _local_sampled(Context())
        client_call(provider, light, context, CLIENT_ATTRIBUTES)
        client_call(provider, light, context, CLIENT_ATTRIBUTES, None)  # one still live
        data = reader.get_metrics_data()
        assert data is not None
        points.append(sorted(
            (metric.name, tuple(sorted((point.attributes or {}).items())), point.value)  # type: ignore[union-attr]
            for resource in data.resource_metrics for scope in resource.scope_metrics
            for metric in scope.metrics for point in metric.data.data_points))
        provider.shutdown()
    assert points[1] == points[0]
    assert ("otel.sdk.span.live", (("otel.span.sampling_result", "RECORD_AND_SAMPLE"),), 1) in points[1]


# --- sampled_local_rule


RULE_SAMPLERS: dict[str, Callable[[], Sampler]] = {
    "parentbased-on": lambda: ParentBased(ALWAYS_ON),
    "parentbased-off": lambda: ParentBased(ALWAYS_OFF),
    "hinted-parentbased-on": lambda: HintedSampler(ParentBased(ALWAYS_ON)),
    "hinted-hinted-on": lambda: HintedSampler(HintedSampler(ALWAYS_ON)),
    "hinted-ratio": lambda: HintedSampler(ParentBased(TraceIdRatioBased(0.5))),
    "always-on": lambda: ALWAYS_ON,
    "always-off": lambda: ALWAYS_OFF,
    "local-sampled-off": lambda: HintedSampler(ParentBased(ALWAYS_ON, local_parent_sampled=ALWAYS_OFF)),
    "local-sampled-ratio": lambda: ParentBased(ALWAYS_ON, local_parent_sampled=TraceIdRatioBased(0.5)),
    "record-only": lambda: ParentBased(ALWAYS_ON, local_parent_sampled=StaticSampler(Decision.RECORD_ONLY)),
    "unknown": lambda: Counting(ALWAYS_ON),
}
#: What the rule must say for the configurations that matter (so the equality test cannot pass on Nones alone).
EXPECTED_RULES = {"parentbased-on": 0, "parentbased-off": 0, "hinted-parentbased-on": 1, "hinted-hinted-on": 1,
                  "always-on": 0, "hinted-ratio": 1}


@pytest.mark.parametrize("name", list(RULE_SAMPLERS))
def test_sampled_local_rule_is_known_decisions_answer(name: str) -> None:
    sampler = RULE_SAMPLERS[name]()
    rule = sampled_local_rule(sampler)
    assert (None if rule is None else len(rule)) == EXPECTED_RULES.get(name)
    if rule is None:
        return
    propagator = MeshPropagator(["b3multi", "b3", "tracecontext"])
    for headers in [*INCOMING.values(), {"b3": "0"}, {"b3": "1"},
                    {"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7"}]:
        for flags in (TraceFlags.SAMPLED, TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID, 0x81):
            for state in (TraceState(), TraceState([("k", "v")])):
                parent = trace.SpanContext(TRACE_ID, 0xBEEF, False, TraceFlags(flags), state)
                context = trace.set_span_in_context(trace.NonRecordingSpan(parent), propagator.extract(headers))
                if any(context.get(key) is False for key in rule):
                    continue  # left to known_decision
                for trace_id in (TRACE_ID, 1, (1 << 128) - 1):
                    assert known_decision(sampler, context, parent, trace_id) == (Decision.RECORD_AND_SAMPLE, state)
                    result = sampler.should_sample(context, trace_id, "GET", SpanKind.CLIENT)
                    assert (result.decision, result.trace_state) == (Decision.RECORD_AND_SAMPLE, state)


# --- end_with_attribute


def _full(span: Any) -> None:
    for number in range(124):
        span.set_attribute(f"k{number}", number)


def _bounded(span: Any) -> None:
    span.set_attribute("tags", ["a", "b"])  # a list: the SDK's BoundedAttributes from here on


def _status_ok(span: Any) -> None:
    span.set_status(Status(StatusCode.OK))


WRITES: dict[str, tuple[Callable[[Any], None], Any, Any]] = {
    "new-key": (lambda span: None, STATUS, 200),
    "re-set-key": (lambda span: None, "url.full", "http://moved/"),
    "list-value": (lambda span: None, STATUS, [200, 201]),
    "empty-key": (lambda span: None, "", 200),
    "non-str-key": (lambda span: None, 7, 200),
    "count-limit": (_full, STATUS, 200),
    "bounded": (_bounded, STATUS, 200),
    "after-status": (_status_ok, STATUS, 200),
}


@pytest.mark.parametrize("case", list(WRITES))
def test_end_with_attribute_equals_set_attribute_then_end(case: str) -> None:
    before, key, value = WRITES[case]

    def scenario(provider: TracerProvider, light: bool) -> None:
        span: Any = client_call(provider, True, _local_sampled(Context()), CLIENT_ATTRIBUTES, None)
        before(span)
        if light:
            span.end_with_attribute(key, value)
        else:
            span.set_attribute(key, value)
            span.end()

    plain, light = both_ways(make_provider, scenario)
    assert light == plain


def test_end_with_attribute_on_an_ended_span_changes_nothing_and_warns_as_end_does(
        caplog: pytest.LogCaptureFixture) -> None:
    provider, exporter = make_provider()
    span: Any = client_call(provider, True, _local_sampled(Context()), CLIENT_ATTRIBUTES, None)
    span.end()
    before = fields(span)
    with caplog.at_level(logging.WARNING, logger="opentelemetry.sdk.trace"):
        span.end_with_attribute(STATUS, 200)
    assert fields(span) == before
    assert len(exporter.get_finished_spans()) == 1
    assert [record.getMessage() for record in caplog.records] == ["Calling end() on an ended span."]


# --- the batch queue


class Recorder(SpanProcessor):
    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def _batch_provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter, BatchSpanProcessor]:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    processor = BatchSpanProcessor(exporter, **{"schedule_delay_millis": 3_600_000, **kwargs})
    provider.add_span_processor(processor)
    return provider, exporter, processor


def _queue(processor: BatchSpanProcessor) -> Any:
    inner: Any = processor._batch_processor
    return inner._queue


def test_a_sampled_span_goes_into_the_batch_queue_and_a_full_batch_wakes_the_export() -> None:
    provider, exporter, _ = _batch_provider(max_export_batch_size=3)
    context = _local_sampled(Context())
    made = [client_call(provider, True, context, CLIENT_ATTRIBUTES) for _ in range(3)]
    assert all(type(span) is LightSpan for span in made)
    for _ in range(500):  # the third span made a whole batch: the export thread runs without a flush
        if len(exporter.get_finished_spans()) == 3:
            break
        threading.Event().wait(0.01)
    assert [span.get_span_context() for span in exporter.get_finished_spans()] == [
        span.get_span_context() for span in made]
    provider.shutdown()


def test_a_full_queue_drops_and_warns_as_the_sdk_does(caplog: pytest.LogCaptureFixture) -> None:
    provider, _, processor = _batch_provider(max_queue_size=2, max_export_batch_size=2)
    context = _local_sampled(Context())
    made = [client_call(provider, True, context, CLIENT_ATTRIBUTES)]  # queued by the light path's own append
    inner: Any = processor._batch_processor
    inner._worker_awaken = _NeverSet()  # keeps the queue still once it holds a whole batch
    with caplog.at_level(logging.WARNING):
        made += [client_call(provider, True, context, CLIENT_ATTRIBUTES) for _ in range(2)]
    assert list(_queue(processor)) == [made[2], made[1]]  # the oldest pushed out, as the SDK's deque does
    assert [record.getMessage()[:11] for record in caplog.records] == ["Queue full,"]  # the SDK's one warning


class _NeverSet(threading.Event):
    def set(self) -> None:
        pass


def test_after_shutdown_a_span_is_not_queued() -> None:
    provider, exporter, processor = _batch_provider()
    context = _local_sampled(Context())
    client_call(provider, True, context, CLIENT_ATTRIBUTES)  # the plan is made while the processor is running
    processor.force_flush()
    processor.shutdown()  # type: ignore[no-untyped-call]
    client_call(provider, True, context, CLIENT_ATTRIBUTES)
    assert len(_queue(processor)) == 0
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.parametrize("setup", ["second-processor", "patched-on-end", "patched-emit"])
def test_other_processor_setups_keep_every_end_call(setup: str) -> None:
    provider, exporter, processor = _batch_provider()
    patched: Any = processor
    seen: list[Any] = []
    if setup == "second-processor":
        recorder = Recorder()
        provider.add_span_processor(recorder)
        seen = recorder.ended
    elif setup == "patched-on-end":
        patched.on_end = seen.append
    else:
        patched._batch_processor.emit = seen.append
    span = client_call(provider, True, _local_sampled(Context()), CLIENT_ATTRIBUTES)
    assert type(span) is LightSpan
    assert seen == [span]
    processor.force_flush()
    assert len(exporter.get_finished_spans()) == (0 if setup != "second-processor" else 1)
    provider.shutdown()


def test_a_processor_added_while_the_call_runs_gets_its_end() -> None:
    provider, exporter, processor = _batch_provider()
    span = client_call(provider, True, _local_sampled(Context()), CLIENT_ATTRIBUTES, None)
    late = Recorder()
    provider.add_span_processor(late)
    span.end_with_attribute(STATUS, 200)  # type: ignore[attr-defined]
    assert late.ended == [span]  # type: ignore[comparison-overlap]
    processor.force_flush()
    assert len(exporter.get_finished_spans()) == 1
    provider.shutdown()


@pytest.fixture(autouse=True)
def _fresh_plans() -> Iterator[None]:
    lightspan._plans.clear()
    lightspan._refusals.clear()
    yield
    lightspan._plans.clear()
    lightspan._refusals.clear()


# Link is imported for the Sampler signature's annotations only.
_ = Link

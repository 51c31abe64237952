"""`MeshPropagator.child_headers(context, span)` says exactly what `headers_for` says with the span current.

A client integration asks it for each CLIENT span it has just started under the current context; siblings
started under the very same context take a remembered template. Generated parent contexts (plain, debug,
deferred, baggage, request ids, remote parents, trace states), samplers that record, drop, follow the parent
or give each span a trace state of its own, and both span builders (the SDK's and meshtrace's light span) are
run through one propagator in a generated order (now and then a span is asked about with a context other than
the one it was started under, often of the same trace), so the template is hit, missed and replaced, and
every answer is compared with a fresh propagator's.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.context import Context, set_value
from opentelemetry.sdk.trace import TracerProvider, _Span
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

from meshtrace.propagation import MeshPropagator, set_debug, set_request_id, set_sampling_deferred
from meshtrace.propagation._common import _REMOTE_PARENT
from meshtrace.spans import start_span

_OWN_STATES = (TraceState([("vendor", "n0")]), TraceState([("vendor", "n1")]))


class _NewStateEachSpan(Sampler):
    """Records every span, sampled or only recorded in turn, with a trace state not its parent's (the SDK's
    samplers pass the parent's on): one of two in turn, or always the same one."""

    def __init__(self, states: tuple[TraceState, ...] = _OWN_STATES) -> None:
        self._count = 0
        self._states = states

    def should_sample(  # noqa: PLR0917 - the SDK's signature
            self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
                      attributes: Attributes = None, links: Sequence[Link] | None = None,
                      trace_state: TraceState | None = None) -> SamplingResult:
        self._count += 1
        decision = Decision.RECORD_AND_SAMPLE if self._count % 3 else Decision.RECORD_ONLY
        return SamplingResult(decision, None, self._states[self._count % len(self._states)])

    def get_description(self) -> str:
        return "new trace state each span"


_SAMPLERS: dict[str, Sampler] = {
    "on": ALWAYS_ON,
    "off": ALWAYS_OFF,
    "parent-or-half": ParentBased(TraceIdRatioBased(0.5)),
    "new-state": _NewStateEachSpan(),
    "own-state": _NewStateEachSpan(_OWN_STATES[:1]),
}
_PROVIDERS = {name: TracerProvider(sampler=sampler) for name, sampler in _SAMPLERS.items()}
_SUPPRESS_HTTP = "suppress_http_instrumentation"  # what the client integrations add to the inner context
_STATE = TraceState([("vendor", "x1")])
# Parents often share a trace (several spans of one request), so a child must not take a sibling's parent.
_TRACE_IDS = st.sampled_from([0x4BF92F3577B34DA6A3CE929D0E0E4736]) | st.integers(1, (1 << 128) - 1) | st.integers(
    1, (1 << 64) - 1)


class _FixedIds(IdGenerator):
    """Drawn ids for a parent span (hypothesis wants no randomness inside a strategy)."""

    def __init__(self, trace_id: int, span_id: int) -> None:
        self._trace_id, self._span_id = trace_id, span_id

    def generate_trace_id(self) -> int:
        return self._trace_id

    def generate_span_id(self) -> int:
        return self._span_id


@st.composite
def _parents(draw: st.DrawFn) -> Context:
    context = Context()
    kind = draw(st.sampled_from(["none", "remote", "local-sdk"]))
    if kind == "remote":
        trace_id = draw(_TRACE_IDS)
        span_id = draw(st.integers(1, (1 << 64) - 1))
        flags = TraceFlags(draw(st.sampled_from([0, 1, 2, 3])))
        span_context = SpanContext(trace_id, span_id, True, flags, _STATE if draw(st.booleans()) else None)
        context = trace.set_span_in_context(NonRecordingSpan(span_context), context)
        if draw(st.booleans()):
            context = set_value(_REMOTE_PARENT, (span_id, draw(st.integers(1, (1 << 64) - 1))), context)
    elif kind == "local-sdk":
        ids = _FixedIds(draw(_TRACE_IDS), draw(st.integers(1, (1 << 64) - 1)))
        provider = TracerProvider(sampler=_SAMPLERS[draw(st.sampled_from(sorted(_SAMPLERS)))], id_generator=ids)
        context = trace.set_span_in_context(provider.get_tracer("parent").start_span("parent"), context)
    if draw(st.booleans()):
        context = set_debug(True, context)
    if draw(st.booleans()):
        context = set_sampling_deferred(True, context)
    if draw(st.booleans()):
        context = otel_baggage.set_baggage("user", draw(st.sampled_from(["a", ""])), context)
    if draw(st.booleans()):
        context = set_request_id(draw(st.sampled_from(["5f9c2a8e-0d1b", "", "bad\nid"])), context)
    return context


# (context asked with, context the span was started under: usually the same, sampler, span builder, whether the
# caller passes the context with the span current, as the client integrations do)
_CALLS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2) | st.none(), st.sampled_from(sorted(_SAMPLERS)),
                            st.sampled_from(["sdk", "light"]), st.booleans()), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(_parents(), min_size=1, max_size=3), _CALLS,
       st.sampled_from([None, ("tracecontext",), ("b3", "jaeger"), ("ottrace", "b3multi", "baggage")]))
def test_child_headers_equal_headers_for_with_the_span_current(
    parents: list[Context], calls: list[tuple[int, int | None, str, str, bool]], formats: tuple[str, ...] | None
) -> None:
    propagator = MeshPropagator(formats)
    for which, started_under, sampler, builder, pass_inner in calls:
        context = parents[which % len(parents)]
        under = context if started_under is None else parents[started_under % len(parents)]
        tracer = _PROVIDERS[sampler].get_tracer("client")
        if builder == "sdk":
            span = tracer.start_span("GET", under, SpanKind.CLIENT)
        else:
            span = start_span(tracer, "GET", under, SpanKind.CLIENT, {"http.request.method": "GET"})
        expected = MeshPropagator(formats).headers_for(trace.set_span_in_context(span, context))
        inner = set_value(_SUPPRESS_HTTP, True, trace.set_span_in_context(span, context)) if pass_inner else None
        assert propagator.child_headers(context, span, inner) == expected
        span.end()


def test_siblings_differ_in_their_span_id_only() -> None:
    tracer = _PROVIDERS["on"].get_tracer("client")
    with tracer.start_as_current_span("server") as server:
        context = set_request_id("rid-7", trace.set_span_in_context(server, Context()))
        propagator = MeshPropagator()
        first, second, third = (tracer.start_span("GET", context) for _ in range(3))
        one = dict(propagator.child_headers(context, first))
        two = dict(propagator.child_headers(context, second))
        assert propagator._plain._child[0] is context  # the third sibling takes the template
        three = dict(propagator.child_headers(context, third))
    assert one["x-b3-spanid"] == f"{first.get_span_context().span_id:016x}"
    assert two["x-b3-spanid"] == f"{second.get_span_context().span_id:016x}"
    assert two["x-b3-parentspanid"] == one["x-b3-parentspanid"] == f"{server.get_span_context().span_id:016x}"
    assert {k: v for k, v in one.items() if first.get_span_context().span_id.to_bytes(8, "big").hex() not in v} == {
        k: v for k, v in two.items() if second.get_span_context().span_id.to_bytes(8, "big").hex() not in v}
    assert two["x-request-id"] == three["x-request-id"] == "rid-7"
    assert three["x-b3-spanid"] == f"{third.get_span_context().span_id:016x}"
    assert three["x-b3-parentspanid"] == one["x-b3-parentspanid"]


def test_a_span_of_another_parent_in_the_same_trace_gets_its_own_parent_id() -> None:
    tracer = _PROVIDERS["on"].get_tracer("client")
    with tracer.start_as_current_span("server") as server:
        first_parent = trace.set_span_in_context(tracer.start_span("handler-a"), Context())
        second_parent = trace.set_span_in_context(tracer.start_span("handler-b"), Context())
    propagator = MeshPropagator(["b3multi"])
    for _ in range(2):  # the second child under first_parent makes its siblings take the template
        propagator.child_headers(first_parent, tracer.start_span("GET", first_parent))
    # Asked with the first parent's context, but started under the second: its own parent id is sent.
    span = tracer.start_span("GET", second_parent)
    sent = dict(propagator.child_headers(first_parent, span))
    assert sent["x-b3-traceid"] == f"{server.get_span_context().trace_id:032x}"
    assert sent["x-b3-parentspanid"] == f"{trace.get_current_span(second_parent).get_span_context().span_id:016x}"


class _Relabelled(_Span):
    """A span type with its own accessor: what it says, not its field, is the span context sent."""

    def get_span_context(self) -> SpanContext:
        own = super().get_span_context()
        return SpanContext(own.trace_id, own.span_id ^ 0xFF, False, own.trace_flags, own.trace_state)


def test_a_span_type_with_its_own_accessor_is_asked_through_it() -> None:
    parent = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1))
    context = trace.set_span_in_context(NonRecordingSpan(parent), Context())
    propagator = MeshPropagator(["b3multi"])
    for span_id in (0x1111, 0x2222, 0x3333):
        span = _Relabelled("GET", SpanContext(parent.trace_id, span_id, False, TraceFlags(1)), parent=parent)
        assert dict(propagator.child_headers(context, span))["x-b3-spanid"] == f"{span_id ^ 0xFF:016x}"


@pytest.mark.parametrize("sampler", ["own-state", "new-state"])
def test_siblings_send_their_own_flags_and_trace_state(sampler: str) -> None:
    # The sampler decides per span: recorded-only siblings (flags 00) and sampled ones (01), with one trace state
    # or another, share the template only where they agree.
    tracer = _PROVIDERS[sampler].get_tracer("client")
    parent = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1))
    context = trace.set_span_in_context(NonRecordingSpan(parent), Context())
    propagator = MeshPropagator(["tracecontext"])
    for _ in range(8):
        span = tracer.start_span("GET", context)
        expected = MeshPropagator(["tracecontext"]).headers_for(trace.set_span_in_context(span, context))
        assert propagator.child_headers(context, span) == expected

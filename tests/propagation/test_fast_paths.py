"""The fast paths of MeshPropagator give exactly what the general paths give.

`extract` from a plain mapping skips the parsers of absent formats and the baggage-prefix scan; `inject`
formats every header from ids rendered once. Both are compared, on generated input, with the general code
they short-cut: extraction through a getter Headers cannot read whole (so every name is asked for), and
injection through each format's own renderer.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.context import Context, set_value
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from meshtrace.propagation import (
    CaseInsensitiveGetter,
    MeshPropagator,
    set_debug,
    set_request_id,
    set_sampling_deferred,
    set_sampling_hint,
)
from meshtrace.propagation._common import _REMOTE_PARENT, Outgoing


class _AskEachName(Getter[Any]):
    """Same answers as CaseInsensitiveGetter, but Headers cannot tell, so it takes the general path."""

    _inner = CaseInsensitiveGetter()

    def get(self, carrier: Any, key: str) -> list[str] | None:
        return self._inner.get(carrier, key)

    def keys(self, carrier: Any) -> list[str]:
        return self._inner.keys(carrier)


def _hex(bits: int) -> st.SearchStrategy[str]:
    return st.integers(0, (1 << bits) - 1).map(lambda n: f"{n:0{bits // 4}x}")


_NAMES = [
    "traceparent", "tracestate", "baggage", "b3", "X-B3-TraceId", "x-b3-spanid", "X-B3-ParentSpanId",
    "x-b3-sampled", "X-B3-Flags", "uber-trace-id", "ot-tracer-traceid", "OT-Tracer-SpanId", "ot-tracer-sampled",
    "x-request-id", "uberctx-user", "ot-baggage-tenant", "Uberctx-Tenant", "host", "user-agent",
]
_VALUES = st.one_of(
    st.sampled_from(["0", "1", "d", "true", "False", "", " 1 ", "k=v", "k=v;p=1,j=%41", "x=1,y"]),
    _hex(64), _hex(128),
    st.builds(lambda t, s, f: f"00-{t}-{s}-{f}", _hex(128), _hex(64), st.sampled_from(["00", "01", "03", "zz"])),
    st.builds(lambda t, s, r: f"{t}-{s}{r}", _hex(128), _hex(64),
              st.sampled_from(["", "-1", "-0", "-d", "-1-00f067aa0ba902b7"])),
    st.builds(lambda t, s, p, f: f"{t}:{s}:{p}:{f}", _hex(64), _hex(64), _hex(64),
              st.sampled_from(["0", "1", "3", "02"])),
    st.text(max_size=40),
)
_CARRIERS = st.dictionaries(st.sampled_from(_NAMES), _VALUES, max_size=8)
# Lowercase names, as the WSGI integration hands them over: the carriers the plain-dict path takes itself.
_LOWER_NAMES = [
    "traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
    "x-b3-flags", "uber-trace-id", "ot-tracer-traceid", "ot-tracer-spanid", "ot-tracer-sampled", "x-request-id",
    "host",
]
_EDGE_VALUES = st.one_of(
    _VALUES,
    _VALUES.map(str.upper),  # uppercase hex: valid for Jaeger only
    _VALUES.map(lambda value: f" {value}\t"),  # optional whitespace around a value
    st.sampled_from(["0", "00000000000000000000000000000000", "0000000000000000", "1234", "abc", "TRUE"]),
    st.builds(lambda t, s, f: f"{t}:{s}:0:{f}", _hex(32), _hex(16), st.sampled_from(["1", "2", "3", "ff", "x"])),
    st.builds(lambda t, s: f"{t}-{s}-d", _hex(64), _hex(64)),
    st.sampled_from(["vendor=x1", "a=1,b=2", "A=1", "a=1,a=2", "", " , a=1"]),
    st.lists(st.sampled_from(["1", "00f067aa0ba902b7"]), min_size=1, max_size=2),  # several values
)
_ID = st.one_of(_hex(128), _hex(64), _hex(64).map(str.upper), _hex(16), st.just("0" * 16))
_REQUEST = {"x-request-id": st.sampled_from(["5f9c2a8e-0d1b", "", " id\t", "bad\u00e9"])}
# Well-formed header sets of one format, with the odd bad part, so that most examples do carry a span.
_ONE_FORMAT = st.one_of(
    st.fixed_dictionaries(
        {"traceparent": st.builds(lambda t, s, f: f"00-{t}-{s}-{f}", _hex(128), _hex(64),
                                  st.sampled_from(["00", "01", "02", "03", "ff", "0x"]))},
        optional={"tracestate": st.sampled_from(["vendor=x1", "a=1,b=2", "a=1,a=2", "A=1", ""]), **_REQUEST},
    ),
    st.fixed_dictionaries(
        {"x-b3-traceid": _ID, "x-b3-spanid": _ID},
        optional={"x-b3-parentspanid": _ID, "x-b3-sampled": st.sampled_from(["1", "0", "true", "False", "2"]),
                  "x-b3-flags": st.sampled_from(["1", "0"]), **_REQUEST},
    ),
    st.fixed_dictionaries(
        {"b3": st.builds(lambda t, s, r: f"{t}-{s}{r}", _ID, _ID,
                         st.sampled_from(["", "-1", "-0", "-d", "-1-00f067aa0ba902b7", "-0-" + "0" * 16]))},
        optional=_REQUEST,
    ),
    st.fixed_dictionaries(
        {"uber-trace-id": st.builds(lambda t, s, p, f: f"{t}:{s}:{p}:{f}", _ID, _ID, _ID | st.just("0"),
                                    st.sampled_from(["0", "1", "2", "3", "07"]))},
        optional=_REQUEST,
    ),
    st.fixed_dictionaries(
        {"ot-tracer-traceid": _ID, "ot-tracer-spanid": _ID},
        optional={"ot-tracer-sampled": st.sampled_from(["true", "1", "False", "0", "yes"]), **_REQUEST},
    ),
)
_FAST_CARRIERS = st.one_of(
    _ONE_FORMAT,
    st.dictionaries(st.sampled_from(_LOWER_NAMES), _EDGE_VALUES, max_size=6),
    # One format's names only (plus the request id), which the plain path answers without the general one.
    st.sampled_from([
        ["traceparent", "tracestate"], ["b3"], ["x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
                                                "x-b3-flags"],
        ["uber-trace-id"], ["ot-tracer-traceid", "ot-tracer-spanid", "ot-tracer-sampled"],
    ]).flatmap(lambda names: st.dictionaries(st.sampled_from([*names, "x-request-id"]), _EDGE_VALUES, max_size=6)),
)


def _normalised(context: Context) -> dict[str, Any]:
    """A context as comparable data: spans by their span context, everything else by value."""
    return {key: value.get_span_context() if isinstance(value, trace.Span) else value for key, value in context.items()}


@settings(max_examples=600, deadline=None)
@given(_CARRIERS)
def test_fast_extract_matches_the_general_path(carrier: dict[str, str]) -> None:
    propagator = MeshPropagator()
    fast = propagator.extract(carrier)
    general = propagator.extract(carrier, getter=_AskEachName())
    assert _normalised(fast) == _normalised(general)


@settings(max_examples=1500, deadline=None)
@given(_FAST_CARRIERS)
def test_plain_dict_extract_matches_the_general_path(carrier: dict[str, Any]) -> None:
    propagator = MeshPropagator()
    fast = propagator.extract(carrier)
    general = propagator.extract(carrier, getter=_AskEachName())
    assert _normalised(fast) == _normalised(general)
    assert _normalised(propagator.extract(carrier, getter=CaseInsensitiveGetter())) == _normalised(general)


_IDS = st.tuples(st.integers(1, (1 << 128) - 1) | st.integers(1, (1 << 64) - 1), st.integers(1, (1 << 64) - 1))


@st.composite
def _contexts(draw: st.DrawFn) -> Context:
    context = Context()
    if draw(st.booleans()):
        trace_id, span_id = draw(_IDS)
        flags = draw(st.sampled_from([0, 1, 2, 3]))
        state = TraceState([("vendor", "x1")]) if draw(st.booleans()) else None
        span_context = SpanContext(trace_id, span_id, draw(st.booleans()), TraceFlags(flags), state)
        context = trace.set_span_in_context(NonRecordingSpan(span_context), context)
        if draw(st.booleans()):
            # A remembered remote parent (B3 ParentSpanId / Jaeger parent), as extraction leaves it.
            parent = draw(st.integers(1, (1 << 64) - 1))
            context = set_value(_REMOTE_PARENT, (span_id, parent), context)
    if draw(st.booleans()):
        context = set_debug(True, context)
    if draw(st.booleans()):
        context = set_sampling_deferred(True, context)
    hint = draw(st.sampled_from([None, True, False]))
    if hint is not None:
        context = set_sampling_hint(hint, context)
    entries = draw(st.dictionaries(st.sampled_from(["user", "Tenant", "bad key"]), st.text(max_size=8), max_size=2))
    for key, value in entries.items():
        context = otel_baggage.set_baggage(key, value, context)
    if draw(st.booleans()):
        context = set_request_id(draw(st.sampled_from(["5f9c2a8e-0d1b", "", "bad\nid"])), context)
    return context


@settings(max_examples=600, deadline=None)
@given(_contexts(), st.sampled_from([None, ("tracecontext",), ("b3", "jaeger"), ("ottrace", "b3multi", "baggage")]))
def test_fast_inject_matches_each_format_renderer(context: Context, formats: tuple[str, ...] | None) -> None:
    propagator = MeshPropagator(formats)
    fast: dict[str, str] = {}
    propagator.inject(fast, context)
    general: dict[str, str] = {}
    out = Outgoing.of(context)
    for render in propagator._renderers:  # the general path, format by format
        general.update(render(out))
    assert list(fast.items()) == list(general.items())


@settings(max_examples=300, deadline=None)
@given(_contexts(), _contexts())
def test_repeated_inject_says_the_same_as_a_fresh_propagator(first: Context, second: Context) -> None:
    # One propagator remembers the last plain render; whatever came before, it must answer like a new one.
    propagator = MeshPropagator()
    for context in (first, second, first):
        remembered: dict[str, str] = {}
        propagator.inject(remembered, context)
        fresh: dict[str, str] = {}
        MeshPropagator().inject(fresh, context)
        assert remembered == fresh
        assert propagator.headers_for(context) == tuple(fresh.items())


def test_same_span_with_another_request_id_is_rendered_again() -> None:
    span_context = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1))
    context = trace.set_span_in_context(NonRecordingSpan(span_context), Context())
    propagator = MeshPropagator(["b3"])
    assert dict(propagator.headers_for(set_request_id("first", context)))["x-request-id"] == "first"
    assert dict(propagator.headers_for(set_request_id("second", context)))["x-request-id"] == "second"
    assert "x-request-id" not in dict(propagator.headers_for(context))


@settings(max_examples=300, deadline=None)
@given(_contexts(), st.lists(st.integers(1, (1 << 64) - 1), min_size=1, max_size=4))
def test_sibling_spans_get_their_own_span_id(parent: Context, span_ids: list[int]) -> None:
    # Outbound calls made while serving one request share the trace and the parent; only the span id differs.
    propagator = MeshPropagator()
    base = trace.get_current_span(parent).get_span_context()
    trace_id = base.trace_id if base.is_valid else 0x4BF92F3577B34DA6A3CE929D0E0E4736
    for span_id in span_ids:
        child = SpanContext(trace_id, span_id, False, base.trace_flags, base.trace_state)
        context = trace.set_span_in_context(NonRecordingSpan(child), parent)
        remembered: dict[str, str] = {}
        propagator.inject(remembered, context)
        fresh: dict[str, str] = {}
        MeshPropagator().inject(fresh, context)
        assert remembered == fresh

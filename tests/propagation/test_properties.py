"""Property tests: any header map extracts without raising to a valid context or none, and every format
round-trips trace id, span id, sampled, debug, baggage and x-request-id."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags

from meshtrace.propagation import (
    FORMATS,
    B3MultiPropagator,
    B3SinglePropagator,
    BaggagePropagator,
    JaegerPropagator,
    MeshPropagator,
    OTTracePropagator,
    RequestIdPropagator,
    TraceContextPropagator,
    get_request_id,
    is_debug,
    set_debug,
    set_request_id,
)

HEADER_NAMES = [
    "traceparent", "tracestate", "baggage", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
    "x-b3-sampled", "x-b3-flags", "uber-trace-id", "uberctx-k", "uberctx-", "ot-tracer-traceid",
    "ot-tracer-spanid", "ot-tracer-sampled", "ot-baggage-k", "ot-baggage-", "x-request-id",
]
ALL_PROPAGATORS: list[TextMapPropagator] = [
    MeshPropagator(), *(cls() for cls in FORMATS.values()), RequestIdPropagator(),
]

hex_text = st.text("0123456789abcdefABCDEF", max_size=34)
# Values close to valid ones (where bugs hide) mixed with arbitrary text.
fragments = st.sampled_from(["-", ":", "%3A", ",", ";", "=", "0", "1", "d", "00", "ff", "true", " ", "\t", "-1"])
near_valid = st.lists(st.one_of(hex_text, fragments), max_size=8).map("".join)
values = st.one_of(near_valid, st.text(max_size=40), st.sampled_from(["", "0", "1", "d", "true", "false"]))


SEEDS = st.integers(0, 2**32 - 1)


def random_case(draw: st.DrawFn, name: str) -> str:
    seed = draw(SEEDS)
    return "".join(c.upper() if (seed >> (i % 32)) & 1 else c for i, c in enumerate(name))


@st.composite
def header_maps(draw: st.DrawFn) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=12)):
        value: Any = draw(st.one_of(values, st.lists(values, max_size=3)))
        headers[random_case(draw, name)] = value
    for name in draw(st.lists(st.text(max_size=12), max_size=3)):
        headers[name] = draw(values)
    return headers


def span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


@settings(max_examples=400, deadline=None)
@given(header_maps())
def test_extract_never_raises_and_never_yields_an_invalid_context(headers: dict[str, Any]) -> None:
    for propagator in ALL_PROPAGATORS:
        context = propagator.extract(headers)
        span = trace.get_current_span(context)
        if span is not INVALID_SPAN:
            assert span.get_span_context().is_valid
            assert span.get_span_context().is_remote


@settings(max_examples=300, deadline=None)
@given(header_maps())
def test_reinjecting_an_extracted_context_is_stable(headers: dict[str, Any]) -> None:
    mesh = MeshPropagator()
    first = mesh.extract(headers)
    carrier: dict[str, str] = {}
    mesh.inject(carrier, first)
    assert all(isinstance(v, str) and v and "\n" not in v and "\r" not in v for v in carrier.values())
    again = mesh.extract(carrier)
    assert span_context(again) == span_context(first)
    assert is_debug(again) is is_debug(first)
    assert dict(baggage.get_all(again)) == dict(baggage.get_all(first))
    assert get_request_id(again) == get_request_id(first)


token_keys = st.text(string.ascii_lowercase + string.digits + "_-.", min_size=1, max_size=12)
any_values = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
plain_values = st.text(string.ascii_letters + string.digits + string.punctuation + " ", min_size=1, max_size=20).filter(
    lambda v: v.strip(" \t") == v
)
request_ids = st.text(string.ascii_letters + string.digits + string.punctuation + " ", min_size=1, max_size=64).filter(
    lambda v: v.strip(" \t") == v
)


@st.composite
def contexts(draw: st.DrawFn, baggage_values: st.SearchStrategy[str]) -> tuple[Context, SpanContext, bool]:
    sc = SpanContext(
        draw(st.integers(1, (1 << 128) - 1)),
        draw(st.integers(1, (1 << 64) - 1)),
        False,  # a local span: its sampling decision is made
        TraceFlags(0x01 if draw(st.booleans()) else 0x00),
    )
    context = trace.set_span_in_context(NonRecordingSpan(sc))
    debug = draw(st.booleans())
    if debug:
        context = set_debug(True, context)
    for key, value in draw(st.dictionaries(token_keys, baggage_values, max_size=5)).items():
        context = baggage.set_baggage(key, value, context)
    request_id = draw(st.one_of(st.none(), request_ids))
    if request_id is not None:
        context = set_request_id(request_id, context)
    return context, sc, debug


def scramble_case(seed: int, carrier: dict[str, str]) -> dict[str, str]:
    """The carrier with each header name in a mix of cases chosen by `seed`."""
    return {
        "".join(c.upper() if (seed >> (i % 32)) & 1 else c for i, c in enumerate(name)): value
        for name, value in carrier.items()
    }


def check_round_trip(
    data: st.DataObject,
    injectors: list[TextMapPropagator],
    extractor: TextMapPropagator,
    baggage_values: st.SearchStrategy[str],
    carries_debug: bool,
) -> None:
    context, sc, debug = data.draw(contexts(baggage_values))
    carrier: dict[str, str] = {}
    for injector in injectors:
        injector.inject(carrier, context)
    back = extractor.extract(scramble_case(data.draw(SEEDS), carrier))
    got = span_context(back)
    assert (got.trace_id, got.span_id) == (sc.trace_id, sc.span_id)
    assert got.trace_flags.sampled is (sc.trace_flags.sampled or debug)
    assert is_debug(back) is (debug and carries_debug)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_round_trip_tracecontext(data: st.DataObject) -> None:
    check_round_trip(data, [TraceContextPropagator()], TraceContextPropagator(), any_values, carries_debug=False)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_round_trip_b3multi(data: st.DataObject) -> None:
    check_round_trip(data, [B3MultiPropagator()], B3MultiPropagator(), any_values, carries_debug=True)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_round_trip_b3single(data: st.DataObject) -> None:
    check_round_trip(data, [B3SinglePropagator()], B3SinglePropagator(), any_values, carries_debug=True)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_round_trip_jaeger(data: st.DataObject) -> None:
    check_round_trip(data, [JaegerPropagator()], JaegerPropagator(), any_values, carries_debug=True)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_round_trip_ottrace(data: st.DataObject) -> None:
    check_round_trip(data, [OTTracePropagator()], OTTracePropagator(), any_values, carries_debug=False)


@st.composite
def single_format_setups(draw: st.DrawFn) -> tuple[str, st.SearchStrategy[str]]:
    name = draw(st.sampled_from(sorted(FORMATS)))
    return name, plain_values if name == "ottrace" else any_values


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_round_trip_through_mesh_for_each_format_with_baggage_and_request_id(data: st.DataObject) -> None:
    name, baggage_values = data.draw(single_format_setups())
    # Each format alone (plus what carries its baggage) must continue the trace through MeshPropagator.
    formats = [name] if name in ("jaeger", "ottrace") else [name, "baggage"]
    if name == "baggage":
        formats = ["tracecontext", "baggage"]
    sender = MeshPropagator(formats)
    context, sc, debug = data.draw(contexts(baggage_values))
    carrier: dict[str, str] = {}
    sender.inject(carrier, context)
    back = MeshPropagator().extract(scramble_case(data.draw(SEEDS), carrier))
    got = span_context(back)
    assert (got.trace_id, got.span_id) == (sc.trace_id, sc.span_id)
    assert got.trace_flags.sampled is (sc.trace_flags.sampled or debug)
    assert is_debug(back) is (debug and name in ("b3", "b3multi", "jaeger"))
    expected_baggage = {k: str(v) for k, v in baggage.get_all(context).items()}
    if name == "jaeger":
        expected_baggage = {k: v for k, v in expected_baggage.items() if v}  # an empty header is never sent
    assert dict(baggage.get_all(back)) == expected_baggage
    assert get_request_id(back) == get_request_id(context)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_round_trip_all_formats_at_once(data: st.DataObject) -> None:
    context, sc, debug = data.draw(contexts(any_values))
    carrier: dict[str, str] = {}
    MeshPropagator().inject(carrier, context)
    for propagator in [TraceContextPropagator(), B3MultiPropagator(), B3SinglePropagator(), JaegerPropagator(),
                       OTTracePropagator(), MeshPropagator()]:
        got = span_context(propagator.extract(scramble_case(data.draw(SEEDS), carrier)))
        assert (got.trace_id, got.span_id, got.trace_flags.sampled) == (
            sc.trace_id, sc.span_id, sc.trace_flags.sampled or debug)
    back = MeshPropagator().extract(carrier)
    assert dict(baggage.get_all(back)) == {k: str(v) for k, v in baggage.get_all(context).items()}
    assert dict(baggage.get_all(BaggagePropagator().extract(carrier))) == dict(baggage.get_all(back))
    assert get_request_id(back) == get_request_id(context)
    assert is_debug(back) is debug

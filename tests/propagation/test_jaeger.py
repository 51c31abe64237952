"""Jaeger `uber-trace-id` and `uberctx-` baggage: cases after jaeger-client-python and OTel Go test data."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from meshtrace.propagation import JaegerPropagator, is_debug, set_debug

JAEGER = JaegerPropagator()
T128 = "a3ce929d0e0e4736a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


@pytest.mark.parametrize(
    ("value", "trace_id", "span_id", "sampled", "debug"),
    [
        (f"{T128}:{SPAN}:0:1", int(T128, 16), int(SPAN, 16), True, False),
        (f"{T128}:{SPAN}:0:0", int(T128, 16), int(SPAN, 16), False, False),
        (f"{T128}:{SPAN}:0:3", int(T128, 16), int(SPAN, 16), True, True),
        (f"{T128}:{SPAN}:0:2", int(T128, 16), int(SPAN, 16), True, True),  # debug traces are sampled
        (f"{T128}:{SPAN}:0:09", int(T128, 16), int(SPAN, 16), True, False),  # firehose bit ignored
        ("1:2:0:1", 1, 2, True, False),  # variable length, left-padded
        ("a3ce929d0e0e4736:f067aa0ba902b7:0:1", 0xA3CE929D0E0E4736, 0xF067AA0BA902B7, True, False),
        (f"{T128}:{SPAN}:{SPAN}:01", int(T128, 16), int(SPAN, 16), True, False),
        (f"{T128.upper()}:{SPAN}:0:1", int(T128, 16), int(SPAN, 16), True, False),  # hex is a number
        (f"{T128}%3A{SPAN}%3A0%3A1", int(T128, 16), int(SPAN, 16), True, False),  # old Java clients
        (f"{T128}%3a{SPAN}%3a0%3a1", int(T128, 16), int(SPAN, 16), True, False),
    ],
)
def test_valid_uber_trace_id(value: str, trace_id: int, span_id: int, sampled: bool, debug: bool) -> None:
    context = JAEGER.extract({"Uber-Trace-Id": value})
    sc = span_context(context)
    assert (sc.trace_id, sc.span_id, sc.trace_flags.sampled) == (trace_id, span_id, sampled)
    assert is_debug(context) is debug


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"{T128}:{SPAN}:0",
        f"{T128}:{SPAN}:0:1:0",
        f"{T128}:{SPAN}::1",
        f":{SPAN}:0:1",
        f"{T128}::0:1",
        f"{T128}:{SPAN}:0:",
        f"0:{SPAN}:0:1",  # zero ids are invalid
        f"{T128}:0:0:1",
        f"{'0' * 32}:{SPAN}:0:1",
        f"{T128}0:{SPAN}:0:1",  # 33 hex digits
        f"{T128}:{SPAN}0:0:1",
        f"{T128}:{SPAN}:0:100",
        f"{T128}:{SPAN}:0:x1",
        f"{T128}:{SPAN}:0:0x1",
        f"{T128}:{SPAN}:0:-1",
        f"{T128}:{SPAN}:0:+1",
        f"{T128}:{SPAN}:0: 1",
        f"{T128}:{SPAN}:0_0:1",
        f"{T128[:4]}_{T128[4:10]}:{SPAN}:0:1",  # int() would accept underscores; the format does not
        f"g{T128[1:]}:{SPAN}:0:1",
        f"{T128}:{SPAN}:0:1\n",
        f"{T128}%3X{SPAN}%3A0%3A1",
    ],
)
def test_invalid_uber_trace_id_is_ignored(value: str) -> None:
    context = JAEGER.extract({"uber-trace-id": value})
    assert not span_context(context).is_valid
    assert not is_debug(context)


def test_baggage_is_url_decoded_and_keys_lowercased() -> None:
    context = JAEGER.extract({
        "uber-trace-id": f"{T128}:{SPAN}:0:1",
        "UberCtx-Key1": "value%201",
        "uberctx-key2": "a%2Cb%3Dc",
        "uberctx-": "x",
    })
    assert dict(baggage.get_all(context)) == {"key1": "value 1", "key2": "a,b=c"}


def test_baggage_is_extracted_without_a_trace() -> None:
    context = JAEGER.extract({"uberctx-k": "v"})
    assert baggage.get_baggage("k", context) == "v"


def remote(flags: int, parent: int | None = None) -> Context:
    sc = SpanContext(int(T128, 16), int(SPAN, 16), True, TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(sc))


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (remote(0x01), f"{T128}:{SPAN}:0000000000000000:01"),  # sampled is not debug (OTel Python sets 0x02)
        (remote(0x00), f"{T128}:{SPAN}:0000000000000000:00"),
        (set_debug(True, remote(0x01)), f"{T128}:{SPAN}:0000000000000000:03"),
        (set_debug(True, remote(0x00)), f"{T128}:{SPAN}:0000000000000000:03"),
    ],
)
def test_inject_sets_debug_bit_only_for_debug_traces(context: Context, expected: str) -> None:
    carrier: dict[str, str] = {}
    JAEGER.inject(carrier, context)
    assert carrier == {"uber-trace-id": expected}


def test_inject_parent_and_baggage() -> None:
    context = JAEGER.extract({"uber-trace-id": f"1:{SPAN}:abc:1", "uberctx-user": "a b/c"})
    context = baggage.set_baggage("bad key", "dropped", context)
    carrier: dict[str, str] = {}
    JAEGER.inject(carrier, context)
    assert carrier == {
        "uber-trace-id": f"{1:032x}:{SPAN}:{0xABC:016x}:01",
        "uberctx-user": "a%20b%2Fc",
    }


def test_inject_nothing_without_a_span_or_baggage() -> None:
    carrier: dict[str, str] = {}
    JAEGER.inject(carrier, Context())
    assert carrier == {}

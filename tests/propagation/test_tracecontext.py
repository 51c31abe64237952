"""W3C trace-context: the cases of the w3c/trace-context conformance suite, as table tests."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from meshtrace.propagation import TraceContextPropagator

TRACE = "12345678901234567890123456789012"
SPAN = "1234567890123456"
VALID = f"00-{TRACE}-{SPAN}-01"
PROPAGATOR = TraceContextPropagator()
ALL_KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
ALL_VALUE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")


def extracted(headers: dict[str, str | list[str]]) -> SpanContext:
    return trace.get_current_span(PROPAGATOR.extract(headers)).get_span_context()


@pytest.mark.parametrize(
    ("value", "sampled"),
    [
        (VALID, True),
        (f"00-{TRACE}-{SPAN}-00", False),
        (f"00-{TRACE}-{SPAN}-03", True),  # random flag alongside sampled
        (f"cc-{TRACE}-{SPAN}-01", True),  # a future version: read the first four fields
        (f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like", True),
        (f"cc-{TRACE}-{SPAN}-00-", False),
        (f" {VALID}", True),  # optional whitespace around the value
        (f"{VALID} \t", True),
    ],
)
def test_valid_traceparent(value: str, sampled: bool) -> None:
    sc = extracted({"traceparent": value})
    assert sc.is_valid
    assert sc.is_remote
    assert sc.trace_id == int(TRACE, 16)
    assert sc.span_id == int(SPAN, 16)
    assert sc.trace_flags.sampled is sampled


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
        f"00-{TRACE}-{SPAN}-01.",  # version 00 is exactly 55 characters
        f"00-{TRACE}-{SPAN}-01-what-the-future-will-be-like",
        f"cc-{TRACE}-{SPAN}-01.what-the-future-will-be-like",  # future fields must follow a dash
        f".0-{TRACE}-{SPAN}-01",
        f"0.-{TRACE}-{SPAN}-01",
        f"000-{TRACE}-{SPAN}-01",
        f"0-{TRACE}-{SPAN}-01",
        f"0G-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE.upper()[:-1]}A-{SPAN}-01",  # uppercase is invalid
        "00-ABCDEF78901234567890123456789012-1234567890123456-01",
        f"00-{TRACE}-ABCDEF7890123456-01",
        f"00-{TRACE}-{SPAN}-0A",
        f"00-{TRACE[:-1]}.-{SPAN}-01",
        f"00-{TRACE}0-{SPAN}-01",
        f"00-{TRACE[:-1]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}0-01",
        f"00-{TRACE}-{SPAN[:-1]}-01",
        f"00-{TRACE}-{SPAN}-.0",
        f"00-{TRACE}-{SPAN}-0",
        f"00-{TRACE}-{SPAN}-001",
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE}-{SPAN}-01\n",
        f"cc-{TRACE}-{SPAN}-01-" + "x" * 600,  # beyond any sane length
    ],
)
def test_invalid_traceparent_is_ignored(value: str) -> None:
    assert not extracted({"traceparent": value, "tracestate": "foo=1"}).is_valid


def test_duplicated_traceparent_restarts_the_trace() -> None:
    # The conformance suite sends two traceparent lines and expects a new trace.
    assert not extracted({"traceparent": [VALID, f"00-{'a' * 32}-{SPAN}-01"]}).is_valid


@pytest.mark.parametrize("name", ["traceparent", "TraceParent", "TRACEPARENT", "trAcEpArEnT"])
def test_header_name_is_case_insensitive(name: str) -> None:
    assert extracted({name: VALID}).is_valid


@pytest.mark.parametrize("name", ["trace-parent", "trace.parent", "traceparent-"])
def test_other_header_names_are_not_traceparent(name: str) -> None:
    assert not extracted({name: VALID}).is_valid


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["foo=1,bar=2"], [("foo", "1"), ("bar", "2")]),
        (["foo=1,bar=2", "rojo=1,congo=2", "baz=3"],
         [("foo", "1"), ("bar", "2"), ("rojo", "1"), ("congo", "2"), ("baz", "3")]),
        (["foo=1 \t , \t bar=2, \t baz=3"], [("foo", "1"), ("bar", "2"), ("baz", "3")]),
        (["foo=1,,bar=2,"], [("foo", "1"), ("bar", "2")]),  # empty members are allowed
        ([f"{ALL_KEY_CHARS}={ALL_VALUE_CHARS}"], [(ALL_KEY_CHARS, ALL_VALUE_CHARS)]),
        (["abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/=1"],
         [("abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/", "1")]),
        ([",".join(f"k{i}=v" for i in range(32))], [(f"k{i}", "v") for i in range(32)]),
        (["z" * 256 + "=1"], [("z" * 256, "1")]),
        (["t" * 241 + "@" + "s" * 14 + "=1"], [("t" * 241 + "@" + "s" * 14, "1")]),
        (["foo=" + "v" * 256], [("foo", "v" * 256)]),
    ],
)
def test_valid_tracestate_is_kept_in_order(values: list[str], expected: list[tuple[str, str]]) -> None:
    sc = extracted({"traceparent": VALID, "tracestate": values})
    assert sc.is_valid
    assert list(sc.trace_state.items()) == expected


@pytest.mark.parametrize(
    "values",
    [
        ["foo=1,foo=1"],  # duplicate keys
        ["foo=1", "foo=2"],
        ["foo =1"],
        ["FOO=1"],
        ["foo.bar=1"],
        ["foo@=1,bar=2"],
        ["@foo=1,bar=2"],
        ["foo@@bar=1,bar=2"],
        ["foo@bar@baz=1,bar=2"],
        ["foo=bar=baz"],
        ["foo=,bar=3"],  # empty value
        ["foo=1 1\x00"],
        [",".join(f"k{i}=v" for i in range(33))],  # 33 members
        [",".join(f"k{i}=v" for i in range(17)), ",".join(f"j{i}=v" for i in range(16))],
        ["z" * 257 + "=1"],
        ["t" * 242 + "@" + "s" * 14 + "=1"],
        ["t" * 241 + "@" + "s" * 15 + "=1"],
        ["foo=" + "v" * 257],
    ],
)
def test_invalid_tracestate_is_dropped_but_traceparent_kept(values: list[str]) -> None:
    sc = extracted({"traceparent": VALID, "tracestate": values})
    assert sc.is_valid
    assert sc.trace_id == int(TRACE, 16)
    assert len(sc.trace_state) == 0


def test_tracestate_without_valid_traceparent_is_ignored() -> None:
    context = PROPAGATOR.extract({"traceparent": f"ff-{TRACE}-{SPAN}-01", "tracestate": "foo=1"})
    assert context == Context()


def test_inject_writes_version_00_and_tracestate() -> None:
    sc = SpanContext(int(TRACE, 16), int(SPAN, 16), True, TraceFlags(0x01), TraceState([("foo", "1"), ("bar", "2")]))
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(NonRecordingSpan(sc)))
    assert carrier == {"traceparent": VALID, "tracestate": "foo=1,bar=2"}


def test_inject_clears_reserved_flags_and_skips_empty_tracestate() -> None:
    sc = SpanContext(int(TRACE, 16), int(SPAN, 16), True, TraceFlags(0xFC))
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(NonRecordingSpan(sc)))
    assert carrier == {"traceparent": f"00-{TRACE}-{SPAN}-00"}


def test_random_flag_is_passed_on_with_a_forwarded_context() -> None:
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, PROPAGATOR.extract({"traceparent": f"cc-{TRACE}-{SPAN}-fe-future"}))
    assert carrier == {"traceparent": f"00-{TRACE}-{SPAN}-02"}


def test_inject_without_span_writes_nothing() -> None:
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, Context())
    assert carrier == {}
    assert PROPAGATOR.fields == {"traceparent", "tracestate"}

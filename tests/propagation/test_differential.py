"""Differential tests against OpenTelemetry Python's B3, Jaeger and OT propagators on valid input.

They agree on ids and the sampled bit. Where they differ, we are deliberately right (REFERENCE.md §1):
- `b3: 0` alone: OTel ignores the deny; we keep it as a sampling hint.
- B3 debug: OTel turns `X-B3-Flags: 1` into a plain sampled context; we keep debug and re-send the flag.
- B3 without a sampling state: OTel single-header reads it as sampled, multi as not sampled; we defer.
- Jaeger: OTel sets the debug bit 0x02 on every sampled span; we set it only for debug traces.
- OT: OTel writes only the low 64 bits of a 128-bit trace id (the trace splits); we write all 32 hex.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.jaeger import JaegerPropagator as OTelJaeger
from opentelemetry.propagators.ot_trace import OTTracePropagator as OTelOT
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from meshtrace.propagation import (
    B3MultiPropagator,
    B3SinglePropagator,
    JaegerPropagator,
    OTTracePropagator,
    get_sampling_hint,
    is_debug,
    set_debug,
)

trace_ids = st.one_of(st.integers(1, (1 << 64) - 1), st.integers(1, (1 << 128) - 1))
span_ids = st.integers(1, (1 << 64) - 1)
PAIRS: list[tuple[TextMapPropagator, TextMapPropagator]] = [
    (B3MultiPropagator(), B3MultiFormat()),
    (B3SinglePropagator(), B3SingleFormat()),
    (JaegerPropagator(), OTelJaeger()),
]


def ids_and_sampled(context: Context) -> tuple[int, int, bool]:
    sc = trace.get_current_span(context).get_span_context()
    return sc.trace_id, sc.span_id, sc.trace_flags.sampled


def local(trace_id: int, span_id: int, sampled: bool) -> Context:
    sc = SpanContext(trace_id, span_id, False, TraceFlags(0x01 if sampled else 0x00))
    return trace.set_span_in_context(NonRecordingSpan(sc))


@settings(max_examples=200, deadline=None)
@given(trace_ids, span_ids, st.booleans(), st.sampled_from(range(len(PAIRS))))
def test_each_reads_what_the_other_writes(trace_id: int, span_id: int, sampled: bool, pair: int) -> None:
    ours, theirs = PAIRS[pair]
    context = local(trace_id, span_id, sampled)
    for writer, reader in ((ours, theirs), (theirs, ours)):
        carrier: dict[str, str] = {}
        writer.inject(carrier, context)
        assert ids_and_sampled(reader.extract(carrier)) == (trace_id, span_id, sampled)


@settings(max_examples=200, deadline=None)
@given(trace_ids, span_ids, st.booleans())
def test_b3_writes_what_otel_writes_for_plain_contexts(trace_id: int, span_id: int, sampled: bool) -> None:
    context = local(trace_id, span_id, sampled)
    for ours, theirs in PAIRS[:2]:
        mine: dict[str, str] = {}
        reference: dict[str, str] = {}
        ours.inject(mine, context)
        theirs.inject(reference, context)
        assert mine == reference


@settings(max_examples=200, deadline=None)
@given(st.integers(1, (1 << 64) - 1), span_ids, st.booleans())
def test_ot_agrees_on_64_bit_ids(trace_id: int, span_id: int, sampled: bool) -> None:
    context = local(trace_id, span_id, sampled)
    for writer, reader in ((OTTracePropagator(), OTelOT()), (OTelOT(), OTTracePropagator())):
        carrier: dict[str, str] = {}
        writer.inject(carrier, context)
        assert ids_and_sampled(reader.extract(carrier)) == (trace_id, span_id, sampled)


@settings(max_examples=100, deadline=None)
@given(st.integers(1 << 64, (1 << 128) - 1), span_ids)
def test_ot_128_bit_ids_survive_ours_but_not_otels(trace_id: int, span_id: int) -> None:
    context = local(trace_id, span_id, True)
    ours: dict[str, str] = {}
    OTTracePropagator().inject(ours, context)
    assert ids_and_sampled(OTelOT().extract(ours))[0] == trace_id  # OTel reads our 32 hex fine
    theirs: dict[str, str] = {}
    OTelOT().inject(theirs, context)
    assert ids_and_sampled(OTTracePropagator().extract(theirs))[0] == trace_id & ((1 << 64) - 1)


def test_b3_bare_deny_differs() -> None:
    assert get_sampling_hint(B3MultiFormat().extract({"b3": "0"})) is None
    assert get_sampling_hint(B3MultiPropagator().extract({"b3": "0"})) is False


def test_b3_debug_differs() -> None:
    headers = {"x-b3-traceid": "a" * 32, "x-b3-spanid": "b" * 16, "x-b3-flags": "1"}
    theirs = B3MultiFormat().extract(headers)
    ours = B3MultiPropagator().extract(headers)
    assert ids_and_sampled(theirs) == ids_and_sampled(ours)
    assert not is_debug(theirs)
    assert is_debug(ours)
    out: dict[str, str] = {}
    B3MultiFormat().inject(out, ours)
    assert out.get("x-b3-sampled") == "1"
    assert "x-b3-flags" not in out  # OTel drops debug on the way out
    out = {}
    B3MultiPropagator().inject(out, ours)
    assert out.get("x-b3-flags") == "1"
    assert "x-b3-sampled" not in out


def test_jaeger_debug_bit_differs() -> None:
    context = local(0xABC, 0xDEF, True)
    theirs: dict[str, str] = {}
    ours: dict[str, str] = {}
    OTelJaeger().inject(theirs, context)
    JaegerPropagator().inject(ours, context)
    assert theirs["uber-trace-id"].endswith(":03")
    assert ours["uber-trace-id"].endswith(":01")
    # Because of that, a trace from OTel Python arrives here marked debug: unavoidable, documented.
    assert is_debug(JaegerPropagator().extract(theirs))
    debug: dict[str, str] = {}
    JaegerPropagator().inject(debug, set_debug(True, context))
    assert debug["uber-trace-id"].endswith(":03")

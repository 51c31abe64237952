"""B3 multi and single: the b3-propagation README cases and the OpenTelemetry Go test-vector categories."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from meshtrace.propagation import (
    B3MultiPropagator,
    B3SinglePropagator,
    get_sampling_hint,
    is_debug,
    is_sampling_deferred,
    set_debug,
    set_sampling_hint,
)

T128 = "80f198ee56343ba864fe8b2a57d3eff7"
T64 = "a3ce929d0e0e4736"
SPAN = "e457b5a2e4d86bd1"
PARENT = "05e3ac9a4f6e3b90"
MULTI = B3MultiPropagator()
SINGLE = B3SinglePropagator()


def span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


@pytest.mark.parametrize(
    ("headers", "trace_id", "sampled", "debug", "deferred"),
    [
        ({"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"}, T128, True, False, False),
        ({"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": "0"}, T128, False, False, False),
        ({"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": "true"}, T128, True, False, False),
        ({"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": "false"}, T128, False, False, False),
        ({"X-B3-TraceId": T128, "X-B3-SpanId": SPAN}, T128, False, False, True),  # absent Sampled = defer
        ({"X-B3-TraceId": T64, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"}, "0" * 16 + T64, True, False, False),
        ({"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Flags": "1"}, T128, True, True, False),
        # Debug implies sampled, whatever X-B3-Sampled says.
        ({"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": "0", "X-B3-Flags": "1"}, T128, True, True, False),
        # Only "1" means debug.
        ({"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1", "X-B3-Flags": "2"}, T128, True, False, False),
        ({"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-ParentSpanId": PARENT, "X-B3-Sampled": "1"},
         T128, True, False, False),
        ({"b3": f"{T128}-{SPAN}-1"}, T128, True, False, False),
        ({"b3": f"{T128}-{SPAN}-0"}, T128, False, False, False),
        ({"b3": f"{T128}-{SPAN}-d"}, T128, True, True, False),
        ({"b3": f"{T128}-{SPAN}"}, T128, False, False, True),
        ({"b3": f"{T128}-{SPAN}-1-{PARENT}"}, T128, True, False, False),
        ({"b3": f"{T64}-{SPAN}-1"}, "0" * 16 + T64, True, False, False),
        ({"B3": f"{T128}-{SPAN}-1"}, T128, True, False, False),
    ],
)
@pytest.mark.parametrize("single", [False, True], ids=["multi", "single"])
def test_valid_b3(headers: dict[str, str], trace_id: str, sampled: bool, debug: bool, deferred: bool,
                  *, single: bool) -> None:
    # Both classes read both forms; they differ only in what they write.
    context = (SINGLE if single else MULTI).extract(headers)
    sc = span_context(context)
    assert sc.is_valid
    assert f"{sc.trace_id:032x}" == trace_id
    assert f"{sc.span_id:016x}" == SPAN
    assert sc.trace_flags.sampled is sampled
    assert is_debug(context) is debug
    assert is_sampling_deferred(context) is deferred


@pytest.mark.parametrize(
    "headers",
    [
        {"X-B3-TraceId": "", "X-B3-SpanId": SPAN},  # empty value is malformed
        {"X-B3-TraceId": T128, "X-B3-SpanId": ""},
        {"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": ""},
        {"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-ParentSpanId": ""},
        {"X-B3-TraceId": T128},  # a trace id alone is no context
        {"X-B3-SpanId": SPAN},
        {"X-B3-ParentSpanId": PARENT},
        {"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": "d"},
        {"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": "yes"},
        {"X-B3-TraceId": "0" * 32, "X-B3-SpanId": SPAN},
        {"X-B3-TraceId": "0" * 16, "X-B3-SpanId": SPAN},
        {"X-B3-TraceId": T128, "X-B3-SpanId": "0" * 16},
        {"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-ParentSpanId": "0" * 16},
        {"X-B3-TraceId": T128.upper(), "X-B3-SpanId": SPAN},
        {"X-B3-TraceId": T128[:-1], "X-B3-SpanId": SPAN},  # 31 hex
        {"X-B3-TraceId": T64 + "0", "X-B3-SpanId": SPAN},  # 17 hex
        {"X-B3-TraceId": T128 + "0", "X-B3-SpanId": SPAN},
        {"X-B3-TraceId": T128, "X-B3-SpanId": SPAN[:-1]},
        {"X-B3-TraceId": T128, "X-B3-SpanId": SPAN + "0"},
        {"X-B3-TraceId": T128, "X-B3-SpanId": "g" * 16},
        {"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-ParentSpanId": "xyz"},
        {"b3": ""},
        {"b3": T128},  # a trace id alone is invalid
        {"b3": f"{T128}-"},
        {"b3": f"{T128}-{SPAN}-"},
        {"b3": f"{T128}-{SPAN}-x"},
        {"b3": f"{T128}-{SPAN}-true"},
        {"b3": f"{T128}-{SPAN}-1-"},
        {"b3": f"{T128}-{SPAN}-1-{PARENT}-"},
        {"b3": f"{T128}-{SPAN}-1-{'0' * 16}"},
        {"b3": f"{T128}-{SPAN}-1-{PARENT[:-1]}"},
        {"b3": f"{T128}-{SPAN}-{PARENT}"},  # the parent needs a sampling state before it
        {"b3": f"{'0' * 32}-{SPAN}-1"},
        {"b3": f"{T128}-{'0' * 16}-1"},
        {"b3": f"{T128.upper()}-{SPAN}-1"},
        {"b3": f"{T128[:-2]}-{SPAN}-1"},
        {"b3": f"{T128}-{SPAN[:-1]}-1"},
        {"b3": "00"},
        {"b3": "-"},
    ],
)
@pytest.mark.parametrize("propagator", [MULTI, SINGLE], ids=["multi", "single"])
def test_invalid_b3_is_ignored(propagator: TextMapPropagator, headers: dict[str, str]) -> None:
    context = propagator.extract(headers)
    assert not span_context(context).is_valid
    assert get_sampling_hint(context) is None
    assert not is_debug(context)


@pytest.mark.parametrize(
    ("headers", "hint", "debug"),
    [
        ({"b3": "0"}, False, False),  # the deny decision that OTel Python drops
        ({"b3": "1"}, True, False),
        ({"b3": "d"}, True, True),
        ({"X-B3-Sampled": "0"}, False, False),
        ({"X-B3-Sampled": "true"}, True, False),
        ({"X-B3-Flags": "1"}, True, True),
    ],
)
def test_sampling_state_without_ids_is_a_hint(headers: dict[str, str], hint: bool, debug: bool) -> None:
    context = MULTI.extract(headers)
    assert not span_context(context).is_valid
    assert get_sampling_hint(context) is hint
    assert is_debug(context) is debug


def test_single_wins_over_multi() -> None:
    context = MULTI.extract({"b3": f"{T128}-{SPAN}-0", "X-B3-TraceId": T64, "X-B3-SpanId": PARENT, "X-B3-Sampled": "1"})
    sc = span_context(context)
    assert (f"{sc.trace_id:032x}", sc.trace_flags.sampled) == (T128, False)


def test_bare_deny_in_single_wins_over_multi() -> None:
    context = MULTI.extract({"b3": "0", "X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"})
    assert not span_context(context).is_valid
    assert get_sampling_hint(context) is False


def test_invalid_single_falls_back_to_multi() -> None:
    context = SINGLE.extract({"b3": "garbage", "X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"})
    assert f"{span_context(context).trace_id:032x}" == T128


def remote(trace_hex: str = T128, sampled: bool = True) -> Context:
    sc = SpanContext(int(trace_hex, 16), int(SPAN, 16), True, TraceFlags(0x01 if sampled else 0x00))
    return trace.set_span_in_context(NonRecordingSpan(sc))


def injected(propagator: TextMapPropagator, context: Context) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context)
    return carrier


@pytest.mark.parametrize(("sampled", "flag"), [(True, "1"), (False, "0")])
def test_inject_multi(sampled: bool, flag: str) -> None:
    assert injected(MULTI, remote(sampled=sampled)) == {"x-b3-traceid": T128, "x-b3-spanid": SPAN, "x-b3-sampled": flag}
    assert injected(SINGLE, remote(sampled=sampled)) == {"b3": f"{T128}-{SPAN}-{flag}"}


def test_inject_debug_as_flags_without_sampled() -> None:
    context = set_debug(True, remote(sampled=False))
    assert injected(MULTI, context) == {"x-b3-traceid": T128, "x-b3-spanid": SPAN, "x-b3-flags": "1"}
    assert injected(SINGLE, context) == {"b3": f"{T128}-{SPAN}-d"}


def test_inject_64bit_trace_id_padded_to_128() -> None:
    assert injected(MULTI, remote(T64))["x-b3-traceid"] == "0" * 16 + T64


def test_parent_span_id_round_trips() -> None:
    for headers in (
        {"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-ParentSpanId": PARENT, "X-B3-Sampled": "1"},
        {"b3": f"{T128}-{SPAN}-1-{PARENT}"},
    ):
        context = MULTI.extract(headers)
        assert injected(MULTI, context)["x-b3-parentspanid"] == PARENT
        assert injected(SINGLE, context)["b3"] == f"{T128}-{SPAN}-1-{PARENT}"


def test_remembered_parent_is_not_given_to_a_child_span() -> None:
    context = MULTI.extract({"b3": f"{T128}-{SPAN}-1-{PARENT}"})
    child = SpanContext(int(T128, 16), int(PARENT[::-1], 16), False, TraceFlags(0x01))
    carrier = injected(MULTI, trace.set_span_in_context(NonRecordingSpan(child), context))
    assert "x-b3-parentspanid" not in carrier


def test_sdk_span_parent_is_injected() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    parent_context = MULTI.extract({"b3": f"{T128}-{SPAN}-1"})
    with tracer.start_as_current_span("child", context=parent_context) as span:
        carrier = injected(MULTI, trace.set_span_in_context(span))
    assert carrier["x-b3-parentspanid"] == SPAN
    assert carrier["x-b3-spanid"] == f"{span.get_span_context().span_id:016x}"


def test_deferred_decision_is_forwarded_undecided() -> None:
    context = MULTI.extract({"X-B3-TraceId": T128, "X-B3-SpanId": SPAN, "X-B3-ParentSpanId": PARENT})
    assert injected(MULTI, context) == {"x-b3-traceid": T128, "x-b3-spanid": SPAN, "x-b3-parentspanid": PARENT}
    assert injected(SINGLE, context) == {"b3": f"{T128}-{SPAN}"}


@pytest.mark.parametrize(
    ("context", "multi", "single"),
    [
        (set_sampling_hint(False, Context()), {"x-b3-sampled": "0"}, {"b3": "0"}),
        (set_sampling_hint(True, Context()), {"x-b3-sampled": "1"}, {"b3": "1"}),
        (set_debug(True, Context()), {"x-b3-flags": "1"}, {"b3": "d"}),
        (Context(), {}, {}),
    ],
)
def test_inject_bare_decision(context: Context, multi: dict[str, str], single: dict[str, str]) -> None:
    assert injected(MULTI, context) == multi
    assert injected(SINGLE, context) == single


def test_never_injects_empty_values_and_fields_cover_them() -> None:
    for context in (remote(), set_debug(True, remote()), MULTI.extract({"b3": f"{T128}-{SPAN}"})):
        for propagator in (MULTI, SINGLE):
            carrier = injected(propagator, context)
            assert all(carrier.values())
            assert set(carrier) <= propagator.fields

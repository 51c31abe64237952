"""OpenTracing basic-tracer headers: both sampled spellings, padded ids, `ot-baggage-` baggage."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from meshtrace.propagation import OTTracePropagator, is_sampling_deferred

OT = OTTracePropagator()
T64 = "64fe8b2a57d3eff7"
T128 = "80f198ee56343ba864fe8b2a57d3eff7"
SPAN = "e457b5a2e4d86bd1"


def span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


IDS = {"ot-tracer-traceid": T64, "ot-tracer-spanid": SPAN}


@pytest.mark.parametrize(
    ("headers", "trace_id", "sampled", "deferred"),
    [
        ({**IDS, "ot-tracer-sampled": "true"}, int(T64, 16), True, False),
        ({**IDS, "ot-tracer-sampled": "false"}, int(T64, 16), False, False),
        ({**IDS, "ot-tracer-sampled": "1"}, int(T64, 16), True, False),
        ({**IDS, "ot-tracer-sampled": "0"}, int(T64, 16), False, False),
        ({"OT-Tracer-TraceId": T128, "OT-Tracer-SpanId": SPAN, "OT-Tracer-Sampled": "True"},
         int(T128, 16), True, False),
        ({"ot-tracer-traceid": T64, "ot-tracer-spanid": SPAN}, int(T64, 16), False, True),
        ({"ot-tracer-traceid": "abc", "ot-tracer-spanid": "12", "ot-tracer-sampled": "1"}, 0xABC, True, False),
    ],
)
def test_valid_ot_headers(headers: dict[str, str], trace_id: int, sampled: bool, deferred: bool) -> None:
    context = OT.extract(headers)
    sc = span_context(context)
    assert sc.is_valid
    assert sc.trace_id == trace_id
    assert sc.trace_flags.sampled is sampled
    assert is_sampling_deferred(context) is deferred


@pytest.mark.parametrize(
    "headers",
    [
        {"ot-tracer-traceid": T64},
        {"ot-tracer-spanid": SPAN},
        {"ot-tracer-traceid": "", "ot-tracer-spanid": SPAN},
        {"ot-tracer-traceid": T64, "ot-tracer-spanid": ""},
        {"ot-tracer-traceid": "0" * 16, "ot-tracer-spanid": SPAN},
        {"ot-tracer-traceid": T64, "ot-tracer-spanid": "0" * 16},
        {"ot-tracer-traceid": T128 + "0", "ot-tracer-spanid": SPAN},
        {"ot-tracer-traceid": T64, "ot-tracer-spanid": SPAN + "0"},
        {"ot-tracer-traceid": T64.upper(), "ot-tracer-spanid": SPAN},
        {"ot-tracer-traceid": f"{T64}-x", "ot-tracer-spanid": SPAN},
        {"ot-tracer-traceid": T64, "ot-tracer-spanid": SPAN, "ot-tracer-sampled": "yes"},
        {"ot-tracer-traceid": T64, "ot-tracer-spanid": SPAN, "ot-tracer-sampled": ""},
    ],
)
def test_invalid_ot_headers_are_ignored(headers: dict[str, str]) -> None:
    assert not span_context(OT.extract(headers)).is_valid


def test_baggage_extracted_and_injected() -> None:
    context = OT.extract({"ot-tracer-traceid": T64, "ot-tracer-spanid": SPAN, "OT-Baggage-User": "alice",
                          "ot-baggage-bad": "caf\u00e9", "ot-baggage-": "x"})
    assert dict(baggage.get_all(context)) == {"user": "alice"}
    context = baggage.set_baggage("multi\nline", "x", context)
    context = baggage.set_baggage("newline", "a\r\nb", context)
    carrier: dict[str, str] = {}
    OT.inject(carrier, context)
    assert carrier == {
        "ot-tracer-traceid": T64,
        "ot-tracer-spanid": SPAN,
        "ot-baggage-user": "alice",
    }  # deferred: no sampled header; unsafe baggage is not sent


@pytest.mark.parametrize(
    ("trace_id", "sampled", "expected_trace", "expected_sampled"),
    [
        (0xABC, True, "0000000000000abc", "true"),
        (int(T128, 16), False, T128, "false"),
        (1 << 64, True, f"{1 << 64:032x}", "true"),
    ],
)
def test_inject_zero_padded_ids(trace_id: int, sampled: bool, expected_trace: str, expected_sampled: str) -> None:
    sc = SpanContext(trace_id, 0x12, True, TraceFlags(0x01 if sampled else 0))
    carrier: dict[str, str] = {}
    OT.inject(carrier, trace.set_span_in_context(NonRecordingSpan(sc)))
    assert carrier == {
        "ot-tracer-traceid": expected_trace,
        "ot-tracer-spanid": "0000000000000012",
        "ot-tracer-sampled": expected_sampled,
    }

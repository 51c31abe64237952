"""OpenTracing basic-tracer headers (`ot-tracer-*`) and `ot-baggage-<key>` baggage."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from opentelemetry import baggage as otel_baggage
from opentelemetry.context import Context

from meshtrace.propagation import _prefixed
from meshtrace.propagation._common import (
    Extracted,
    FormatPropagator,
    Headers,
    Outgoing,
    apply_found,
    remote_context,
    visible_value,
)

__all__ = ["OTTracePropagator"]

TRACE_ID: Final = "ot-tracer-traceid"
SPAN_ID: Final = "ot-tracer-spanid"
SAMPLED: Final = "ot-tracer-sampled"
BAGGAGE_PREFIX: Final = "ot-baggage-"

# 16 or 32 hex is the norm; basictracer-python writes ids unpadded, so shorter ids are accepted too.
_TRACE_ID = re.compile(r"[0-9a-f]{1,32}")
_SPAN_ID = re.compile(r"[0-9a-f]{1,16}")
# Python tracers send true/false, Go tracers 1/0 (compared lower-cased).
_SAMPLED_VALUES: Final = {"true": True, "1": True, "false": False, "0": False}


def parse(headers: Headers) -> Extracted | None:
    return parse_values(headers.first(TRACE_ID), headers.first(SPAN_ID), headers.first(SAMPLED))


def parse_values(trace_hex: str | None, span_hex: str | None, sampled_raw: str | None) -> Extracted | None:
    """The `ot-tracer-*` headers' meaning, given each one's first value stripped of optional whitespace."""
    if trace_hex is None or span_hex is None:
        return None
    if _TRACE_ID.fullmatch(trace_hex) is None or _SPAN_ID.fullmatch(span_hex) is None:
        return None
    sampled: bool | None = None
    if sampled_raw is not None:
        sampled = _SAMPLED_VALUES.get(sampled_raw.lower())
        if sampled is None:
            return None
    return remote_context(int(trace_hex, 16), int(span_hex, 16), bool(sampled), deferred=sampled is None)


def parse_baggage(headers: Headers) -> Iterator[tuple[str, str]]:
    for _, key, value in headers.prefixed(BAGGAGE_PREFIX):
        if value and visible_value(value):
            yield key, value


def extract_baggage(headers: Headers, context: Context) -> Context:
    for key, value in _prefixed.bounded(parse_baggage(headers)):
        context = otel_baggage.set_baggage(key, value, context)
    return context


def _encode(value: str) -> str | None:
    # The format sends values raw: one that is not a plain header value cannot travel this way.
    return value if value and visible_value(value) and value.strip(" \t") == value else None


def render(out: Outgoing) -> Iterator[tuple[str, str]]:
    if out.valid:
        sc = out.span_context
        # Zero-padded; 64-bit ids stay 16 hex for 64-bit-only tracers, 128-bit ids keep all 32 (OTel's
        # propagator truncates them, which silently splits the trace).
        yield TRACE_ID, f"{sc.trace_id:016x}" if sc.trace_id >> 64 == 0 else f"{sc.trace_id:032x}"
        yield SPAN_ID, f"{sc.span_id:016x}"
        if not out.deferred:
            yield SAMPLED, "true" if out.sampled else "false"
    yield from render_baggage(out)


def render_baggage(out: Outgoing) -> Iterator[tuple[str, str]]:
    return _prefixed.render(BAGGAGE_PREFIX, out.baggage, _encode)


class OTTracePropagator(FormatPropagator):
    """`ot-tracer-traceid`/`-spanid`/`-sampled` plus `ot-baggage-` baggage."""

    FIELDS = frozenset({TRACE_ID, SPAN_ID, SAMPLED})

    def read(self, headers: Headers, context: Context) -> Context:
        return extract_baggage(headers, apply_found(parse(headers), context))

    def write(self, out: Outgoing) -> Iterator[tuple[str, str]]:
        return render(out)

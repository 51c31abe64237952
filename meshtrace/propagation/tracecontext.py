"""W3C Trace Context (`traceparent`, `tracestate`), following the specification to the letter."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from opentelemetry.context import Context
from opentelemetry.trace import TraceState

from meshtrace.propagation._common import (
    Extracted,
    FormatPropagator,
    Headers,
    Outgoing,
    apply_found,
    remote_context,
)

__all__ = ["TraceContextPropagator"]

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

# version-traceid-parentid-flags, lowercase only; a future version may append "-<anything>".
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
_MAX_TRACEPARENT = 512  # room for future versions, bounded so a huge header costs nothing

# tracestate list-member grammar (W3C trace-context §3.3.1).
_MEMBER = re.compile(
    r"([a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
_MAX_MEMBERS = 32
# 32 maximal members plus separators and generous whitespace: anything longer cannot be valid.
_MAX_TRACESTATE = 32 * 520
_KNOWN_FLAGS = 0x03  # sampled, random; other bits are reserved and must not be passed on


def parse(headers: Headers) -> Extracted | None:
    values = headers.values(TRACEPARENT)
    if values is None or len(values) != 1:
        return None  # see parse_values: only then is tracestate worth reading
    return parse_values(values, headers.values(TRACESTATE))


def parse_values(values: list[str] | None, tracestate: list[str] | None) -> Extracted | None:
    """`traceparent`/`tracestate` meaning, given every value of each stripped of optional whitespace."""
    # The spec (and its test suite) treats two traceparent headers as no traceparent: restart the trace.
    if values is None or len(values) != 1:
        return None
    value = values[0]
    if len(value) > _MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    flags = int(flags_hex, 16)
    return remote_context(
        int(trace_hex, 16),
        int(span_hex, 16),
        bool(flags & 0x01),
        trace_state=parse_tracestate(tracestate),
        random=bool(flags & 0x02),
    )


def parse_tracestate(values: list[str] | None) -> TraceState | None:
    """The tracestate, or None when it is absent or invalid (which drops it but keeps the traceparent)."""
    if not values:
        return None
    # Several tracestate header lines are one list, joined by commas (RFC 9110 §5.3).
    combined = ",".join(values)
    if len(combined) > _MAX_TRACESTATE:
        return None
    pairs: dict[str, str] = {}
    for raw in combined.split(","):
        member = raw.strip(" \t")
        if not member:
            continue  # empty list-members are allowed
        match = _MEMBER.fullmatch(member)
        if match is None:
            return None
        key, value = match.groups()
        if key in pairs or len(pairs) == _MAX_MEMBERS:
            return None  # duplicate keys or a 33rd member make the whole header invalid
        pairs[key] = value
    return TraceState(list(pairs.items())) if pairs else None


def render(out: Outgoing) -> Iterator[tuple[str, str]]:
    if not out.valid:
        return
    sc = out.span_context
    flags = (sc.trace_flags & _KNOWN_FLAGS) | (0x01 if out.sampled else 0x00)
    yield TRACEPARENT, f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{flags:02x}"
    if sc.trace_state:
        yield TRACESTATE, sc.trace_state.to_header()


class TraceContextPropagator(FormatPropagator):
    """`traceparent` / `tracestate`: invalid input is ignored, an invalid tracestate alone is dropped."""

    FIELDS = frozenset({TRACEPARENT, TRACESTATE})

    def read(self, headers: Headers, context: Context) -> Context:
        return apply_found(parse(headers), context)

    def write(self, out: Outgoing) -> Iterator[tuple[str, str]]:
        return render(out)

"""Jaeger `uber-trace-id` and `uberctx-<key>` baggage, as the Jaeger clients speak it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final
from urllib.parse import quote, unquote

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
)

__all__ = ["JaegerPropagator"]

TRACE_HEADER: Final = "uber-trace-id"
BAGGAGE_PREFIX: Final = "uberctx-"
_SAMPLED_FLAG: Final = 0x01
_DEBUG_FLAG: Final = 0x02

# trace:span:parent:flags, ids as variable-length hex (clients drop leading zeros), parent 0 = none.
_UBER = re.compile(r"([0-9a-fA-F]{1,32}):([0-9a-fA-F]{1,16}):([0-9a-fA-F]{1,16}):([0-9a-fA-F]{1,2})")


def parse(headers: Headers) -> Extracted | None:
    return parse_value(headers.first(TRACE_HEADER))


def parse_value(value: str | None) -> Extracted | None:
    """The `uber-trace-id` header's meaning, given its first value stripped of optional whitespace."""
    if not value:
        return None
    if "%" in value:
        value = unquote(value)  # old Java clients URL-encoded the colons as %3A
    match = _UBER.fullmatch(value)
    if match is None:
        return None
    trace_hex, span_hex, parent_hex, flags_hex = match.groups()
    flags = int(flags_hex, 16)
    return remote_context(
        int(trace_hex, 16),
        int(span_hex, 16),
        bool(flags & _SAMPLED_FLAG),
        parent_span_id=int(parent_hex, 16),
        debug=bool(flags & _DEBUG_FLAG),  # debug traces are sampled, even if a client forgot bit 0x01
    )


def parse_baggage(headers: Headers) -> Iterator[tuple[str, str]]:
    """(key, decoded value) for each `uberctx-` header; keys arrive lower-cased (header names have no case)."""
    for _, key, value in headers.prefixed(BAGGAGE_PREFIX):
        if value:  # an empty header carries nothing (and is never sent)
            yield key, unquote(value)


def extract_baggage(headers: Headers, context: Context) -> Context:
    for key, value in _prefixed.bounded(parse_baggage(headers)):
        context = otel_baggage.set_baggage(key, value, context)
    return context


def _encode(value: str) -> str | None:
    return quote(value, safe="") or None


def render(out: Outgoing) -> Iterator[tuple[str, str]]:
    if out.valid:
        sc = out.span_context
        # Unlike OTel's Jaeger propagator, the debug bit is set only for debug traces.
        flags = (_SAMPLED_FLAG if out.sampled else 0) | (_DEBUG_FLAG if out.debug else 0)
        yield TRACE_HEADER, f"{sc.trace_id:032x}:{sc.span_id:016x}:{out.parent_span_id or 0:016x}:{flags:02x}"
    yield from render_baggage(out)


def render_baggage(out: Outgoing) -> Iterator[tuple[str, str]]:
    return _prefixed.render(BAGGAGE_PREFIX, out.baggage, _encode)


class JaegerPropagator(FormatPropagator):
    """`uber-trace-id: trace:span:parent:flags` (0x01 sampled, 0x02 debug) plus `uberctx-` baggage."""

    FIELDS = frozenset({TRACE_HEADER})

    def read(self, headers: Headers, context: Context) -> Context:
        return extract_baggage(headers, apply_found(parse(headers), context))

    def write(self, out: Outgoing) -> Iterator[tuple[str, str]]:
        return render(out)

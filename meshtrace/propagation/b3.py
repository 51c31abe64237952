"""Zipkin B3, multi-header (`X-B3-*`) and single-header (`b3`), debug and bare deny included."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from opentelemetry.context import Context

from meshtrace.propagation._common import (
    Extracted,
    FormatPropagator,
    Headers,
    Outgoing,
    apply_found,
    remote_context,
)

__all__ = ["B3MultiPropagator", "B3SinglePropagator"]

SINGLE: Final = "b3"
TRACE_ID: Final = "x-b3-traceid"
SPAN_ID: Final = "x-b3-spanid"
PARENT_SPAN_ID: Final = "x-b3-parentspanid"
SAMPLED: Final = "x-b3-sampled"
FLAGS: Final = "x-b3-flags"

#: A trace id (128 or 64 bits) and a span id as B3 writes them: lowercase hex, nothing around them.
TRACE_ID_PATTERN: Final = re.compile(r"[0-9a-f]{32}|[0-9a-f]{16}")
SPAN_ID_PATTERN: Final = re.compile(r"[0-9a-f]{16}")
# {trace}-{span}[-{state}[-{parent}]]; the lone-state form (`b3: 0`) is handled before the regex.
_SINGLE = re.compile(r"([0-9a-f]{32}|[0-9a-f]{16})-([0-9a-f]{16})(?:-([01d])(?:-([0-9a-f]{16}))?)?")
# X-B3-Sampled: "1"/"0" per the spec, "true"/"false" from legacy tracers (compared lower-cased).
_SAMPLED_VALUES: Final = {"1": True, "true": True, "0": False, "false": False}


def _state_only(state: str) -> Extracted:
    """A sampling decision with no ids: `b3: 0` (deny, must be honoured), `b3: 1`, `b3: d` (debug)."""
    return Extracted(debug=True) if state == "d" else Extracted(sampling_hint=state == "1")


def parse_single(headers: Headers) -> Extracted | None:
    return parse_single_value(headers.first(SINGLE))


def parse_single_value(value: str | None) -> Extracted | None:
    """The `b3` header's meaning, given its first value stripped of optional whitespace."""
    if not value:
        return None
    if value in ("0", "1", "d"):
        return _state_only(value)
    match = _SINGLE.fullmatch(value)
    if match is None:
        return None
    trace_hex, span_hex, state, parent_hex = match.groups()
    parent = int(parent_hex, 16) if parent_hex is not None else None
    if parent == 0:
        return None
    return remote_context(
        int(trace_hex, 16),
        int(span_hex, 16),
        state == "1",
        parent_span_id=parent,
        debug=state == "d",
        deferred=state is None,
    )


def parse_multi(headers: Headers) -> Extracted | None:
    return parse_multi_values(
        headers.first(TRACE_ID), headers.first(SPAN_ID), headers.first(PARENT_SPAN_ID), headers.first(SAMPLED),
        headers.first(FLAGS),
    )


def parse_multi_values(
    trace_hex: str | None, span_hex: str | None, parent_hex: str | None, sampled_raw: str | None, flags: str | None
) -> Extracted | None:
    """The `X-B3-*` headers' meaning, given each one's first value stripped of optional whitespace."""
    # Only "1" means debug; the spec says any other X-B3-Flags value is ignored.
    debug = flags == "1"
    sampled: bool | None = None
    if sampled_raw is not None:
        sampled = _SAMPLED_VALUES.get(sampled_raw.lower())
        if sampled is None:
            return None  # a malformed decision makes the whole header set malformed
    if trace_hex is None and span_hex is None:
        if parent_hex is not None:
            return None
        if debug:
            return Extracted(debug=True)
        return None if sampled is None else Extracted(sampling_hint=sampled)
    if trace_hex is None or span_hex is None:
        return None
    if TRACE_ID_PATTERN.fullmatch(trace_hex) is None or SPAN_ID_PATTERN.fullmatch(span_hex) is None:
        return None
    parent: int | None = None
    if parent_hex is not None:
        if SPAN_ID_PATTERN.fullmatch(parent_hex) is None:
            return None
        parent = int(parent_hex, 16)
        if parent == 0:
            return None
    return remote_context(
        int(trace_hex, 16),  # a 16-hex id is a 64-bit id: left-padding to 128 bits is the same integer
        int(span_hex, 16),
        bool(sampled),
        parent_span_id=parent,
        debug=debug,
        deferred=sampled is None,
    )


def parse(headers: Headers) -> Extracted | None:
    """Single wins over multi; an invalid single header falls back to the multi headers."""
    return parse_single(headers) or parse_multi(headers)


def render_multi(out: Outgoing) -> Iterator[tuple[str, str]]:
    if out.valid:
        sc = out.span_context
        yield TRACE_ID, f"{sc.trace_id:032x}"
        yield SPAN_ID, f"{sc.span_id:016x}"
        if out.parent_span_id:
            yield PARENT_SPAN_ID, f"{out.parent_span_id:016x}"
        if out.debug:
            yield FLAGS, "1"  # debug implies sampled: the spec says not to send X-B3-Sampled with it
        elif not out.deferred:
            yield SAMPLED, "1" if out.sampled else "0"
    elif out.debug:
        yield FLAGS, "1"
    elif out.sampling_hint is not None:
        yield SAMPLED, "1" if out.sampling_hint else "0"


def render_single(out: Outgoing) -> Iterator[tuple[str, str]]:
    if out.valid:
        sc = out.span_context
        value = f"{sc.trace_id:032x}-{sc.span_id:016x}"
        if not out.deferred:
            value += "-d" if out.debug else "-1" if out.sampled else "-0"
            # The grammar puts the parent after the state, so a deferred context cannot carry it.
            if out.parent_span_id:
                value += f"-{out.parent_span_id:016x}"
        yield SINGLE, value
    elif out.debug:
        yield SINGLE, "d"
    elif out.sampling_hint is not None:
        yield SINGLE, "1" if out.sampling_hint else "0"


class _B3Base(FormatPropagator):
    def read(self, headers: Headers, context: Context) -> Context:
        return apply_found(parse(headers), context)


class B3MultiPropagator(_B3Base):
    """Reads `b3` then `X-B3-*`; writes `X-B3-*` (ParentSpanId when known, `X-B3-Flags: 1` for debug)."""

    FIELDS = frozenset({TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS})

    def write(self, out: Outgoing) -> Iterator[tuple[str, str]]:
        return render_multi(out)


class B3SinglePropagator(_B3Base):
    """Reads `b3` then `X-B3-*`; writes `b3: trace-span[-1|0|d[-parent]]` (or a bare state)."""

    FIELDS = frozenset({SINGLE})

    def write(self, out: Outgoing) -> Iterator[tuple[str, str]]:
        return render_single(out)

"""The headers of a CLIENT span's plain context, from a function compiled per kind of span context.

Theory of operation. For a decided, valid, local span context without debug, baggage or a deferred decision,
what `MeshPropagator.inject` writes depends on the configured formats and on a few facts: the trace flags'
sampled and random bits, whether there is a parent span id, a trace state and an x-request-id, and whether the
trace id fits in 64 bits; everything else is the ids in hex. `factory()` turns one such combination (a *kind*)
into the source of a small function, compiled once per kind, which takes what a parent context fixes (trace id,
parent id, rendered trace state, request id), does the per-parent formatting once, and returns a `render(span_id)`
closure: every header that does not hold the span id is a ready-made constant, the rest are one hex format and
an f-string each. Sibling CLIENT spans (the calls one request handler makes) share one closure, so each costs a
hex format and a few concatenations; a first call pays one factory call on top (no template, no splitting).

A render gives *keyed* pairs, `(lowercase name, (lowercase name, value))`: the shape of a case-insensitive
header store that keeps each header under its lowered name (requests' `CaseInsensitiveDict`), written with one
C-level `update`; `(name, value)` is the second item. Only string literals of this module's own making, as
`repr()`s, enter the source; values arrive as arguments. tests/propagation/test_child_headers.py holds what
the renders give equal to a fresh propagator's inject.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from meshtrace.propagation import b3, jaeger, ottrace, requestid, tracecontext

__all__ = ["B3MULTI", "B3SINGLE", "JAEGER", "OTTRACE", "TRACECONTEXT", "Keyed", "Kind", "Render", "factory"]

TRACECONTEXT, B3MULTI, B3SINGLE, JAEGER, OTTRACE = range(5)
_CODES: Final = frozenset(range(5))

#: Each (lowercase name, value) pair keyed by its name: what a store keyed by lowered names takes in one update.
Keyed = tuple[tuple[str, tuple[str, str]], ...]
#: span id -> the keyed headers of a span of one parent context.
Render = Callable[[int], Keyed]
#: (trace id, parent span id or 0, rendered trace state or "", request id or "") -> the parent's render.
Factory = Callable[[int, int, str, str], Render]


def _pair(name: str, value: str) -> str:
    """Source of a keyed pair whose value is the expression `value`."""
    return f"({name!r}, ({name!r}, {value}))"


def _constant(name: str, value: str) -> str:
    return repr((name, (name, value)))


#: (trace flags' low two bits, a parent span id?, a trace state?, a trace id below 2**64?, an x-request-id?)
Kind = tuple[int, bool, bool, bool, bool]


def factory(codes: tuple[int, ...], kind: Kind) -> Factory:
    """The factory of renders for the formats `codes` (in order, baggage left out: a plain context has none) and
    a span context of this `kind`: its trace flags (the sampled and random bits count), whether it has a parent
    span id, a trace state and an x-request-id, and whether its trace id is below 2**64."""
    flags, parent, state, short, request_id = kind
    if not _CODES.issuperset(codes):
        raise ValueError(f"unknown format codes {codes!r}")
    sampled = bool(flags & 0x01)
    per_parent = ["    t = '%032x' % trace_id"]
    if parent:
        per_parent.append("    p = '%016x' % parent_id")
    items: list[str] = []

    def fixed(name: str, value: str) -> None:
        """A header the parent context fixes: made once per parent, a ready tuple in every render."""
        per_parent.append(f"    k{len(per_parent)} = {_pair(name, value)}")
        items.append(f"k{len(per_parent) - 1}")

    for code in codes:
        if code == TRACECONTEXT:
            per_parent.append("    tp = '00-' + t + '-'")
            items.append(_pair(tracecontext.TRACEPARENT, f"f'{{tp}}{{s}}{'-%02x' % (flags & 0x03)}'"))
            if state:
                fixed(tracecontext.TRACESTATE, "state")
        elif code == B3MULTI:
            fixed(b3.TRACE_ID, "t")
            items.append(_pair(b3.SPAN_ID, "s"))
            if parent:
                fixed(b3.PARENT_SPAN_ID, "p")
            items.append(_constant(b3.SAMPLED, "1" if sampled else "0"))
        elif code == B3SINGLE:
            per_parent.append(f"    bs = {'-1' if sampled else '-0'!r}" + (" + '-' + p" if parent else ""))
            per_parent.append("    bt = t + '-'")
            items.append(_pair(b3.SINGLE, "f'{bt}{s}{bs}'"))
        elif code == JAEGER:
            per_parent.append("    jt = t + ':'")
            per_parent.append(f"    js = ':' + {'p' if parent else repr('0' * 16)} + {':01' if sampled else ':00'!r}")
            items.append(_pair(jaeger.TRACE_HEADER, "f'{jt}{s}{js}'"))
        else:  # OT: a 64-bit trace id goes out as 16 hex, the low half of the zero-padded 32
            fixed(ottrace.TRACE_ID, "t[16:]" if short else "t")
            items.append(_pair(ottrace.SPAN_ID, "s"))
            items.append(_constant(ottrace.SAMPLED, "true" if sampled else "false"))
    if request_id:
        fixed(requestid.HEADER, "request_id")
    source = "\n".join([
        "def factory(trace_id, parent_id, state, request_id):",
        *per_parent,
        "    def render(span_id):",
        # to_bytes().hex() is '%016x' for a valid span id, and cheaper
        "        s = span_id.to_bytes(8, 'big').hex()",
        f"        return ({', '.join(items)},)" if items else "        return ()",
        "    return render",
    ])
    namespace: dict[str, object] = {}
    label = f"<child headers {codes} {flags & 0x03} {parent} {state} {short} {request_id}>"
    exec(compile(source, label, "exec"), namespace)
    made: Factory = namespace["factory"]  # type: ignore[assignment]
    return made

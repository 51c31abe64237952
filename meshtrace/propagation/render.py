"""The trace headers a span hands on to its children, from functions compiled per kind of span context.

Theory of operation. For a decided, valid span context without debug, baggage or a deferred decision, what
`MeshPropagator.inject` writes depends on the configured formats and on a few facts: the trace flags' sampled and
random bits, whether there is a parent span id, a trace state and an x-request-id, and whether the trace id fits in
64 bits; everything else is the ids in hex. `_headers()` says, for one such combination (a *kind*), each header's
name and its value as an f-string template over the hex ids `t`, `s` and `p` (trace, span, parent), `state` (the
rendered trace state) and `request_id`; two makers compile functions from that one description:

- `factory()`, for a client integration's CLIENT spans: a function taking what a parent context fixes (trace id,
  parent id, rendered trace state, request id), which does the per-parent formatting once and returns a
  `render(span_id)` closure; every header that does not hold the span id is a ready-made constant, the rest one
  hex format and an f-string each, the text around the span id formatted per parent. Sibling CLIENT spans (the
  calls one request handler makes) share one closure, so each costs a hex format and a few concatenations. A
  render gives *keyed* pairs, `(lowercase name, (lowercase name, value))`: the shape of a case-insensitive header
  store that keeps each header under its lowered name (requests' `CaseInsensitiveDict`), written with one C-level
  `update`; `(name, value)` is the second item.
- `block()`, for the sidecar's hop spans: `render(trace_id, span_id, parent_id, state)` returning every header as
  one HTTP/1 header block (`name: value` CRLF each, in order), ready for the request head it goes into, with the
  hex trace and span ids the hop record needs: two hex formats, one f-string and one encode, rather than a (name,
  value) pair per header that the head's encoder would join one by one.

Ids are hex by `int.to_bytes(n).hex()` (the `%032x`/`%016x` of a valid id, and cheaper). Only string literals of
this module's own making, as `repr()`s, enter the source; values arrive as arguments.
tests/propagation/test_child_render.py holds both equal to the propagator's plain render for every kind, and
tests/proxy/test_trace_block.py the sidecar's blocks to what a fresh propagator writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from meshtrace.propagation import b3, jaeger, ottrace, requestid, tracecontext

__all__ = ["B3MULTI", "B3SINGLE", "CODES", "JAEGER", "OTTRACE", "TRACECONTEXT", "Block", "BlockKind", "Keyed",
           "Kind", "Render", "block", "factory"]

TRACECONTEXT, B3MULTI, B3SINGLE, JAEGER, OTTRACE = range(5)
_CODES: Final = frozenset(range(5))
#: Each canonical format name -> its code; None for baggage, which writes nothing for a plain context.
CODES: Final[Mapping[str, int | None]] = {
    "tracecontext": TRACECONTEXT,
    "baggage": None,
    "b3multi": B3MULTI,
    "b3": B3SINGLE,
    "jaeger": JAEGER,
    "ottrace": OTTRACE,
}

#: Each (lowercase name, value) pair keyed by its name: what a store keyed by lowered names takes in one update.
Keyed = tuple[tuple[str, tuple[str, str]], ...]
#: span id -> the keyed headers of a span of one parent context.
Render = Callable[[int], Keyed]
#: (trace id, parent span id or 0, rendered trace state or "", request id or "") -> the parent's render.
Factory = Callable[[int, int, str, str], Render]
#: (trace id, span id, parent span id (None for a root), rendered trace state or "") -> (the header block, the hex
#: trace id, the hex span id).
Block = Callable[[int, int, "int | None", str], tuple[bytes, str, str]]

#: (trace flags' low two bits, a parent span id?, a trace state?, a trace id below 2**64?, an x-request-id?)
Kind = tuple[int, bool, bool, bool, bool]
#: A Kind without an x-request-id (a block never holds one: the sidecar's connection manager owns that header).
BlockKind = tuple[int, bool, bool, bool]

_PER_PARENT = ("    t = trace_id.to_bytes(16).hex()",)
_PARENT = "    p = parent_id.to_bytes(8).hex()"


def _headers(codes: tuple[int, ...], kind: Kind) -> list[tuple[str, str]]:
    """Each header of a span context of this `kind` in the formats `codes` (in order): its name, and its value as an
    f-string template over `t`, `s`, `p`, `state` and `request_id` (no braces besides the fields)."""
    flags, parent, state, short, request_id = kind
    if not _CODES.issuperset(codes):
        raise ValueError(f"unknown format codes {codes!r}")
    sampled = bool(flags & 0x01)
    headers: list[tuple[str, str]] = []
    for code in codes:
        if code == TRACECONTEXT:
            headers.append((tracecontext.TRACEPARENT, "00-{t}-{s}-" + "%02x" % (flags & 0x03)))
            if state:
                headers.append((tracecontext.TRACESTATE, "{state}"))
        elif code == B3MULTI:
            headers += [(b3.TRACE_ID, "{t}"), (b3.SPAN_ID, "{s}")]
            if parent:
                headers.append((b3.PARENT_SPAN_ID, "{p}"))
            headers.append((b3.SAMPLED, "1" if sampled else "0"))
        elif code == B3SINGLE:
            headers.append((b3.SINGLE, "{t}-{s}-" + ("1" if sampled else "0") + ("-{p}" if parent else "")))
        elif code == JAEGER:
            headers.append((jaeger.TRACE_HEADER,
                            "{t}:{s}:" + ("{p}" if parent else "0" * 16) + (":01" if sampled else ":00")))
        else:  # OT: a 64-bit trace id goes out as 16 hex, the low half of the zero-padded 32
            headers += [(ottrace.TRACE_ID, "{t[16:]}" if short else "{t}"), (ottrace.SPAN_ID, "{s}"),
                        (ottrace.SAMPLED, "true" if sampled else "false")]
    if request_id:
        headers.append((requestid.HEADER, "{request_id}"))
    return headers


def _expression(template: str) -> str:
    """Source of the value of `template`: its one field's expression when that is all of it, else an f-string."""
    if template.startswith("{") and template.endswith("}") and template.count("{") == 1:
        return template[1:-1]
    return f"f{template!r}"


def factory(codes: tuple[int, ...], kind: Kind) -> Factory:
    """The factory of renders for the formats `codes` (in order, baggage left out: a plain context has none) and
    a span context of this `kind`: its trace flags (the sampled and random bits count), whether it has a parent
    span id, a trace state and an x-request-id, and whether its trace id is below 2**64."""
    per_parent = [*_PER_PARENT, *((_PARENT,) if kind[1] else ())]
    items: list[str] = []

    def once(expression: str) -> str:
        """The name of a value made once per parent by `expression`."""
        name = f"k{len(per_parent)}"
        per_parent.append(f"    {name} = {expression}")
        return name

    for name, template in _headers(codes, kind):
        if "{s}" not in template:
            # A header the parent context fixes: made once per parent, a ready tuple (or a constant) in every render.
            items.append(repr((name, (name, template))) if "{" not in template
                         else once(f"({name!r}, ({name!r}, {_expression(template)}))"))
            continue
        # The text on either side of the span id: formatted once per parent when it holds a field.
        before, _, after = template.partition("{s}")
        sides = ["{" + once(_expression(side)) + "}" if "{" in side else side for side in (before, after)]
        value = "s" if sides == ["", ""] else _expression(sides[0] + "{s}" + sides[1])
        items.append(f"({name!r}, ({name!r}, {value}))")
    source = "\n".join([
        "def factory(trace_id, parent_id, state, request_id):",
        *per_parent,
        "    def render(span_id):",
        "        s = span_id.to_bytes(8).hex()",
        f"        return ({', '.join(items)},)" if items else "        return ()",
        "    return render",
    ])
    namespace: dict[str, object] = {}
    exec(compile(source, f"<child headers {codes} {kind}>", "exec"), namespace)
    made: Factory = namespace["factory"]  # type: ignore[assignment]
    return made


def block(codes: tuple[int, ...], kind: BlockKind) -> Block:
    """The render of the header block for the formats `codes` (in order, baggage left out) and a span context of
    this `kind`: its trace flags, whether it has a parent span id and a trace state, and whether its trace id is
    below 2**64."""
    lines = "".join(f"{name}: {template}\r\n" for name, template in _headers(codes, (*kind, False)))
    # A trace state is checked printable ASCII, the rest is hex and this module's literals: latin-1, as the
    # propagator's values are sent, only where a trace state could make a difference.
    encode = ".encode('latin-1')" if kind[2] else ".encode()"
    source = "\n".join([
        "def render(trace_id, span_id, parent_id, state):",
        *_PER_PARENT,
        *((_PARENT,) if kind[1] else ()),
        "    s = span_id.to_bytes(8).hex()",
        f"    return f{lines!r}{encode}, t, s",
    ])
    namespace: dict[str, object] = {}
    exec(compile(source, f"<header block {codes} {kind}>", "exec"), namespace)
    render: Block = namespace["render"]  # type: ignore[assignment]
    return render

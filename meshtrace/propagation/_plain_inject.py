"""The headers of a plain outbound context, rendered in one pass and remembered for the span that sent them.

Theory of operation. Nearly every outbound call carries a decided, valid span context with neither debug,
a deferred decision nor baggage. For that case `PlainInjector.pairs` reads the few context entries it needs
straight from the context (no `Outgoing` snapshot, no generator per format), formats the trace, span and
parent ids to hex once and emits every configured format from those strings in the propagator's order. The
result is remembered against the span context object (an immutable tuple, so identity means equal values),
the parent id and the request id: a span that injects again (a retry, a redirect, the sidecar answering
twice) gets the same tuple without any formatting. Sibling spans (the outbound calls made while serving one
request) differ only in their span id: the render is kept as a template (every value joined by a newline,
the span id a placeholder character; neither can occur in a header value) keyed by what else it depends on,
so a sibling's headers are one `replace` and one `split` of it. Anything else returns None and the caller
takes each format's own renderer, which a property test holds equal to this one.

A client integration that has just started an SDK span under the current context asks `child_keyed(context,
span)` (the same headers, keyed: see propagation.render). The span's own fields and the few context entries a plain
render depends on (debug, baggage, request id, a remembered remote parent) are read directly, and the headers
come from the render function compiled for that kind of span context (propagation.render), whose per-parent part
runs once: a first call per request costs one such factory call. When the span has a parent, the render is
remembered with the context object, the span's type and parent and what the render was built from; the next
child started under that very context (the context is immutable, so identity means it holds the same debug
flag, baggage, request id and parent span) is checked only on the child's own fields and calls the remembered
render with its span id, skipping every context look-up. The fields are an SDK span's `_context` and
`_parent`, read directly when its type keeps the SDK's accessors for them (checked once per type), and the span
context's trace id, flags, trace state (by identity), validity and remoteness, read as tuple items when the
installed API lays SpanContext out so; any other span goes through `pairs`. A property test holds it equal to
`pairs`.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import baggage as otel_baggage
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace import ReadableSpan, _Span
from opentelemetry.trace import Span, SpanContext, TraceFlags, TraceState

from meshtrace.propagation import b3, jaeger, ottrace, requestid, tracecontext
from meshtrace.propagation._common import _REMOTE_PARENT, _SPAN_KEY
from meshtrace.propagation._context import DEBUG_KEY, REQUEST_ID_KEY, get_request_id, is_debug, is_sampling_deferred
from meshtrace.propagation.render import (
    B3MULTI,
    B3SINGLE,
    CODES,
    JAEGER,
    OTTRACE,
    TRACECONTEXT,
    Factory,
    Keyed,
    Kind,
    Render,
    factory,
)

__all__ = ["Keyed", "Pairs", "PlainInjector"]

Pairs = tuple[tuple[str, str], ...]

# The context key OpenTelemetry keeps the baggage under, learnt through the public API (it is private).
_BAGGAGE_KEY: Final = next(iter(otel_baggage.set_baggage("k", "v", Context())))

_TRACECONTEXT, _B3MULTI, _B3SINGLE, _JAEGER, _OTTRACE = TRACECONTEXT, B3MULTI, B3SINGLE, JAEGER, OTTRACE
_NO_PARENT: Final = "0" * 16
# The template's value separator and span id placeholder: control characters, which no value may hold (ids
# are hex, tracestate and x-request-id are checked printable ASCII); a template is only kept when true.
_SEP: Final = "\n"
_SPAN: Final = "\x01"
_NO_TEMPLATE: Final = (None, None, (), "")
_FLAGS_HEX: Final = ("00", "01", "02", "03")  # the W3C flags byte for sampled and random, the bits passed on
# (context, span type, parent span context, trace id, flags, trace state, render) of the last child with a parent:
# see the module doc.
_Child = tuple[Context | None, type | None, SpanContext | None, int, int, TraceState | None, Render]
_NO_CHILD: Final[_Child] = (None, None, None, 0, 0, None, lambda span_id: ())  # no context is None: never called


def _tuple_layout() -> bool:
    """True when the installed API's SpanContext is the tuple (trace id, span id, remote, flags, state, valid)."""
    state = TraceState([("k", "v")])
    probe = SpanContext(0x1F, 0x2E, True, TraceFlags(1), state)
    return isinstance(probe, tuple) and tuple(probe) == (0x1F, 0x2E, True, 1, state, True) and probe[4] is state


# Read at import: child_keyed reads a span context's fields as tuple items (no property call each) only then.
_TUPLE_LAYOUT: Final = _tuple_layout()
_SDK_GETTERS: Final = (ReadableSpan.get_span_context, _Span.get_span_context)


def _reads_fields(span_type: type) -> bool:
    """True for an SDK span type whose span context and parent are its `_context` and `_parent` fields as they
    are (the SDK's own accessors, not overridden): child_keyed then reads the fields, without two calls."""
    return issubclass(span_type, ReadableSpan) and issubclass(span_type, Span) \
        and getattr(span_type, "get_span_context", None) in _SDK_GETTERS \
        and getattr(span_type, "parent", None) is ReadableSpan.parent


# span type -> _TUPLE_LAYOUT and _reads_fields(span type), for child_keyed (a process meets a type or two).
_READS_FIELDS: dict[type, bool] = {}
_MAX_TYPES: Final = 64


def _keyed(pairs: Pairs | None) -> Keyed | None:
    return None if pairs is None else tuple((name, (name, value)) for name, value in pairs)


class PlainInjector:
    """Renders the configured `formats` (canonical names) plus `x-request-id` for plain contexts."""

    __slots__ = ("_child", "_codes", "_factories", "_last", "_template")

    def __init__(self, formats: tuple[str, ...]) -> None:
        self._codes = tuple(code for name in formats if (code := CODES[name]) is not None)
        # (span context, parent id, request id, pairs) of the last render; replaced whole, so threads that
        # race on it each see a consistent entry.
        self._last: tuple[SpanContext | None, int | None, str | None, Pairs] = (None, None, None, ())
        # (what the render depends on but the span id and the trace state, the trace state, header names,
        # values template): see the module doc. Replaced whole, as _last.
        self._template: tuple[tuple[object, ...] | None, object, tuple[str, ...], str] = _NO_TEMPLATE
        # For child_keyed: see _Child. Replaced whole, as _last.
        self._child = _NO_CHILD
        # The render factory of each kind of span context met (at most 64: see _first_child).
        self._factories: dict[Kind, Factory] = {}

    def pairs(self, context: Context | None) -> Pairs | None:
        """Every (header, value) to send for `context`, or None when it is not plain."""
        ctx = get_current() if context is None else context
        span = ctx.get(_SPAN_KEY)
        if not isinstance(span, Span):
            return None
        sc = span.get_span_context()
        if not sc.is_valid or is_debug(ctx) or ctx.get(_BAGGAGE_KEY):
            return None
        if sc.is_remote and is_sampling_deferred(ctx):
            return None  # a forwarded remote context that never decided: each renderer says so its own way
        parent_id: int | None = None
        parent = getattr(span, "parent", None)  # SDK spans know their parent; the API type does not say so
        if isinstance(parent, SpanContext) and parent.is_valid:
            parent_id = parent.span_id
        else:
            remembered = ctx.get(_REMOTE_PARENT)
            if isinstance(remembered, tuple) and remembered[0] == sc.span_id:
                parent_id = remembered[1]
        request_id = get_request_id(ctx)
        last = self._last
        if last[0] is sc and last[1] == parent_id and last[2] == request_id:
            return last[3]
        pairs = self._from_template(sc, parent_id, request_id)
        self._last = (sc, parent_id, request_id, pairs)
        return pairs

    def child_keyed(self, context: Context, span: Span, inner: Context | None = None) -> Keyed | None:
        """`pairs` of `context` with `span` current (`inner`, when the caller has that context already), keyed
        (see propagation.render), for a span just started under `context` (its parent)."""
        child = self._child
        if child[0] is context and type(span) is child[1]:
            # The SDK's get_span_context()/parent return these fields as they are (checked for the type).
            sc, parent = span._context, span._parent  # type: ignore[attr-defined]
            # sc[5]: valid; sc[2]: remote. The rest of what pairs() checks depends on the context alone.
            if parent is child[2] and sc[0] == child[3] and sc[3] == child[4] and sc[4] is child[5] and sc[5] \
                    and not sc[2]:
                return child[6](sc[1])
        return self._first_child(context, span, inner)

    def _first_child(self, context: Context, span: Span, inner: Context | None) -> Keyed | None:
        """`child_keyed` without the sibling's shortcut: renders through the factory of the span context's kind
        and, when the span has a parent, remembers the render for its siblings."""
        span_type = type(span)
        reads = _READS_FIELDS.get(span_type)
        if reads is None:
            reads = _TUPLE_LAYOUT and _reads_fields(span_type)
            if len(_READS_FIELDS) < _MAX_TYPES:
                _READS_FIELDS[span_type] = reads
        if not reads:
            return _keyed(self.pairs(Context({**context, _SPAN_KEY: span}) if inner is None else inner))
        sc, parent = span._context, span._parent  # type: ignore[attr-defined]
        # What pairs() checks, read from the context the span was started under (inner holds the same entries):
        # valid, not remote (so no deferred decision applies), no debug, no baggage.
        if not sc[5] or sc[2] or context.get(DEBUG_KEY) is True or context.get(_BAGGAGE_KEY):
            return _keyed(self.pairs(Context({**context, _SPAN_KEY: span}) if inner is None else inner))
        parent_id = 0
        if isinstance(parent, SpanContext) and parent[5]:  # valid; [1] the span id (the layout is checked)
            parent_id = parent[1]
        else:
            parent = None
            remembered = context.get(_REMOTE_PARENT)
            if isinstance(remembered, tuple) and remembered[0] == sc[1]:
                parent_id = remembered[1] or 0
        request_id = context.get(REQUEST_ID_KEY)
        if not isinstance(request_id, str) or not requestid.sendable(request_id):
            request_id = ""
        trace_id, flags, state = sc[0], sc[3], sc[4]
        kind: Kind = (flags & 0x03, parent_id != 0, bool(state), trace_id >> 64 == 0, request_id != "")
        make = self._factories.get(kind)
        if make is None:
            make = self._factories[kind] = factory(self._codes, kind)
        render = make(trace_id, parent_id, state.to_header() if state else "", request_id)
        if parent is not None:
            self._child = (context, span_type, parent, trace_id, flags, state, render)
        return render(sc[1])

    def _from_template(self, sc: SpanContext, parent_id: int | None, request_id: str | None) -> Pairs:
        # The trace state by identity (a child shares its parent's): equal TraceStates may differ in order.
        key = (sc.trace_id, sc.trace_flags, parent_id, request_id)
        state = sc.trace_state
        template = self._template
        if template[1] is not state or template[0] != key:
            pairs = self._render(sc, parent_id, request_id, _SPAN)
            joined = _SEP.join(value for _, value in pairs)
            # Each format writes the span id exactly once; any other control character would be a value's own.
            if joined.count(_SEP) != len(pairs) - 1 or joined.count(_SPAN) != len(self._codes):
                return self._render(sc, parent_id, request_id, "%016x" % sc.span_id)  # noqa: UP031
            template = self._template = (key, state, tuple(name for name, _ in pairs), joined)
        # printf-style: measurably cheaper than an f-string format spec on this path.
        values = template[3].replace(_SPAN, "%016x" % sc.span_id).split(_SEP)  # noqa: UP031
        return tuple(zip(template[2], values, strict=True))

    def _render(self, sc: SpanContext, parent_id: int | None, request_id: str | None, span_hex: str) -> Pairs:
        trace_id = sc.trace_id
        # printf-style: measurably cheaper than an f-string format spec on this path.
        trace_hex = "%032x" % trace_id  # noqa: UP031
        parent_hex = "%016x" % parent_id if parent_id else None  # noqa: UP031
        flags = sc.trace_flags
        sampled = flags & 0x01
        pairs: list[tuple[str, str]] = []
        append = pairs.append
        for code in self._codes:
            if code == _TRACECONTEXT:
                append((tracecontext.TRACEPARENT, f"00-{trace_hex}-{span_hex}-{_FLAGS_HEX[flags & 0x03]}"))
                state = sc.trace_state
                if state:
                    append((tracecontext.TRACESTATE, state.to_header()))
            elif code == _B3MULTI:
                append((b3.TRACE_ID, trace_hex))
                append((b3.SPAN_ID, span_hex))
                if parent_hex is not None:
                    append((b3.PARENT_SPAN_ID, parent_hex))
                append((b3.SAMPLED, "1" if sampled else "0"))
            elif code == _B3SINGLE:
                suffix = "" if parent_hex is None else "-" + parent_hex
                append((b3.SINGLE, f"{trace_hex}-{span_hex}-{'1' if sampled else '0'}{suffix}"))
            elif code == _JAEGER:
                append((jaeger.TRACE_HEADER,
                        f"{trace_hex}:{span_hex}:{parent_hex or _NO_PARENT}:{'01' if sampled else '00'}"))
            else:  # OT: a 64-bit trace id goes out as 16 hex, the low half of the zero-padded 32
                append((ottrace.TRACE_ID, trace_hex[16:] if trace_id >> 64 == 0 else trace_hex))
                append((ottrace.SPAN_ID, span_hex))
                append((ottrace.SAMPLED, "true" if sampled else "false"))
        if request_id is not None and requestid.sendable(request_id):
            append((requestid.HEADER, request_id))
        return tuple(pairs)

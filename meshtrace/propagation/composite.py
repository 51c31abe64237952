"""MeshPropagator: reads every trace format (first valid wins), writes every configured one.

Theory of operation. Each format module knows its own grammar; this one composes them. Extraction takes the
cheapest path that gives the same answer: a WSGI environ handed to `extract_environ` is read in place by
`environ` (Envoy's B3 headers fused into one pass); a plain dict of lowercase names holding one trace format
is read by `_plain_extract`; any other mapping is lowered once and only the parsers of formats present run; a
foreign getter is asked for every name. Injection renders a plain context (valid, decided, no debug, no
baggage) in one pass through `_plain_inject`, remembered for a span that injects again; a CLIENT span a client
integration has just started is rendered by a function compiled per kind of span context, whose per-parent part
its siblings (same context) share (`child_keyed`); a dict carrier is written with a single update; anything
else goes through each format's renderer. Property tests hold every shortcut equal to the general path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, cast

from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators import textmap
from opentelemetry.trace import Span, SpanContext, TraceFlags

from meshtrace.errors import ConfigError
from meshtrace.propagation import _prefixed, b3, baggage, jaeger, ottrace, requestid, tracecontext
from meshtrace.propagation._common import SAMPLED, Extracted, Headers, Outgoing, emit
from meshtrace.propagation._getter import CaseInsensitiveGetter
from meshtrace.propagation._plain_extract import extract_plain
from meshtrace.propagation._plain_inject import Keyed, PlainInjector
from meshtrace.propagation.environ import environ_headers, extract_from_environ

__all__ = ["DEFAULT_FORMATS", "ENV_VAR", "MeshPropagator", "parse_formats"]

ENV_VAR: Final = "MESHTRACE_PROPAGATORS"
DEFAULT_FORMATS: Final[tuple[str, ...]] = ("tracecontext", "baggage", "b3multi", "b3", "jaeger", "ottrace")
_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "b3single": ("b3",),
    "w3c": ("tracecontext", "baggage"),
}

_Render = Callable[[Outgoing], Iterator[tuple[str, str]]]
_RENDERERS: Final[dict[str, _Render]] = {
    "tracecontext": tracecontext.render,
    "baggage": baggage.render,
    "b3multi": b3.render_multi,
    "b3": b3.render_single,
    "jaeger": jaeger.render,
    "ottrace": ottrace.render,
}
# REFERENCE.md §1 precedence: the first format that yields a context (or a bare decision) wins.
_PRECEDENCE: Final[tuple[Callable[[Headers], Extracted | None], ...]] = (
    tracecontext.parse,
    b3.parse_single,
    b3.parse_multi,
    jaeger.parse,
    ottrace.parse,
)
_ALL_FIELDS: Final = frozenset(
    {
        tracecontext.TRACEPARENT,
        tracecontext.TRACESTATE,
        baggage.HEADER,
        b3.SINGLE,
        b3.TRACE_ID,
        b3.SPAN_ID,
        b3.PARENT_SPAN_ID,
        b3.SAMPLED,
        b3.FLAGS,
        jaeger.TRACE_HEADER,
        ottrace.TRACE_ID,
        ottrace.SPAN_ID,
        ottrace.SAMPLED,
        requestid.HEADER,
    }
)
# The headers without which each parser of _PRECEDENCE finds nothing (it returns None): skipping it then
# changes no result. Same order as _PRECEDENCE.
_TRIGGERS: Final[tuple[tuple[Callable[[Headers], Extracted | None], frozenset[str]], ...]] = (
    (tracecontext.parse, frozenset({tracecontext.TRACEPARENT})),
    (b3.parse_single, frozenset({b3.SINGLE})),
    (b3.parse_multi, frozenset({b3.TRACE_ID, b3.SPAN_ID, b3.PARENT_SPAN_ID, b3.SAMPLED, b3.FLAGS})),
    (jaeger.parse, frozenset({jaeger.TRACE_HEADER})),
    (ottrace.parse, frozenset({ottrace.TRACE_ID, ottrace.SPAN_ID})),
)
_BAGGAGE_PREFIXES: Final = (jaeger.BAGGAGE_PREFIX, ottrace.BAGGAGE_PREFIX)
_CASE_GETTER: Final = CaseInsensitiveGetter()


def parse_formats(formats: Sequence[str] | str | None) -> tuple[str, ...]:
    """Canonical format names, in order, without duplicates; ConfigError names the bad value and its source.

    None reads MESHTRACE_PROPAGATORS (a comma list; unset or blank means every format). `none` alone means
    no trace format (x-request-id is still copied).
    """
    if formats is None:
        raw = os.environ.get(ENV_VAR, "")
        if not raw.strip():
            return DEFAULT_FORMATS
        names: Sequence[str] = raw.split(",")
        source = f"environment variable {ENV_VAR}"
    else:
        names = formats.split(",") if isinstance(formats, str) else formats
        source = "argument formats"
    chosen: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"format names must be strings, got {name!r}", source=source)
        key = name.strip().lower()
        if not key or key == "none":
            continue
        expanded = _ALIASES.get(key, (key,))
        for canonical in expanded:
            if canonical not in _RENDERERS:
                known = ", ".join([*DEFAULT_FORMATS, *_ALIASES, "none"])
                raise ConfigError(f"unknown propagation format {name.strip()!r} (known: {known})", source=source)
            if canonical not in chosen:
                chosen.append(canonical)
    return tuple(chosen)


class MeshPropagator(textmap.TextMapPropagator):
    """Every format in, the configured formats out, so mixed fleets keep one trace.

    Extraction always understands every format, in the precedence `traceparent`, `b3`, `X-B3-*`,
    `uber-trace-id`, `ot-tracer-*`; it also collects baggage from `baggage`, `uberctx-*` and `ot-baggage-*`
    (W3C wins on a clash) and `x-request-id`. Injection writes each configured format from the one current
    span context, plus `x-request-id`. Malformed headers are ignored, never raised.
    """

    def __init__(self, formats: Sequence[str] | None = None) -> None:
        self._formats = parse_formats(formats)
        self._renderers: tuple[_Render, ...] = (*(_RENDERERS[name] for name in self._formats), requestid.render)
        self._plain = PlainInjector(self._formats)

    @property
    def formats(self) -> tuple[str, ...]:
        return self._formats

    def __repr__(self) -> str:
        return f"MeshPropagator(formats={list(self._formats)!r})"

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] | None = None,
    ) -> Context:
        context = Context() if context is None else context
        if type(carrier) is dict and (
            getter is None or getter is textmap.default_getter or type(getter) is CaseInsensitiveGetter
        ):
            # Fastest: a dict of lowercase names with one trace format in it (see _plain_extract).
            plain = extract_plain(cast(dict[str, Any], carrier), context)
            if plain is not None:
                return plain
        headers = Headers(carrier, getter)
        lowered = headers.lowered
        if lowered is None:
            return _extract(headers, context, None, prefixed=True)  # a foreign getter: ask for every name
        # Next fastest (any other mapping read whole: mixed-case keys, several formats, baggage): a request
        # carries a handful of headers, so one C-level intersection tells which formats can find anything; the
        # parsers of absent formats, which would each return None, are skipped. The prefix scan for
        # `uberctx-`/`ot-baggage-` only runs when some header is not one of the fixed names.
        present = _ALL_FIELDS.intersection(lowered)
        prefixed = len(present) < len(lowered) and any(name.startswith(_BAGGAGE_PREFIXES) for name in lowered)
        if not present and not prefixed:
            return context
        return _extract(headers, context, present, prefixed=prefixed)

    def extract_environ(self, environ: Mapping[str, Any], context: Context | None = None) -> Context:
        """`extract` of the headers of a WSGI environ (`X-B3-TraceId` is `HTTP_X_B3_TRACEID`), read from it
        directly: what a WSGI server integration calls, cheaper than building a carrier first."""
        context = Context() if context is None else context
        found = extract_from_environ(environ, context)
        if found is not None:
            return found
        return self.extract(environ_headers(environ), context, _CASE_GETTER)

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        pairs = self._plain.pairs(context)
        if pairs is None:
            out = Outgoing.of(context)
            for render in self._renderers:
                emit(carrier, setter, render(out))
        elif setter is textmap.default_setter and type(carrier) is dict:
            cast(dict[str, str], carrier).update(pairs)  # one C call instead of a setter call per header
        else:
            for name, value in pairs:
                setter.set(carrier, name, value)

    def headers_for(self, context: Context | None = None) -> tuple[tuple[str, str], ...]:
        """What `inject` writes for `context` (default: current), as (lowercase name, value) pairs.

        For callers that write a carrier faster than a setter can (a client library's own header type):
        the result may be shared with other calls and must not be mutated.
        """
        pairs = self._plain.pairs(context)
        if pairs is not None:
            return pairs
        carrier: dict[str, str] = {}
        self.inject(carrier, context)
        return tuple(carrier.items())

    def child_headers(self, context: Context, span: Span, inner: Context | None = None) -> tuple[tuple[str, str], ...]:
        """`headers_for` a copy of `context` with `span` as its current span (`inner`, when the caller has made
        that context already), `span` having just been started under `context`: what a client integration sends
        for its new CLIENT span. See `child_keyed`, which says the same keyed by name."""
        return tuple([pair for _, pair in self.child_keyed(context, span, inner)])

    def child_keyed(self, context: Context, span: Span, inner: Context | None = None) -> Keyed:
        """`child_headers`, each (lowercase name, value) pair keyed by its name: `((name, (name, value)), ...)`,
        what a header store keyed by lowered names (requests' CaseInsensitiveDict) takes in one update. Rendered
        by a function compiled per kind of span context; siblings of `span` (same parent context) reuse its
        per-parent part without reading the context again. The result may be shared and must not be mutated."""
        keyed = self._plain.child_keyed(context, span, inner)
        if keyed is not None:
            return keyed
        pairs = self.headers_for(trace.set_span_in_context(span, context) if inner is None else inner)
        return tuple([(name, (name, value)) for name, value in pairs])

    @property
    def fields(self) -> set[str]:
        return set(_ALL_FIELDS)


def _extract(headers: Headers, context: Context, present: frozenset[str] | None, *, prefixed: bool) -> Context:
    """The composite extract; `present` (when known) is the set of fixed header names the carrier has."""
    if present is None:
        parsers = _PRECEDENCE
    else:
        parsers = tuple(parse for parse, names in _TRIGGERS if not names.isdisjoint(present))
    for index, parse in enumerate(parsers):
        found = parse(headers)
        if found is not None:
            context = _enrich(found, headers, parsers[index + 1:]).apply(context)
            break
    members = baggage.parse(headers) if present is None or baggage.HEADER in present else []
    if prefixed:
        # W3C baggage wins a clash; header-per-entry formats lose the key's case, so compare without it.
        taken = {key.lower() for key, _, _ in members}
        context = _extract_prefixed_baggage(headers, context, taken)
    context = baggage.apply(members, context)
    if present is None or requestid.HEADER in present:
        context = requestid.extract(headers, context)
    return context


def _enrich(
    found: Extracted, headers: Headers, others: tuple[Callable[[Headers], Extracted | None], ...]
) -> Extracted:
    """Add what the winning format cannot say (debug, the parent span id) from lower formats that carry
    the very same span: we inject all formats at once, and `traceparent` alone would lose a B3/Jaeger debug."""
    sc = found.span_context
    if sc is None or (found.debug and found.parent_span_id is not None):
        return found
    debug, parent = found.debug, found.parent_span_id
    for parse in others:
        other = parse(headers)
        if other is None or other.span_context is None:
            continue
        if (other.span_context.trace_id, other.span_context.span_id) != (sc.trace_id, sc.span_id):
            continue
        debug = debug or other.debug
        parent = parent if parent is not None else other.parent_span_id
    if (debug, parent) == (found.debug, found.parent_span_id):
        return found
    if debug and not sc.trace_flags.sampled:
        sc = SpanContext(sc.trace_id, sc.span_id, True, TraceFlags(sc.trace_flags | SAMPLED), sc.trace_state)
    return found._replace(span_context=sc, debug=debug, parent_span_id=parent, deferred=found.deferred and not debug)


def _extract_prefixed_baggage(headers: Headers, context: Context, taken: set[str]) -> Context:
    """`ot-baggage-*` then `uberctx-*`, so Jaeger wins a clash between the two; keys in `taken` are skipped."""
    for pairs in (ottrace.parse_baggage(headers), jaeger.parse_baggage(headers)):
        fresh = ((key, value) for key, value in pairs if key not in taken)
        for key, value in _prefixed.bounded(fresh):
            context = otel_baggage.set_baggage(key, value, context)
    return context

"""Plumbing shared by every format: one header reader per extract, one snapshot of the context per inject."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Final, NamedTuple

from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.context import Context, create_key, get_value
from opentelemetry.propagators import textmap
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from meshtrace.propagation._context import (
    DEBUG_KEY,
    DEFERRED_KEY,
    SAMPLING_HINT_KEY,
    get_sampling_hint,
    is_debug,
    is_sampling_deferred,
)
from meshtrace.propagation._getter import CaseInsensitiveGetter, values_of

__all__ = [
    "SAMPLED",
    "Extracted",
    "FormatPropagator",
    "Headers",
    "Outgoing",
    "apply_found",
    "emit",
    "header_token",
    "remote_context",
    "visible_value",
]

_logger = logging.getLogger("meshtrace.propagation")

SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
RANDOM_FLAG: Final = 0x02  # W3C trace-context level 2: the trace id's right 7 bytes are random
MAX_TRACE_ID: Final = (1 << 128) - 1
MAX_SPAN_ID: Final = (1 << 64) - 1

# The context key OpenTelemetry keeps the current span under, learnt through the public API (it is private).
_SPAN_KEY: Final = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))

# What the extracted remote span's own parent was (B3 ParentSpanId, Jaeger parent), keyed by the remote
# span id so that a child span started later in the same context never inherits its grandparent's id.
_REMOTE_PARENT = create_key("meshtrace-remote-parent")

# Token characters (RFC 9110): what may follow `uberctx-` / `ot-baggage-` in a header name.
_TOKEN_CHARS: Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_VISIBLE_CHARS: Final = frozenset(chr(c) for c in range(0x20, 0x7F)) | {"\t"}


def header_token(name: str) -> bool:
    """True when `name` can be (part of) an HTTP header name."""
    return bool(name) and _TOKEN_CHARS.issuperset(name)


def visible_value(value: str) -> bool:
    """True for a header value that cannot smuggle a line break or a non-ASCII byte."""
    # Printable ASCII is exactly 0x20-0x7E: two C-level checks settle the common case, the set only tabs.
    return (value.isascii() and value.isprintable()) or _VISIBLE_CHARS.issuperset(value)


class Headers:
    """Case-insensitive, never-raising access to one carrier for the duration of one extract.

    For a Mapping read through OTel's default getter or ours, the keys are lower-cased once (a single pass)
    so that each of the dozen look-ups a composite extract makes is one dict hit. Any other getter (WSGI,
    gRPC metadata…) is asked with lowercase names, which is what OTel's case-insensitive getters expect.
    """

    __slots__ = ("_carrier", "_getter", "_lower")

    def __init__(self, carrier: Any, getter: textmap.Getter[Any] | None) -> None:
        self._carrier = carrier
        self._getter = getter
        self._lower: dict[str, Any] | None = None
        if isinstance(carrier, Mapping) and (
            getter is None or getter is textmap.default_getter or type(getter) is CaseInsensitiveGetter
        ):
            lower: dict[str, Any] = {}
            for name, value in carrier.items():
                if isinstance(name, str):
                    lower.setdefault(name.lower(), value)  # first spelling wins, as documented
            self._lower = lower

    @property
    def lowered(self) -> dict[str, Any] | None:
        """Every header by lowercase name (first spelling wins), when the carrier could be read whole."""
        return self._lower

    def values(self, name: str) -> list[str] | None:
        """All values of header `name` (lowercase), stripped of optional whitespace; None when absent."""
        if self._lower is not None:
            found = values_of(self._lower.get(name))
        else:
            try:
                found = values_of(self._getter.get(self._carrier, name)) if self._getter else None
            except Exception:  # a foreign getter failing must not break the request
                _logger.debug("getter failed for %r", name, exc_info=True)
                return None
        if not found:
            return None
        return [value.strip(" \t") for value in found]

    def first(self, name: str) -> str | None:
        """The first value of header `name`: a repeated header is resolved by taking the first."""
        if self._lower is not None:
            # Fast path: most names looked up are absent, and most present ones are a single string.
            value = self._lower.get(name)
            if value is None:
                return None
            if isinstance(value, str):
                return value.strip(" \t")
        found = self.values(name)
        return found[0] if found else None

    def prefixed(self, *prefixes: str) -> Iterator[tuple[str, str, str]]:
        """(prefix, lowercase rest of the name, first value) for every header starting with a prefix."""
        if self._lower is not None:
            names: list[str] = list(self._lower)
        else:
            try:
                names = [n for n in self._getter.keys(self._carrier) if isinstance(n, str)] if self._getter else []
            except Exception:
                _logger.debug("getter.keys failed", exc_info=True)
                return
        for name in names:
            lowered = name.lower()
            for prefix in prefixes:
                if lowered.startswith(prefix) and len(lowered) > len(prefix):
                    value = self.first(name if self._lower is None else lowered)
                    if value is not None:
                        yield prefix, lowered[len(prefix):], value
                    break


class Extracted(NamedTuple):
    """What one format found: a valid remote span context and/or a bare sampling decision.

    A NamedTuple rather than a frozen dataclass, like Outgoing: one is built per extracted request.
    """

    span_context: SpanContext | None = None
    parent_span_id: int | None = None
    debug: bool = False
    deferred: bool = False
    sampling_hint: bool | None = None

    def apply(self, context: Context) -> Context:
        entries: dict[str, object] = {}
        self.add_to(entries)
        return Context({**context, **entries}) if entries else context  # one copy, not one per set_value

    def add_to(self, entries: dict[str, object]) -> None:
        """Put what this says into `entries` (context keys to values), as the setters would."""
        if self.span_context is not None:
            entries[_SPAN_KEY] = NonRecordingSpan(self.span_context)
            if self.parent_span_id is not None:
                entries[_REMOTE_PARENT] = (self.span_context.span_id, self.parent_span_id)
        if self.debug:
            entries[DEBUG_KEY] = True
            entries[SAMPLING_HINT_KEY] = True  # a debug trace is forced into the sample
        elif self.sampling_hint is not None:
            entries[SAMPLING_HINT_KEY] = self.sampling_hint
        if self.deferred:
            entries[DEFERRED_KEY] = True


_FLAGS: Final = tuple(TraceFlags(bits) for bits in range(4))  # immutable: shared rather than built per request


def remote_context(
    trace_id: int,
    span_id: int,
    sampled: bool,
    *,
    parent_span_id: int | None = None,
    debug: bool = False,
    deferred: bool = False,
    trace_state: TraceState | None = None,
    random: bool = False,
) -> Extracted | None:
    """An Extracted for ids already parsed from hex, or None when either id is zero (invalid)."""
    if not (0 < trace_id <= MAX_TRACE_ID and 0 < span_id <= MAX_SPAN_ID):
        return None
    flags = _FLAGS[(1 if sampled or debug else 0) | (RANDOM_FLAG if random else 0)]
    span_context = SpanContext(trace_id, span_id, True, flags, trace_state)
    return Extracted(span_context, parent_span_id or None, debug, deferred and not debug)


class Outgoing(NamedTuple):
    """Everything a format may write, read from the context once per inject.

    A NamedTuple rather than a frozen dataclass: it is built on every outbound call, and a frozen
    dataclass pays an `object.__setattr__` per field.
    """

    context: Context | None
    span_context: SpanContext
    parent_span_id: int | None
    debug: bool
    deferred: bool
    sampling_hint: bool | None
    baggage: Mapping[str, object]

    @property
    def valid(self) -> bool:
        return self.span_context.is_valid

    @property
    def sampled(self) -> bool:
        return self.debug or self.span_context.trace_flags.sampled

    @classmethod
    def of(cls, context: Context | None) -> Outgoing:
        span = trace.get_current_span(context)
        span_context = span.get_span_context()
        debug = is_debug(context)
        parent_span_id: int | None = None
        parent = getattr(span, "parent", None)  # SDK spans know their parent; the API type does not say so
        if isinstance(parent, SpanContext) and parent.is_valid:
            parent_span_id = parent.span_id
        else:
            remembered = get_value(_REMOTE_PARENT, context)
            if isinstance(remembered, tuple) and remembered[0] == span_context.span_id:
                parent_span_id = remembered[1]
        # A deferred decision only describes the remote span it arrived with; a local child has decided.
        deferred = span_context.is_remote and not debug and is_sampling_deferred(context)
        return cls(
            context, span_context, parent_span_id, debug, deferred, get_sampling_hint(context),
            otel_baggage.get_all(context),
        )


def emit(carrier: Any, setter: textmap.Setter[Any], pairs: Iterator[tuple[str, str]]) -> None:
    for name, value in pairs:
        setter.set(carrier, name, value)


class FormatPropagator(textmap.TextMapPropagator):
    """One header format as an OpenTelemetry propagator; a format says only how it reads and what it writes.

    The OTel plumbing (carrier and getter wrapping, the context snapshot, the setter loop) is the same for every
    format, so it lives here once and each format module stays about its own header grammar.
    """

    FIELDS: ClassVar[frozenset[str]] = frozenset()

    def read(self, headers: Headers, context: Context) -> Context:
        """The context with whatever this format found in `headers` applied (unchanged when nothing valid)."""
        raise NotImplementedError

    def write(self, out: Outgoing) -> Iterator[tuple[str, str]]:
        """The (header, value) pairs this format sends for the context snapshot `out`."""
        raise NotImplementedError

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] | None = None,
    ) -> Context:
        return self.read(Headers(carrier, getter), Context() if context is None else context)

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        emit(carrier, setter, self.write(Outgoing.of(context)))

    @property
    def fields(self) -> set[str]:
        return set(self.FIELDS)


def apply_found(found: Extracted | None, context: Context) -> Context:
    return context if found is None else found.apply(context)

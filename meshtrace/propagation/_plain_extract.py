"""Extraction from a plain header dict in a few look-ups, for the carriers nearly every request brings.

Theory of operation. The servers hand MeshPropagator a small `dict` of lowercase header names (the WSGI
integration builds one; so do most callers of `meshtrace.propagation.extract`). `extract_plain` checks that
shape with C-level string operations (every key lowercase, no `uberctx-`/`ot-baggage-` header), intersects the
keys with the names any format reads, and looks the resulting set up in a table that says which single trace
format can answer. Only that format's values are read, with plain dict look-ups, and handed to the same value
parsers the general path uses; what it found and the `x-request-id` go into the context in one copy. A carrier
that is not that shape (keys in another case, non-string values, baggage, or headers of several trace formats,
whose precedence and cross-format enrichment the general path settles) returns None: the caller then takes the
general path, which a property test holds equal to this one.
"""

from __future__ import annotations

from typing import Any, Final

from opentelemetry.context import Context

from meshtrace.propagation import b3, baggage, jaeger, ottrace, requestid, tracecontext
from meshtrace.propagation._common import Extracted
from meshtrace.propagation._context import REQUEST_ID_KEY

__all__ = ["NAMES", "extract_plain"]

_NONE, _TRACECONTEXT, _B3SINGLE, _B3MULTI, _JAEGER, _OTTRACE, _GENERAL = range(7)
# The headers that make each trace format's parser look; `tracestate` alone makes none of them look.
_FORMAT_OF: Final[dict[str, int]] = {
    tracecontext.TRACEPARENT: _TRACECONTEXT,
    b3.SINGLE: _B3SINGLE,
    b3.TRACE_ID: _B3MULTI,
    b3.SPAN_ID: _B3MULTI,
    b3.PARENT_SPAN_ID: _B3MULTI,
    b3.SAMPLED: _B3MULTI,
    b3.FLAGS: _B3MULTI,
    jaeger.TRACE_HEADER: _JAEGER,
    ottrace.TRACE_ID: _OTTRACE,
    ottrace.SPAN_ID: _OTTRACE,
}
#: Every fixed header name any format reads.
NAMES: Final = frozenset({*_FORMAT_OF, tracecontext.TRACESTATE, ottrace.SAMPLED, baggage.HEADER, requestid.HEADER})
_MARKS: Final = (jaeger.BAGGAGE_PREFIX, ottrace.BAGGAGE_PREFIX)

# Which plan a set of present names gets: at most 2**14 sets exist, and a service sees a handful.
_plans: dict[frozenset[str], int] = {}


def _plan(present: frozenset[str]) -> int:
    if baggage.HEADER in present:
        return _GENERAL  # W3C baggage: members, limits and raw text are the general path's business
    codes = {_FORMAT_OF[name] for name in present if name in _FORMAT_OF}
    if len(codes) > 1:
        return _GENERAL
    return codes.pop() if codes else _NONE


def extract_plain(carrier: dict[str, Any], context: Context) -> Context | None:
    """`context` with what `carrier` says applied, or None when the carrier is not a plain one."""
    try:
        names = "\n".join(carrier)
    except TypeError:
        return None  # a key that is not a string
    if not names.islower() or _MARKS[0] in names or _MARKS[1] in names:
        return None
    present = NAMES.intersection(carrier)
    if not present:
        return context
    plan = _plans.get(present)
    if plan is None:
        plan = _plans[present] = _plan(present)
    if plan == _GENERAL:
        return None
    try:
        # Each value stripped of optional whitespace, as Headers.first gives it.
        values: dict[str, str] = {name: carrier[name].strip(" \t") for name in present}
    except (AttributeError, TypeError):
        return None  # several values (a list) or one that is not text: Headers knows how to read those
    get = values.get
    found: Extracted | None = None
    if plan == _B3MULTI:
        found = b3.parse_multi_values(get(b3.TRACE_ID), get(b3.SPAN_ID), get(b3.PARENT_SPAN_ID), get(b3.SAMPLED),
                                      get(b3.FLAGS))
    elif plan == _TRACECONTEXT:
        state = get(tracecontext.TRACESTATE)
        found = tracecontext.parse_values([values[tracecontext.TRACEPARENT]], None if state is None else [state])
    elif plan == _B3SINGLE:
        found = b3.parse_single_value(get(b3.SINGLE))
    elif plan == _JAEGER:
        found = jaeger.parse_value(get(jaeger.TRACE_HEADER))
    elif plan == _OTTRACE:
        found = ottrace.parse_values(get(ottrace.TRACE_ID), get(ottrace.SPAN_ID), get(ottrace.SAMPLED))
    entries: dict[str, object] = {}
    if found is not None:
        found.add_to(entries)
    if requestid.HEADER in present:
        request_id = requestid.accept(get(requestid.HEADER))
        if request_id is not None:
            entries[REQUEST_ID_KEY] = request_id
    return Context({**context, **entries}) if entries else context

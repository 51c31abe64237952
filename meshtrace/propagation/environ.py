"""Extraction straight from a WSGI environ, for the trace headers a mesh sends (Envoy's B3 above all).

Theory of operation. A WSGI server hands a request's headers over as environ entries (`X-B3-TraceId` is
`HTTP_X_B3_TRACEID`). `extract_from_environ` finds the fixed header names any format reads with one C-level
intersection of the environ with their environ keys, and the prefixed baggage headers (`uberctx-*`,
`ot-baggage-*`) with one substring test on the joined keys; the set found picks a plan. Servers build the
environ's keys in the same order request after request, so all of that is cached per tuple of keys, and a
request costs one tuple and one dict look-up before its values are read. No trace header: the context comes
back unchanged. `X-B3-*` alone, as Istio sends it,
is read right here, with no intermediate dict or Extracted: the raw ids checked by one regex and parsed by
`int`, one SpanContext (built as the tuple it is), and one context copy holding the span, the remote parent and
the request id. Any value the exact common shapes do not cover (surrounding whitespace, uppercase, zero
ids, legacy `true`, `X-B3-Flags`, a value that is not a string) and every other single format go to the
plain-dict path with a dict of just the headers present; W3C or prefixed baggage and several formats at
once return None, for the caller's general path over `environ_headers`. tests/propagation holds the result
equal to extraction through a getter that reads the environ name by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.trace import DEFAULT_TRACE_STATE, NonRecordingSpan, SpanContext

from meshtrace.propagation import b3, requestid
from meshtrace.propagation._common import _FLAGS, _REMOTE_PARENT, _SPAN_KEY
from meshtrace.propagation._context import DEFERRED_KEY, REQUEST_ID_KEY
from meshtrace.propagation._plain_extract import _B3MULTI, _GENERAL, _NONE, NAMES, _plan, extract_plain

__all__ = ["environ_headers", "environ_key", "extract_from_environ"]


def environ_key(name: str) -> str:
    """The WSGI environ key of the header `name` (`X-B3-TraceId` -> `HTTP_X_B3_TRACEID`)."""
    return "HTTP_" + name.upper().replace("-", "_")


#: environ key -> the lowercase header name, for every fixed name a format reads.
_NAME_OF: Final[dict[str, str]] = {environ_key(name): name for name in NAMES}
_KEYS: Final = frozenset(_NAME_OF)
_BAGGAGE_MARKS: Final = ("\nHTTP_UBERCTX_", "\nHTTP_OT_BAGGAGE_")
_TRACE_ID, _SPAN_ID, _SAMPLED = environ_key(b3.TRACE_ID), environ_key(b3.SPAN_ID), environ_key(b3.SAMPLED)
_PARENT_SPAN_ID, _REQUEST_ID = environ_key(b3.PARENT_SPAN_ID), environ_key(requestid.HEADER)
_DEBUG = environ_key(b3.FLAGS)
#: A B3 trace id and span id joined by a newline (which no hex id contains, so the split is unambiguous).
_IDS: Final = re.compile(r"(?:[0-9a-f]{32}|[0-9a-f]{16})\n[0-9a-f]{16}")
#: The exact `X-B3-Sampled` values read here, and the flags each means (a legacy `true` takes the plain path).
_DECISIONS: Final = {"1": _FLAGS[1], "0": _FLAGS[0]}

# SpanContext is a tuple (trace id, span id, remote, flags, state, valid) whose Python-level __new__ defaults
# and re-checks what `_b3_multi` has just checked. Where the installed API lays it out that way (checked once,
# here), the tuple is built directly; elsewhere the constructor is called.
_new_tuple = tuple.__new__
_DIRECT: Final = tuple(SpanContext(1, 1, True, _FLAGS[1], None)) == (1, 1, True, _FLAGS[1], DEFAULT_TRACE_STATE, True)

# What a layout of environ keys (the keys in order, as a server builds them) calls for: None for the general
# path, else the plan and the fixed-name keys present. A server sends the same few layouts again and again,
# and hashing the key tuple (the strings' hashes are cached) is cheaper than the intersection and the
# baggage-prefix scan it stands for. Bounded: a client inventing header names only empties it now and then.
_Layout = tuple[int, tuple[str, ...]] | None
_layouts: dict[tuple[Any, ...], _Layout] = {}
_MAX_LAYOUTS = 512
_NO_HEADERS: Final[_Layout] = (_NONE, ())


def _layout(environ: Mapping[str, Any]) -> _Layout:
    try:
        keys = "\n" + "\n".join(environ)  # one C-level pass instead of a startswith per key
    except TypeError:
        return None  # a key that is not a string: the general path knows what to skip
    if _BAGGAGE_MARKS[0] in keys or _BAGGAGE_MARKS[1] in keys:
        return None  # prefixed baggage: the general path's business
    present = _KEYS.intersection(environ)
    if not present:
        return _NO_HEADERS
    plan = _plan(frozenset(_NAME_OF[key] for key in present))
    return None if plan == _GENERAL else (plan, tuple(sorted(present)))


def extract_from_environ(environ: Mapping[str, Any], context: Context) -> Context | None:
    """`context` with what the environ's headers say applied, or None when the general path must answer."""
    keys = tuple(environ)
    try:
        layout = _layouts[keys]
    except KeyError:
        layout = _layout(environ)
        if len(_layouts) >= _MAX_LAYOUTS:
            _layouts.clear()
        _layouts[keys] = layout
    if layout is None:
        return None
    plan, present = layout
    if not present:
        return context
    if plan == _B3MULTI and _DEBUG not in present:
        found = _b3_multi(environ, context)
        if found is not None:
            return found
    return extract_plain({_NAME_OF[key]: environ[key] for key in present}, context)


def _b3_multi(environ: Mapping[str, Any], context: Context) -> Context | None:
    """`X-B3-TraceId`, `-SpanId`, optional `-ParentSpanId`, `-Sampled` 1/0 or absent, and `x-request-id`, in the
    exact shapes Envoy sends; None for anything else (the plain path then reads them)."""
    get = environ.get
    trace_hex, span_hex, sampled = get(_TRACE_ID), get(_SPAN_ID), get(_SAMPLED)
    if type(trace_hex) is not str or type(span_hex) is not str:
        return None
    deferred = sampled is None
    flags = _FLAGS[0] if deferred else _DECISIONS.get(sampled) if type(sampled) is str else None
    if flags is None or _IDS.fullmatch(f"{trace_hex}\n{span_hex}") is None:  # one regex call for both ids
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    if _DIRECT:
        span_context = _new_tuple(SpanContext, (trace_id, span_id, True, flags, DEFAULT_TRACE_STATE, True))
    else:  # pragma: no cover - an SDK whose SpanContext is laid out differently
        span_context = SpanContext(trace_id, span_id, True, flags, None)
    entries: dict[str, object] = {_SPAN_KEY: NonRecordingSpan(span_context)}
    parent_hex = get(_PARENT_SPAN_ID)
    if parent_hex is not None:
        if type(parent_hex) is not str or b3.SPAN_ID_PATTERN.fullmatch(parent_hex) is None:
            return None
        parent = int(parent_hex, 16)
        if not parent:
            return None
        entries[_REMOTE_PARENT] = (span_id, parent)
    if deferred:
        entries[DEFERRED_KEY] = True
    request_id = get(_REQUEST_ID)
    if request_id is not None:
        if type(request_id) is not str:
            return None
        request_id = request_id.strip(" \t")
        # Printable ASCII within the bound is what requestid.accept keeps; anything else it judges itself.
        if not (0 < len(request_id) <= requestid.MAX_LENGTH and request_id.isascii() and request_id.isprintable()):
            request_id = requestid.accept(request_id)
        if request_id is not None:
            entries[REQUEST_ID_KEY] = request_id
    return Context({**context, **entries}) if context else Context(entries)


#: environ key -> the lowercase header name an environ getter would read it under, or None (not a header, or
#: a spelling such a getter never asks for). Servers send the same few dozen keys, so this stays small.
_header_names: dict[str, str | None] = {}
_MAX_HEADER_NAMES = 1024


def _header_name(key: str) -> str | None:
    if not key.startswith("HTTP_"):
        return None
    name = key[5:].lower().replace("_", "-")
    # Only the exact inverse of the `HTTP_` + upper-case mapping, so the snapshot holds what a getter finds.
    return name if environ_key(name) == key else None


def environ_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers by lowercase name, read from a WSGI environ in one pass (string values only)."""
    names = _header_names
    headers: dict[str, str] = {}
    for key, value in environ.items():
        name = names.get(key, "")
        if name == "":
            name = _header_name(key) if isinstance(key, str) else None
            if len(names) < _MAX_HEADER_NAMES:
                names[key] = name
        if name is not None and isinstance(value, str) and name not in headers:
            headers[name] = value
    return headers

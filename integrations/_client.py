"""Client spans for HTTP clients (requests, httpx): one CLIENT span per attempt, headers injected.

Theory of operation. `ClientTracer.start(method, url, headers)` returns None when the current context
suppresses instrumentation (the exporter's own calls, or an outer client layer — ours or OpenTelemetry's —
already tracing this call). Otherwise it starts a CLIENT span under the current context, injects every
configured format (plus baggage and `x-request-id`, which ride in the context) with the global propagator,
and attaches a context that holds the span and OpenTelemetry's suppress-HTTP key, so no layer below makes a
second span and code below (hooks, adapters, transports) sees the span as current. `_Call.done(status)` /
`_Call.fail(exc)` detach and end it. The synchronous wrapper (`send_wrapper`) takes the same steps without the
`_Call` object: `ClientTracer.begin` hands back (span, token, ContextVar) and `finish`/`fail` end the call.
Every step is guarded.

Per call, the usual case costs little: with meshtrace's MeshPropagator as the global one, the headers come
from `MeshPropagator.child_keyed` (by a function compiled per kind of span context whose per-parent part runs
once, see meshtrace.propagation.render), keyed by name, and are written by the client library's own
`write_headers` (requests: straight into its header store with one update, when a probe at start-up shows
that gives what its `__setitem__` gives); with OpenTelemetry's default contextvars runtime context, the
context is read, attached and detached on its ContextVar directly (the same calls, without two wrapper frames
each), and the context attached is one copy of the current one with the span and the suppress key; the span
is started on the attribute dict built for it (`start_owned_span`: no copy), and a light span takes the
response status and its end under one lock (`end_with_attribute`).
"""
from __future__ import annotations

from collections.abc import Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshtrace.integrations._base import Switch, log_failure
from meshtrace.integrations._common import (
    CONTEXT_RUNTIME,
    CONTEXT_VAR,
    LEGACY_SUPPRESS_KEY,
    SUPPRESS_HTTP_KEY,
    SUPPRESS_KEY,
    TracerCache,
    detach,
    host_and_port,
)
from meshtrace.lightspan import LightSpan
from meshtrace.propagation import Keyed, MeshPropagator
from meshtrace.spans import set_clean_attributes, start_owned_span, start_span

__all__ = ["Began", "ClientTracer", "WriteHeaders", "begin_call", "fail", "finish", "send_wrapper", "set_each",
           "split_url"]

#: The context key OpenTelemetry keeps the current span under, learnt through the public API (it is private).
_SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context())))
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_ERROR = Status(StatusCode.ERROR)
_STATUS_CODE = "http.response.status_code"

# Writes (lowercase name, (lowercase name, value)) items (MeshPropagator.child_keyed) into a client library's
# header mapping, replacing any spelling.
WriteHeaders = Callable[[Any, Keyed], None]


def set_each(headers: MutableMapping[str, str], keyed: Keyed) -> None:
    """The public way: one `headers[name] = value` per header (what OpenTelemetry's default setter does)."""
    for name, pair in keyed:
        headers[name] = pair[1]


def split_url(url: str) -> tuple[str, str, str]:
    """`(scheme, authority, url without credentials)` for an absolute URL, by string ops (hot path)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url
    slash = rest.find("/")
    authority = rest if slash < 0 else rest[:slash]
    at = authority.rfind("@")
    if at >= 0:
        # url.full must not carry credentials (semantic conventions: redact them)
        authority = authority[at + 1:]
        url = f"{scheme}://REDACTED:REDACTED@{authority}{'' if slash < 0 else rest[slash:]}"
    return scheme.lower(), authority, url


# url -> (url.full, server.address, server.port): a service calls few distinct URLs, and splitting one is a
# dozen string operations per call. Bounded: cleared when full (URLs with ids in them keep coming).
_url_facts: dict[str, tuple[str, str, int | None]] = {}
_MAX_URLS = 1024


def _facts_of(url: str, authority: str | None, scheme: str | None) -> tuple[str, str, int | None]:
    url_scheme, url_authority, full = split_url(url)
    address, port = host_and_port(authority or url_authority, scheme or url_scheme)
    facts = (full, address, port)
    if authority is None and scheme is None:
        if len(_url_facts) >= _MAX_URLS:
            _url_facts.clear()
        _url_facts[url] = facts
    return facts


# What begin() hands to finish()/fail(): the span, the attach token and the ContextVar it was set on (None: the
# API's attach). A tuple rather than an object: one is made per call.
Began = tuple[trace.Span, Any, "ContextVar[otel_context.Context] | None"]


def finish(library: str, began: Began, status_code: int) -> None:
    """Detach the call's context and end its span with the response status; never raises (logged)."""
    span, token, var = began
    try:
        if var is None:
            otel_context.detach(token)
        else:  # detach() inline: this runs on every call
            try:
                var.reset(token)
            except Exception:  # another context's token: the API logs it
                otel_context.detach(token)
        if status_code < 400 and type(span) is LightSpan:
            span.end_with_attribute(_STATUS_CODE, status_code)  # set_attribute + end, under one lock
            return
        if span.is_recording():
            if status_code >= 400:
                set_clean_attributes(span, {_STATUS_CODE: status_code, "error.type": str(status_code)})
                span.set_status(_ERROR)
            else:
                set_clean_attributes(span, {_STATUS_CODE: status_code})
        span.end()
    except Exception:
        log_failure(f"{library}.response")


def fail(library: str, began: Began, exc: BaseException) -> None:
    """Detach the call's context and end its span with the exception the call raised; never raises (logged)."""
    span, token, var = began
    try:
        detach(var, token)
        if span.is_recording():
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
    except Exception:
        log_failure(f"{library}.exception")


class _Call:
    """A call begun by `ClientTracer.start`: `done(status)` or `fail(exc)` ends it."""

    __slots__ = ("_began", "_library")

    def __init__(self, library: str, began: Began) -> None:
        self._library = library
        self._began = began

    @property
    def span(self) -> trace.Span:
        return self._began[0]

    def done(self, status_code: int) -> None:
        finish(self._library, self._began, status_code)

    def fail(self, exc: BaseException) -> None:
        fail(self._library, self._began, exc)


class ClientTracer:
    """Makes the CLIENT spans of one HTTP client library."""

    def __init__(self, library: str, write_headers: WriteHeaders = set_each) -> None:
        self.library = library
        self.tracer = TracerCache(f"meshtrace.integrations.{library}")
        self.write_headers = write_headers

    def start(self, method: str, url: str, headers: MutableMapping[str, Any],
              authority: str | None = None, scheme: str | None = None) -> _Call | None:
        began = self.begin(method, url, headers, authority, scheme)
        return None if began is None else _Call(self.library, began)

    def begin(self, method: str, url: str, headers: MutableMapping[str, Any],
              authority: str | None = None, scheme: str | None = None) -> Began | None:
        """`start`, handing back what `finish`/`fail` take instead of a `_Call` (the synchronous wrapper's way)."""
        var = CONTEXT_VAR if getattr(otel_context, "_RUNTIME_CONTEXT", None) is CONTEXT_RUNTIME else None
        current = otel_context.get_current() if var is None else var.get()
        # is_suppressed() inline: this runs on every call
        if current.get(SUPPRESS_KEY) or current.get(SUPPRESS_HTTP_KEY) or current.get(LEGACY_SUPPRESS_KEY):
            return None
        facts = _url_facts.get(url) if authority is None and scheme is None else None
        full, address, port = _facts_of(url, authority, scheme) if facts is None else facts
        attributes: dict[str, Any]
        if method in _KNOWN_METHODS and address and port is not None:
            attributes = {"http.request.method": method, "url.full": full, "server.address": address,
                          "server.port": port}
        else:
            attributes = {"http.request.method": method, "url.full": full}
            if method not in _KNOWN_METHODS:
                attributes["http.request.method"] = "_OTHER"
                attributes["http.request.method_original"] = method
                method = "HTTP"
            if address:
                attributes["server.address"] = address
            if port is not None:
                attributes["server.port"] = port
        tracer = self.tracer._tracer  # TracerCache.get() inline for the usual case: the tracer is known
        # The dict is this span's alone, its keys ours, its values plain once method and url.full are exact
        # strs (address is lowered, port an int): start_owned_span may keep it uncopied.
        start = start_owned_span if type(method) is str and type(full) is str else start_span
        span = start(tracer if tracer is not None else self.tracer.get(), method, current, SpanKind.CLIENT, attributes)
        # set_span_in_context + set_value(SUPPRESS_HTTP_KEY) in one copy of the context instead of four (measured
        # cheaper than Context(current) filled through dict.__setitem__: the Context call itself costs more).
        inner = otel_context.Context({**current, _SPAN_KEY: span, SUPPRESS_HTTP_KEY: True})
        textmap = propagate.get_global_textmap()
        if type(textmap) is MeshPropagator:
            self.write_headers(headers, textmap.child_keyed(current, span, inner))
        else:
            textmap.inject(headers, inner)
        return span, otel_context.attach(inner) if var is None else var.set(inner), var


# (method, url, headers to inject into) of a client library's request object.
Describe = Callable[[Any], tuple[str, str, MutableMapping[str, str]]]


def begin_call(client: ClientTracer, label: str, describe: Describe, request: Any) -> _Call | None:
    """`client.start` for `request`; None when the call must not be traced or our own code failed (logged)."""
    try:
        return client.start(*describe(request))
    except Exception:
        log_failure(label)
        return None


def send_wrapper(client: ClientTracer, label: str, describe: Describe) -> Any:
    """A wrapt-style factory for a synchronous `send(self, request, ...)`: one CLIENT span per call.

    When our own code fails (logged under `label`) or the call must not be traced, the original runs untraced.
    """
    library = client.library

    def factory(original: Any, switch: Switch) -> Any:
        def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if not switch.on:
                return original(self, request, *args, **kwargs)
            try:  # begin_call() inline, without a _Call: this runs on every call
                method, url, headers = describe(request)
                began = client.begin(method, url, headers)
            except Exception:
                log_failure(label)
                began = None
            if began is None:
                return original(self, request, *args, **kwargs)
            try:
                response = original(self, request, *args, **kwargs)
            except BaseException as exc:
                fail(library, began, exc)
                raise
            finish(library, began, response.status_code)
            return response

        send.__wrapped__ = original  # type: ignore[attr-defined]
        return send

    return factory

"""Server spans for WSGI frameworks (Flask, Django): one SERVER span per request, ended with the body.

Theory of operation. `ServerTracer.start(environ)` decides whether to trace (excluded path, a server span
already active for this request), extracts the incoming context with the global propagator, starts the
span named after the method alone, attaches it as current and returns a `_Request`. The framework wrapper
calls the original app with `_Request.start_response` (which records the status), then `finish(result,
route)`: it detaches the context, names the span `{method} {route}`, sets the response attributes and
returns the body wrapped so the span ends when the server closes it — a streamed body keeps the span open
until its last chunk, a plain one costs a single extra `close()`. `fail(exc)` is the exception path.
Every step is guarded: a failure in telemetry is logged and the request proceeds.

Per request, the usual case costs little: with OpenTelemetry's default contextvars runtime context the context
is read, attached and detached on its ContextVar directly; the start attributes, all str per PEP 3333 (checked
as they are read), become a light span's attribute dict as they are (`start_owned_span`); and the usual answer
(a route, a status below 500) renames the span and adds its two attributes under one lock
(`LightSpan.rename_and_add`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshtrace.integrations._base import Switch, log_failure
from meshtrace.integrations._common import (
    CONTEXT_RUNTIME,
    CONTEXT_VAR,
    CURRENT_SPAN_KEY,
    TracerCache,
    detach,
    host_and_port,
    is_suppressed,
)
from meshtrace.lightspan import LightSpan
from meshtrace.propagation import CaseInsensitiveGetter, MeshPropagator
from meshtrace.propagation.environ import environ_headers, environ_key
from meshtrace.spans import set_clean_attributes, start_owned_span, start_span

__all__ = ["SPAN_KEY", "EnvironGetter", "ServerTracer", "StartResponse", "extract_parent", "wsgi_wrapper"]

#: Where the request's span lives in the WSGI environ: nested apps and exception hooks find it there.
SPAN_KEY = "meshtrace.span"
#: Where a framework hook leaves the matched route template when it learns it outside start_response.
ROUTE_KEY = "meshtrace.route"
#: Set by hooks that already recorded the exception on the span, so the outer wrapper does not repeat it.
EXC_KEY = "meshtrace.exception"

StartResponse = Callable[..., Any]

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_PROTOCOLS = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0", "HTTP/2": "2", "HTTP/2.0": "2", "HTTP/3": "3"}
_ERROR = Status(StatusCode.ERROR)
_SERVER = SpanKind.SERVER  # an Enum member read from its class costs a Python-level lookup each time


class EnvironGetter(Getter[Mapping[str, Any]]):
    """Reads HTTP headers from a WSGI environ (`X-B3-TraceId` is `HTTP_X_B3_TRACEID`)."""

    _names: dict[str, str] = {}  # noqa: RUF012  (a shared cache on purpose)

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        name = self._names.get(key)
        if name is None:
            name = environ_key(key)
            if len(self._names) < 512:
                self._names[key] = name
        value = carrier.get(name)
        if value is None or not isinstance(value, str):
            return None
        return [value]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [name[5:].lower().replace("_", "-") for name in carrier if name.startswith("HTTP_")]


ENVIRON_GETTER = EnvironGetter()


class _Body:
    """The response body, unchanged for the server, that ends the span when the server closes it."""

    __slots__ = ("_inner", "_request")

    def __init__(self, inner: Iterable[bytes], request: _Request) -> None:
        self._inner = inner
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        # The span ends when the last chunk has been produced, or when the server closes the body early,
        # whichever comes first (a test client may read the body without ever closing it).
        yield from self._inner
        self._request.end()

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._request.end()


class _Request:
    """One traced request: its span, the context token, the status the app answered."""

    __slots__ = ("_server", "_start_response", "_var", "ended", "environ", "method", "route", "span", "status",
                 "token")

    def __init__(self, server: ServerTracer, environ: dict[str, Any], method: str, span: trace.Span,  # noqa: PLR0917
                 token: Any, start_response: StartResponse, var: ContextVar[otel_context.Context] | None) -> None:
        self._server = server
        self.environ = environ
        self.method = method
        self.span = span
        self.token = token
        self.status: str | None = None
        self.route: str | None = None
        self.ended = False
        self._start_response = start_response
        self._var = var

    def _detach(self) -> None:
        detach(self._var, self.token)

    def start_response(self, status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
        # Called by the framework while its request state is still there: read the matched route now.
        self.status = status
        try:
            self.route = self._server.route_of(self.environ)
        except Exception:
            log_failure(f"{self._server.framework}.route")
        return self._start_response(status, headers, *args)

    def finish(self, result: Iterable[bytes]) -> Iterable[bytes]:
        """The app returned: set the outcome on the span; end it now or when the body is closed."""
        try:
            self._detach()
            span = self.span
            status = self.status
            route = self.route
            code = int(status[:3]) if status else 0
            if (type(span) is LightSpan and route is not None and 0 < code < 500
                    and span.rename_and_add(f"{self.method} {route}",
                                            {"http.route": route, "http.response.status_code": code})):
                pass  # the usual answer, written in one go (the branch below does the same the general way)
            elif span.is_recording():
                if route is not None:
                    span.update_name(f"{self.method} {route}")
                    set_clean_attributes(span, {"http.route": route, "http.response.status_code": code})
                elif code:
                    set_clean_attributes(span, {"http.response.status_code": code})
                if code >= 500 and EXC_KEY not in self.environ:  # else the exception said it already
                    set_clean_attributes(span, {"error.type": str(code)})
                    span.set_status(_ERROR)
            wrapper = self.environ.get("wsgi.file_wrapper")
            if isinstance(result, list) or (isinstance(wrapper, type) and isinstance(result, wrapper)):
                # Nothing left to stream (or a file the server sends itself): the request is done.
                span.end()
                return result
            return _Body(result, self)
        except Exception:
            log_failure(f"{self._server.framework}.response")
            return result

    def fail(self, exc: BaseException) -> None:
        """The app raised: record it (unless a framework hook already did), end the span."""
        try:
            self._detach()
            span = self.span
            if span.is_recording():
                route = self.route or self._server.route_of(self.environ)
                if route is not None:
                    span.update_name(f"{self.method} {route}")
                    span.set_attribute("http.route", route)
                if self.environ.get(EXC_KEY) is not exc:
                    span.record_exception(exc)
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_attribute("http.response.status_code", 500)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
        except Exception:
            log_failure(f"{self._server.framework}.exception")

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            self.span.end()
        except Exception:
            log_failure(f"{self._server.framework}.end")


def record_exception(environ: Mapping[str, Any], exc: BaseException) -> None:
    """For framework exception hooks: record `exc` on the request's span once, mark the span as failed."""
    try:
        span = environ.get(SPAN_KEY)
        if span is None or environ.get(EXC_KEY) is exc or not span.is_recording():
            return
        span.record_exception(exc)
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        environ[EXC_KEY] = exc  # type: ignore[index]
    except Exception:
        log_failure("server.exception-hook")


_CASE_GETTER = CaseInsensitiveGetter()


class _Fields:
    """A propagator's `fields` as environ keys (`x-b3-traceid` -> `HTTP_X_B3_TRACEID`), computed once."""

    __slots__ = ("keys", "textmap")

    def __init__(self, textmap: object, fields: Iterable[str]) -> None:
        self.textmap = textmap
        self.keys = frozenset(environ_key(name) for name in fields)


_fields_cache: list[_Fields] = []


def _fields_of(textmap: object) -> _Fields | None:
    cached = _fields_cache[0] if _fields_cache else None
    if cached is None or cached.textmap is not textmap:
        try:
            fields = list(textmap.fields)  # type: ignore[attr-defined]
        except Exception:
            return None
        if not fields or not all(isinstance(name, str) for name in fields):
            return None
        cached = _Fields(textmap, fields)
        _fields_cache[:] = [cached]
    return cached


_BAGGAGE_MARKS = ("\nHTTP_UBERCTX_", "\nHTTP_OT_BAGGAGE_")


def _has_prefixed_baggage(environ: Mapping[str, Any]) -> bool:
    try:
        keys = "\n" + "\n".join(environ)  # one C-level pass instead of a startswith per key
    except TypeError:  # a key that is not a string
        return any(isinstance(key, str) and key.startswith(("HTTP_UBERCTX_", "HTTP_OT_BAGGAGE_")) for key in environ)
    return _BAGGAGE_MARKS[0] in keys or _BAGGAGE_MARKS[1] in keys


def extract_parent(textmap: Any, environ: Mapping[str, Any], current: otel_context.Context) -> otel_context.Context:
    """`textmap.extract` of the request's headers onto `current`, reading the environ as little as possible.

    MeshPropagator reads the environ in place (`extract_environ`: nothing to do for a request that enters
    the mesh without trace headers, Envoy's B3 headers in one fused pass). Any other propagator is skipped
    when a C-level intersection of the environ with its `fields` (and a substring test for the prefixed
    baggage headers, `uberctx-*` and `ot-baggage-*`, which no `fields` lists) finds nothing; otherwise it
    gets every header as a plain dict, read with a case-insensitive getter, so one asking for a header it
    did not declare (`X-Amzn-Trace-Id`) finds it as EnvironGetter would have.
    """
    if type(textmap) is MeshPropagator:
        return textmap.extract_environ(environ, current)
    fields = _fields_of(textmap)
    if fields is not None and not fields.keys.intersection(environ) and not _has_prefixed_baggage(environ):
        return current
    # A propagator meshtrace does not know gets a small plain dict of the headers, read case-insensitively,
    # rather than the environ through EnvironGetter name by name.
    return textmap.extract(environ_headers(environ), current, _CASE_GETTER)  # type: ignore[no-any-return]


class ServerTracer:
    """Makes the SERVER spans of one framework's WSGI requests."""

    def __init__(self, framework: str, route_of: Callable[[dict[str, Any]], str | None]) -> None:
        self.framework = framework
        #: Reads the matched route template from the environ when the app starts its response.
        self.route_of = route_of
        self.tracer = TracerCache(f"meshtrace.integrations.{framework}")
        self.excluded: re.Pattern[str] | None = None

    def start(self, environ: dict[str, Any], start_response: StartResponse) -> _Request | None:
        """Begin tracing a request, or None when it must not be traced (the caller passes it through)."""
        if SPAN_KEY in environ:
            return None  # an outer layer (another app in the same process, an explicit wrap) traces it
        path: str = environ.get("PATH_INFO") or "/"
        excluded = self.excluded
        if excluded is not None and excluded.search(path):
            return None
        var = CONTEXT_VAR if getattr(otel_context, "_RUNTIME_CONTEXT", None) is CONTEXT_RUNTIME else None
        current = otel_context.get_current() if var is None else var.get()
        if current:  # usually empty when a request starts: then nothing is suppressed and no span is active
            if is_suppressed(current):
                return None
            active = trace.get_current_span(current)
            if getattr(active, "kind", None) is _SERVER and active.is_recording():
                return None  # an outer WSGI middleware (OTel's) already made the server span

        method: str = environ.get("REQUEST_METHOD") or "GET"
        scheme: str = environ.get("wsgi.url_scheme") or "http"
        # PEP 3333 makes every value read here a str; `plain` stays True while that holds (checked as each is
        # read), and the span then keeps this dict as its attributes without checking or copying it again.
        plain = type(method) is str and type(path) is str and type(scheme) is str
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": path,
            "url.scheme": scheme,
        }
        if method not in _KNOWN_METHODS:
            attributes["http.request.method"] = "_OTHER"
            attributes["http.request.method_original"] = method
            method = "HTTP"
        host = environ.get("HTTP_HOST")
        if host:
            address, port = host_and_port(host, scheme)
            plain = plain and type(host) is str
        else:
            address = environ.get("SERVER_NAME") or ""
            port_text = environ.get("SERVER_PORT")
            port = int(port_text) if port_text and port_text.isdigit() else None
            plain = plain and type(address) is str
        if address:
            attributes["server.address"] = address
        if port is not None:
            attributes["server.port"] = port
        query = environ.get("QUERY_STRING")
        if query:
            attributes["url.query"] = query
            plain = plain and type(query) is str
        client = environ.get("REMOTE_ADDR")
        if client:
            attributes["client.address"] = client
            plain = plain and type(client) is str
        agent = environ.get("HTTP_USER_AGENT")
        if agent:
            attributes["user_agent.original"] = agent
            plain = plain and type(agent) is str
        protocol = _PROTOCOLS.get(environ.get("SERVER_PROTOCOL") or "")
        if protocol:
            attributes["network.protocol.version"] = protocol

        parent = extract_parent(propagate.get_global_textmap(), environ, current)
        if plain:
            span = start_owned_span(self.tracer.get(), method, parent, _SERVER, attributes)
        else:
            span = start_span(self.tracer.get(), method, parent, _SERVER, attributes)
        # trace.set_span_in_context(span, parent) as one copy of the context.
        inner = otel_context.Context({**parent, CURRENT_SPAN_KEY: span})
        token = otel_context.attach(inner) if var is None else var.set(inner)
        environ[SPAN_KEY] = span
        return _Request(self, environ, method, span, token, start_response, var)


def route_name(route: str) -> str:
    """A route template as `http.route` wants it: always starting with a slash."""
    return route if route.startswith("/") else "/" + route


def wsgi_wrapper(server: ServerTracer, label: str, yields: Callable[[Any], bool]) -> Any:
    """A wrapt-style factory for a framework's WSGI entry `(self, environ, start_response)`: one SERVER span each.

    `yields(self)` says another instrumentation already traces this app (no doubled spans); `label` names the
    place in the log when our own code fails, after which the request goes on untraced.
    """

    def factory(original: Any, switch: Switch) -> Any:
        def wsgi_entry(self: Any, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            if not switch.on or yields(self):
                return original(self, environ, start_response)  # type: ignore[no-any-return]
            try:
                request = server.start(environ, start_response)
            except Exception:
                log_failure(label)
                request = None
            if request is None:
                return original(self, environ, start_response)  # type: ignore[no-any-return]
            try:
                result = original(self, environ, request.start_response)
            except BaseException as exc:
                request.fail(exc)
                raise
            return request.finish(result)

        wsgi_entry.__wrapped__ = original  # type: ignore[attr-defined]
        return wsgi_entry

    return factory

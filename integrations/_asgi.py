"""Server spans for ASGI entry points (Django's ASGIHandler): the WSGI machinery, fed from an ASGI scope.

Theory of operation. A server span needs the same facts under ASGI as under WSGI — method, path, scheme,
host, query, client, protocol and the trace headers — so `scope_environ` writes an HTTP scope out as the
WSGI environ PEP 3333 would give for that request, and `ServerTracer.start` (integrations/_wsgi.py) does
the rest: exclusion, extraction in every header format, the span, the context attached in the task that
runs the app. The environ is also left in the scope under ENVIRON_KEY, where framework hooks that only see
the request (the matched route, the exception signal) find it, as they find a WSGI request's environ.

An ASGI app sends its response as messages: `http.response.start` carries the status (recorded as a WSGI
`start_response` would record it, which is also when the matched route is read) and the body follows in
`http.response.body` messages. The app's coroutine returns once the last one has been sent — after a
streamed body, not when the view returned — and that is when the span ends. An exception out of the app
ends the span as failed and propagates unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from meshtrace.integrations._base import Switch, log_failure
from meshtrace.integrations._wsgi import ServerTracer

__all__ = ["ENVIRON_KEY", "asgi_wrapper", "scope_environ"]

#: Where the environ made for a request is kept in its ASGI scope.
ENVIRON_KEY = "meshtrace.environ"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

# PEP 3333 gives these two headers without the HTTP_ prefix.
_UNPREFIXED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})


def _no_start_response(status: str, headers: list[tuple[str, str]], *args: Any) -> None:
    """ASGI has no start_response: the status reaches the client in a message, not through this call."""


def scope_environ(scope: Scope) -> dict[str, Any]:
    """The WSGI environ of an ASGI HTTP `scope`: every value a str, repeated headers joined by commas."""
    server = scope.get("server") or None
    client = scope.get("client") or None
    query = scope.get("query_string") or b""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": str(scope.get("method") or "GET").upper(),
        "PATH_INFO": str(scope.get("path") or "/"),
        "QUERY_STRING": query.decode("latin-1") if isinstance(query, bytes) else str(query),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version') or '1.1'}",
        "wsgi.url_scheme": str(scope.get("scheme") or "http"),
    }
    if server:
        environ["SERVER_NAME"] = str(server[0])
        if len(server) > 1 and server[1] is not None:
            environ["SERVER_PORT"] = str(server[1])
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
    for raw_name, raw_value in scope.get("headers") or ():
        # ASGI header names are lowercase bytes; values are bytes, decoded as latin-1 like a WSGI server does.
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        key = name if name in _UNPREFIXED else "HTTP_" + name
        value = raw_value.decode("latin-1")
        previous = environ.get(key)
        environ[key] = value if previous is None else f"{previous},{value}"
    return environ


def asgi_wrapper(server: ServerTracer, label: str, yields: Callable[[Any], bool]) -> Any:
    """A wrapt-style factory for an ASGI entry `async (self, scope, receive, send)`: a SERVER span per request.

    Only `http` scopes are traced (websocket and lifespan pass through). `yields(self)` says another
    instrumentation already traces this app; `label` names the place in the log when our own code fails,
    after which the request goes on untraced.
    """

    def factory(original: Any, switch: Switch) -> Any:
        async def asgi_entry(self: Any, scope: Scope, receive: Any, send: Send) -> Any:
            if not switch.on or scope.get("type") != "http" or yields(self):
                return await original(self, scope, receive, send)
            try:
                environ = scope_environ(scope)
                request = server.start(environ, _no_start_response)
                if request is not None:
                    scope[ENVIRON_KEY] = environ
            except Exception:
                log_failure(label)
                request = None
            if request is None:
                return await original(self, scope, receive, send)

            async def traced_send(message: Message) -> None:
                if message.get("type") == "http.response.start":
                    try:
                        request.start_response(f"{int(message['status'])} ", [])
                    except Exception:
                        log_failure(f"{label}.status")
                await send(message)

            try:
                result = await original(self, scope, receive, traced_send)
            except BaseException as exc:
                request.fail(exc)
                raise
            request.finish([])  # the body has been sent: the span ends here
            return result

        asgi_entry.__wrapped__ = original  # type: ignore[attr-defined]
        return asgi_entry

    return factory

"""Django (WSGI and ASGI): a SERVER span per request, named `{method} {URL pattern}` (`GET /users/<int:uid>/`).

`instrument()` patches `WSGIHandler.__call__` and `ASGIHandler.__call__` (the span, around everything Django
does, middleware included, and under ASGI until the last body message is sent) and
`BaseHandler.get_response` / `get_response_async` (to read `request.resolver_match.route` once the URL
resolved). Django's patterns are relative; `http.route` gets a leading slash. Unresolved requests (404) are
named after the method alone. Unhandled view exceptions are recorded from Django's `got_request_exception`
signal, before Django turns them into a 500. Under ASGI the request's WSGI-style environ (made from the scope
by integrations/_asgi.py) lives in `request.scope`, which is where the hooks look when the request has no
`environ`.

When opentelemetry-instrumentation-django's middleware is in `settings.MIDDLEWARE`, meshtrace steps aside
for server spans (OTel's middleware makes them) instead of doubling them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from opentelemetry.trace import TracerProvider

from meshtrace.integrations._asgi import ENVIRON_KEY, asgi_wrapper
from meshtrace.integrations._base import Instrumentor, Switch, log_failure
from meshtrace.integrations._common import compile_excluded, excluded_from_env
from meshtrace.integrations._wsgi import (
    ROUTE_KEY,
    ServerTracer,
    record_exception,
    route_name,
    wsgi_wrapper,
)

__all__ = ["DjangoInstrumentor", "instrument", "instrumentor", "uninstrument"]

_YIELD_MARK = "_meshtrace_otel_middleware"
_OTEL_MIDDLEWARE = "opentelemetry.instrumentation.django"
_DISPATCH_UID = "meshtrace.integrations.django.exception"


def _route(environ: dict[str, Any]) -> str | None:
    return environ.get(ROUTE_KEY)


def _otel_middleware_active(handler: Any) -> bool:
    """Whether OTel's Django middleware is in this handler's chain (checked once per handler)."""
    found = handler.__dict__.get(_YIELD_MARK)
    if found is None:
        found = False
        if _OTEL_MIDDLEWARE in sys.modules:
            try:
                from django.conf import settings  # type: ignore[import-untyped]

                found = any(str(item).startswith(_OTEL_MIDDLEWARE) for item in settings.MIDDLEWARE or ())
            except Exception:
                log_failure("django.settings")
        handler.__dict__[_YIELD_MARK] = found
    return found  # type: ignore[no-any-return]


_OTEL_MIDDLEWARE_MODULE = "opentelemetry.instrumentation.django.middleware.otel_middleware"


def _otel_middleware_traces_asgi(handler: Any) -> bool:
    """Whether OTel's Django middleware is in the chain AND makes spans under ASGI.

    Without opentelemetry-instrumentation-asgi installed, OTel's middleware lets ASGI requests through
    untraced (its `_is_asgi_supported`); stepping aside then would leave the request with no span at all.
    """
    if not _otel_middleware_active(handler):
        return False
    module = sys.modules.get(_OTEL_MIDDLEWARE_MODULE)
    return bool(getattr(module, "_is_asgi_supported", True))


def _environ_of(request: Any) -> dict[str, Any] | None:
    """A WSGIRequest's environ, or the environ the ASGI wrapper left in an ASGIRequest's scope."""
    environ = getattr(request, "environ", None)
    if environ is None:
        scope = getattr(request, "scope", None)
        environ = scope.get(ENVIRON_KEY) if isinstance(scope, dict) else None
    return environ if isinstance(environ, dict) else None


def _note_route(request: Any) -> None:
    try:
        match = request.resolver_match
        if match is not None and match.route:
            environ = _environ_of(request)
            if environ is not None:
                environ[ROUTE_KEY] = route_name(match.route)
    except Exception:
        log_failure("django.route")


def _get_response_factory(original: Any, switch: Switch) -> Any:
    def get_response(self: Any, request: Any) -> Any:
        response = original(self, request)
        if switch.on:
            _note_route(request)
        return response

    get_response.__wrapped__ = original  # type: ignore[attr-defined]
    return get_response


def _get_response_async_factory(original: Any, switch: Switch) -> Any:
    async def get_response_async(self: Any, request: Any) -> Any:
        response = await original(self, request)
        if switch.on:
            _note_route(request)
        return response

    get_response_async.__wrapped__ = original  # type: ignore[attr-defined]
    return get_response_async


def _on_exception(sender: Any, request: Any = None, **_: Any) -> None:
    exc = sys.exc_info()[1]
    environ = _environ_of(request)
    if exc is not None and environ is not None:
        record_exception(environ, exc)


class DjangoInstrumentor(Instrumentor):
    name = "django"
    modules = ("django.core.handlers.wsgi", "django.core.handlers.asgi")

    def __init__(self) -> None:
        super().__init__()
        self.server = ServerTracer("django", _route)
        self._explicit = False

    def set_excluded_urls(self, patterns: Sequence[str] | str | None) -> None:
        self._explicit = True
        self.server.excluded = compile_excluded(patterns)

    def _configure(self) -> None:
        if not self._explicit:
            self.server.excluded = excluded_from_env("django")

    def _apply(self, module: ModuleType) -> None:
        from django.core.handlers.base import BaseHandler  # type: ignore[import-untyped]
        from django.core.signals import got_request_exception  # type: ignore[import-untyped]

        if module.__name__.endswith(".asgi"):
            self.patch(module.ASGIHandler, "__call__",
                       asgi_wrapper(self.server, "django.asgi-request", _otel_middleware_traces_asgi))
            self.patch(BaseHandler, "get_response_async", _get_response_async_factory)
        else:
            self.patch(module.WSGIHandler, "__call__",
                       wsgi_wrapper(self.server, "django.request", _otel_middleware_active))
            self.patch(BaseHandler, "get_response", _get_response_factory)
        # Both handler modules get here; the signal receiver is connected once (dispatch_uid makes it so).
        got_request_exception.connect(_on_exception, weak=False, dispatch_uid=_DISPATCH_UID)
        self.on_undo(lambda: got_request_exception.disconnect(dispatch_uid=_DISPATCH_UID))


instrumentor = DjangoInstrumentor()


def instrument(excluded_urls: Sequence[str] | str | None = None,
               tracer_provider: TracerProvider | None = None) -> None:
    """Trace every Django WSGI and ASGI handler of this process (idempotent)."""
    if excluded_urls is not None:
        instrumentor.set_excluded_urls(excluded_urls)
    if tracer_provider is not None:
        instrumentor.server.tracer.use(tracer_provider)
    instrumentor.instrument()


def uninstrument() -> None:
    instrumentor.uninstrument()

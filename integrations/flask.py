"""Flask: a SERVER span per request, named `{method} {url rule}` (`GET /users/<int:uid>`).

`instrument()` patches `flask.app.Flask.wsgi_app` (every app, subclasses included, whatever the import
order); `instrument_app(app)` wraps one app only. Requests that match no rule (404s, 405s from routing) are
named after the method alone (`GET`), the low-cardinality name the semantic conventions ask for. Unhandled
exceptions are recorded from `Flask.handle_exception`, before Flask turns them into a 500.

When opentelemetry-instrumentation-flask also instruments an app (it marks it
`_is_instrumented_by_opentelemetry`), meshtrace steps aside for that app's server spans instead of doubling
them; its client spans and context propagation carry on under OTel's span.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import TracerProvider

from meshtrace.integrations._base import Instrumentor, Switch, log_failure
from meshtrace.integrations._common import compile_excluded, excluded_from_env
from meshtrace.integrations._wsgi import (
    ROUTE_KEY,
    SPAN_KEY,
    ServerTracer,
    record_exception,
    wsgi_wrapper,
)

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["FlaskInstrumentor", "instrument", "instrument_app", "instrumentor", "uninstrument", "uninstrument_app"]

_APP_MARK = "_meshtrace_wrapped_wsgi_app"


def _route(environ: dict[str, Any]) -> str | None:
    request = environ.get("werkzeug.request")
    if request is None:  # the request context is gone (an exception left wsgi_app)
        return environ.get(ROUTE_KEY)
    rule = request.url_rule
    return rule.rule if rule is not None else None


def _instrumented_by_opentelemetry(app: Any) -> bool:
    return bool(getattr(app, "_is_instrumented_by_opentelemetry", False))


def _make_wsgi_app(server: ServerTracer) -> Any:
    return wsgi_wrapper(server, "flask.request", _instrumented_by_opentelemetry)


def _handle_exception_factory(original: Any, switch: Switch) -> Any:
    def handle_exception(self: Any, e: Exception) -> Any:
        if switch.on:
            try:
                from flask import request

                environ = request.environ
                record_exception(environ, e)
                if SPAN_KEY in environ and (rule := request.url_rule) is not None:
                    environ[ROUTE_KEY] = rule.rule
            except Exception:
                log_failure("flask.handle_exception")
        return original(self, e)

    handle_exception.__wrapped__ = original  # type: ignore[attr-defined]
    return handle_exception


class FlaskInstrumentor(Instrumentor):
    name = "flask"
    modules = ("flask.app",)

    def __init__(self) -> None:
        super().__init__()
        self.server = ServerTracer("flask", _route)
        self._explicit_excluded: re.Pattern[str] | None = None
        self._explicit = False

    def set_excluded_urls(self, patterns: Sequence[str] | str | None) -> None:
        """Override the environment's excluded URLs (regexes searched in the request path)."""
        self._explicit = True
        self.server.excluded = compile_excluded(patterns)

    def _configure(self) -> None:
        if not self._explicit:
            self.server.excluded = excluded_from_env("flask")

    def _apply(self, module: ModuleType) -> None:
        flask_class = module.Flask
        self.patch(flask_class, "wsgi_app", _make_wsgi_app(self.server))
        self.patch(flask_class, "handle_exception", _handle_exception_factory)


instrumentor = FlaskInstrumentor()


def instrument(excluded_urls: Sequence[str] | str | None = None,
               tracer_provider: TracerProvider | None = None) -> None:
    """Trace every Flask app of this process (idempotent)."""
    if excluded_urls is not None:
        instrumentor.set_excluded_urls(excluded_urls)
    if tracer_provider is not None:
        instrumentor.server.tracer.use(tracer_provider)
    instrumentor.instrument()


def uninstrument() -> None:
    instrumentor.uninstrument()


def instrument_app(app: Flask, excluded_urls: Sequence[str] | str | None = None,
                   tracer_provider: TracerProvider | None = None) -> None:
    """Trace one app only (idempotent); `uninstrument_app(app)` undoes it."""
    if getattr(app, _APP_MARK, None) is not None:
        return
    server = ServerTracer("flask", _route)
    server.excluded = compile_excluded(excluded_urls) if excluded_urls is not None else excluded_from_env("flask")
    server.tracer.use(tracer_provider)
    switch = Switch()
    had_own = "wsgi_app" in app.__dict__
    bound = app.wsgi_app
    wrapped = _make_wsgi_app(server)(lambda _self, environ, start_response: bound(environ, start_response), switch)
    app.wsgi_app = wrapped.__get__(app)  # type: ignore[method-assign]

    def on_exception(sender: Any, exception: BaseException, **_: Any) -> None:
        if switch.on:
            from flask import request

            record_exception(request.environ, exception)

    from flask.signals import got_request_exception

    got_request_exception.connect(on_exception, app, weak=False)
    setattr(app, _APP_MARK, (bound if had_own else None, switch, on_exception))


def uninstrument_app(app: Flask) -> None:
    mark = getattr(app, _APP_MARK, None)
    if mark is None:
        return
    own, switch, on_exception = mark
    switch.on = False
    if own is not None:
        app.wsgi_app = own  # type: ignore[method-assign]
    else:
        del app.wsgi_app
    from flask.signals import got_request_exception

    got_request_exception.disconnect(on_exception, app)
    delattr(app, _APP_MARK)

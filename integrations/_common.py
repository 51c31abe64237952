"""Helpers every HTTP integration needs: tracer lookup, suppression, excluded URLs, host parsing."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY, _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

from meshtrace import __version__
from meshtrace.integrations._base import logger

__all__ = [
    "CONTEXT_RUNTIME",
    "CONTEXT_VAR",
    "CURRENT_SPAN_KEY",
    "EXCLUDED_URLS_VARS",
    "LEGACY_SUPPRESS_KEY",
    "SUPPRESS_HTTP_KEY",
    "SUPPRESS_KEY",
    "TracerCache",
    "compile_excluded",
    "detach",
    "excluded_from_env",
    "host_and_port",
    "is_suppressed",
]

#: OpenTelemetry's keys: the SDK's batch processor attaches SUPPRESS_KEY while it exports, and HTTP client
#: instrumentations (ours and OTel's) attach SUPPRESS_HTTP_KEY around the inner call so no layer below
#: (urllib3, an httpx transport, a second instrumentation of the same client) makes a second span.
SUPPRESS_KEY = _SUPPRESS_INSTRUMENTATION_KEY
SUPPRESS_HTTP_KEY = _SUPPRESS_HTTP_INSTRUMENTATION_KEY
#: The key OpenTelemetry's instrumentations checked before the API had SUPPRESS_KEY; some still set it.
LEGACY_SUPPRESS_KEY = "suppress_instrumentation"
#: The context key OpenTelemetry keeps the current span under, learnt through the public API (it is private).
CURRENT_SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context())))

# The ContextVar behind OpenTelemetry's current context, when its default runtime context is in use:
# get_current/attach/detach are then exactly `CONTEXT_VAR.get()`/`.set()`/`.reset()` (the same calls without
# two wrapper frames each); any other runtime context (OTEL_PYTHON_CONTEXT) is only reached through the API.
# A caller checks per request that `otel_context._RUNTIME_CONTEXT is CONTEXT_RUNTIME` (it may be swapped).
CONTEXT_RUNTIME = getattr(otel_context, "_RUNTIME_CONTEXT", None)
CONTEXT_VAR: ContextVar[otel_context.Context] | None = (
    getattr(CONTEXT_RUNTIME, "_current_context", None) if type(CONTEXT_RUNTIME) is ContextVarsRuntimeContext
    else None)
if not isinstance(CONTEXT_VAR, ContextVar):  # pragma: no cover - depends on the installed API
    CONTEXT_RUNTIME = CONTEXT_VAR = None

#: Comma-separated regexes, searched in the request path; first found wins.
EXCLUDED_URLS_VARS = ("MESHTRACE_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")

_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_suppressed(ctx: otel_context.Context) -> bool:
    """True when instrumentation is switched off in this context (exporter calls, nested client layers)."""
    return bool(ctx.get(SUPPRESS_KEY) or ctx.get(SUPPRESS_HTTP_KEY) or ctx.get(LEGACY_SUPPRESS_KEY))


def detach(var: ContextVar[otel_context.Context] | None, token: Any) -> None:
    """Undo an attach made on `var` (`CONTEXT_VAR`, or None when it went through the API)."""
    if var is None:
        otel_context.detach(token)
        return
    try:
        var.reset(token)
    except Exception:  # another context's token (a generator resumed elsewhere): the API logs it
        otel_context.detach(token)


def compile_excluded(patterns: Iterable[str] | str | None) -> re.Pattern[str] | None:
    """One compiled regex for a list (or comma-separated string) of URL patterns; None when empty."""
    if patterns is None:
        return None
    items = patterns.split(",") if isinstance(patterns, str) else list(patterns)
    cleaned = [item.strip() for item in items if item and item.strip()]
    if not cleaned:
        return None
    return re.compile("|".join(f"(?:{item})" for item in cleaned))


def excluded_from_env(framework: str) -> re.Pattern[str] | None:
    """Excluded URLs from MESHTRACE_EXCLUDED_URLS, else OTEL_PYTHON_<FRAMEWORK>_EXCLUDED_URLS, else the
    generic OTEL_PYTHON_EXCLUDED_URLS. An invalid regex is reported and ignored (never breaks start-up)."""
    names = ("MESHTRACE_EXCLUDED_URLS", f"OTEL_PYTHON_{framework.upper()}_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")
    for name in names:
        raw = os.environ.get(name)
        if raw and raw.strip():
            try:
                return compile_excluded(raw)
            except re.error as exc:
                logger.warning("meshtrace: %s=%r is not a valid regex (%s); no URL is excluded", name, raw, exc)
                return None
    return None


class TracerCache:
    """The tracer of one integration, fetched from the global provider once it is the real one.

    Before `configure()` (or any `set_tracer_provider`) the API hands out a proxy tracer; we ask again on
    the next request instead of keeping the proxy and paying its indirection forever.
    """

    __slots__ = ("_name", "_provider", "_tracer")

    def __init__(self, name: str) -> None:
        self._name = name
        self._provider: trace.TracerProvider | None = None
        self._tracer: trace.Tracer | None = None

    def get(self) -> trace.Tracer:
        tracer = self._tracer
        if tracer is None:
            tracer = trace.get_tracer(self._name, __version__, tracer_provider=self._provider)
            if not isinstance(tracer, trace.ProxyTracer):
                self._tracer = tracer
        return tracer

    def use(self, provider: trace.TracerProvider | None) -> None:
        """Take spans from `provider` instead of the global one (None: back to the global)."""
        self._provider = provider
        self._tracer = None


_hosts: dict[tuple[str, str], tuple[str, int | None]] = {}
_MAX_HOSTS = 1024


def host_and_port(authority: str, scheme: str) -> tuple[str, int | None]:
    """Split `host[:port]` (IPv6 in brackets) into an address and a port (the scheme's default if absent).

    Cached: a service talks to few hosts, and this runs on every request.
    """
    key = (authority, scheme)
    found = _hosts.get(key)
    if found is not None:
        return found
    host, port_text = authority, ""
    if authority.startswith("["):
        end = authority.find("]")
        if end > 0:
            host, port_text = authority[1:end], authority[end + 2:]
    elif authority.count(":") == 1:
        host, _, port_text = authority.partition(":")
    port: int | None
    try:
        port = int(port_text) if port_text else _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = _DEFAULT_PORTS.get(scheme)
    result = (host.lower(), port)
    if len(_hosts) < _MAX_HOSTS:
        _hosts[key] = result
    return result

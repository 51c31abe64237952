"""httpx: a CLIENT span per attempt for `Client` and `AsyncClient` (and every subclass), headers injected.

`instrument()` patches `_send_single_request` of `httpx.Client` and `httpx.AsyncClient`: the one method
every request goes through once per hop (redirects included), whatever transport is mounted, so clients
made before instrumentation, subclasses and custom transports are all covered. The span's context carries
OpenTelemetry's suppress-HTTP key, so opentelemetry-instrumentation-httpx (which patches the transports
below) does not make a second span; calls made while instrumentation is suppressed (the exporter) are not
traced. The span ends when the response head arrives; a streamed body is read after it.

Trace headers are appended to the request's raw header list in one step (integrations/_httpx_headers.py) when
a probe, run when httpx is instrumented, shows that gives what `Headers.__setitem__` gives; otherwise, and for
a request already holding any of the names, each header is set the public way.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from opentelemetry.trace import TracerProvider

from meshtrace.integrations._base import Instrumentor, Switch
from meshtrace.integrations._client import ClientTracer, begin_call, send_wrapper, set_each
from meshtrace.integrations._httpx_headers import list_write_matches, use_headers_type, write_into_list

__all__ = ["HttpxInstrumentor", "instrument", "instrumentor", "uninstrument"]


def _describe(request: Any) -> tuple[str, str, Any]:
    return request.method, str(request.url), request.headers


def _async_factory(client: ClientTracer) -> Any:
    def factory(original: Any, switch: Switch) -> Any:
        async def _send_single_request(self: Any, request: Any) -> Any:
            if not switch.on:
                return await original(self, request)
            call = begin_call(client, "httpx.request", _describe, request)
            if call is None:
                return await original(self, request)
            try:
                response = await original(self, request)
            except BaseException as exc:
                call.fail(exc)
                raise
            call.done(response.status_code)
            return response

        _send_single_request.__wrapped__ = original  # type: ignore[attr-defined]
        return _send_single_request

    return factory


class HttpxInstrumentor(Instrumentor):
    name = "httpx"
    modules = ("httpx._client",)

    def __init__(self) -> None:
        super().__init__()
        self.client = ClientTracer("httpx")

    def _apply(self, module: ModuleType) -> None:
        headers_type = getattr(module, "Headers", None)  # httpx._models', as httpx._client imports it
        if isinstance(headers_type, type) and list_write_matches(headers_type):
            use_headers_type(headers_type)
            self.client.write_headers = write_into_list
        else:
            use_headers_type(None)
            self.client.write_headers = set_each
        self.patch(module.Client, "_send_single_request", send_wrapper(self.client, "httpx.request", _describe))
        self.patch(module.AsyncClient, "_send_single_request", _async_factory(self.client))


instrumentor = HttpxInstrumentor()


def instrument(tracer_provider: TracerProvider | None = None) -> None:
    """Trace every httpx call of this process, sync and async (idempotent)."""
    if tracer_provider is not None:
        instrumentor.client.tracer.use(tracer_provider)
    instrumentor.instrument()


def uninstrument() -> None:
    instrumentor.uninstrument()

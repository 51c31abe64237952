"""requests: a CLIENT span per attempt (each redirect hop too), with every trace header injected.

`instrument()` patches `requests.adapters.HTTPAdapter.send`, the layer that sends one hop: a redirect
followed by `Session.send` gets its own span, and urllib3 below is never instrumented separately (the
span's context carries OpenTelemetry's suppress-HTTP key, so OTel's urllib3 instrumentation, if active,
stays quiet too). Calls made while instrumentation is suppressed — the exporter's own uploads — are not
traced. When opentelemetry-instrumentation-requests is active its `Session.send` span runs first and
suppresses ours, so a call is traced once.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from opentelemetry.trace import TracerProvider

from meshtrace.integrations._base import Instrumentor
from meshtrace.integrations._client import ClientTracer, send_wrapper

__all__ = ["RequestsInstrumentor", "instrument", "instrumentor", "uninstrument"]


def _describe(request: Any) -> tuple[str, str, Any]:
    return request.method or "GET", request.url or "", request.headers


class RequestsInstrumentor(Instrumentor):
    name = "requests"
    modules = ("requests.adapters",)

    def __init__(self) -> None:
        super().__init__()
        self.client = ClientTracer("requests")

    def _apply(self, module: ModuleType) -> None:
        self.patch(module.HTTPAdapter, "send", send_wrapper(self.client, "requests.request", _describe))


instrumentor = RequestsInstrumentor()


def instrument(tracer_provider: TracerProvider | None = None) -> None:
    """Trace every requests call of this process (idempotent)."""
    if tracer_provider is not None:
        instrumentor.client.tracer.use(tracer_provider)
    instrumentor.instrument()


def uninstrument() -> None:
    instrumentor.uninstrument()

"""requests: a CLIENT span per attempt (each redirect hop too), with every trace header injected.

`instrument()` patches `requests.adapters.HTTPAdapter.send`, the layer that sends one hop: a redirect
followed by `Session.send` gets its own span, and urllib3 below is never instrumented separately (the
span's context carries OpenTelemetry's suppress-HTTP key, so OTel's urllib3 instrumentation, if active,
stays quiet too). Calls made while instrumentation is suppressed — the exporter's own uploads — are not
traced. When opentelemetry-instrumentation-requests is active its `Session.send` span runs first and
suppresses ours, so a call is traced once.

Trace headers are written straight into the request's `CaseInsensitiveDict` store (one C-level update
instead of a Python `__setitem__` per header) only when a probe, run when requests is instrumented, shows
that doing so leaves the mapping exactly as `__setitem__` would (same items, order, case-insensitive look-up);
otherwise, and for any other header type, each header is set the public way.
"""

from __future__ import annotations

from collections import OrderedDict
from types import ModuleType
from typing import Any

from opentelemetry.trace import TracerProvider

from meshtrace.integrations._base import Instrumentor
from meshtrace.integrations._client import ClientTracer, send_wrapper, set_each
from meshtrace.propagation import Keyed

__all__ = ["RequestsInstrumentor", "instrument", "instrumentor", "uninstrument"]


def _describe(request: Any) -> tuple[str, str, Any]:
    return request.method or "GET", request.url or "", request.headers


def _store_of(headers: Any) -> Any:
    """requests' private store behind `headers` (lowercase name -> (name as set, value)), or None."""
    store = getattr(headers, "__dict__", {}).get("_store")
    return store if type(store) is OrderedDict else None


def _write_into_store(headers: Any, keyed: Keyed) -> None:
    # Each item is (lowercase name, (lowercase name, value)): exactly the entry `headers[name] = value` stores
    # under `name`. _store_of() inline: every call runs this.
    if type(headers) is _case_insensitive_dict:
        store = headers.__dict__.get("_store")
        if type(store) is OrderedDict:
            store.update(keyed)
            return
    set_each(headers, keyed)


def store_write_matches(case_insensitive_dict: Any) -> bool:
    """True when writing into `case_insensitive_dict`'s store leaves it as `__setitem__` does (the probe)."""
    try:
        start = {"Accept": "*/*", "X-B3-Sampled": "0", "B3": "0"}
        keyed = tuple((name, (name, value)) for name, value in (
            ("x-b3-sampled", "1"), ("traceparent", "00-1-2-01"), ("b3", "1")))
        expected, probed = case_insensitive_dict(start), case_insensitive_dict(start)
        set_each(expected, keyed)
        if type(probed) is not case_insensitive_dict or _store_of(probed) is None:
            return False
        _store_of(probed).update(keyed)
        return (list(probed.items()) == list(expected.items()) and probed == expected
                and all(probed[name.upper()] == value for name, (_, value) in keyed))
    except Exception:
        return False


_case_insensitive_dict: type | None = None


class RequestsInstrumentor(Instrumentor):
    name = "requests"
    modules = ("requests.adapters",)

    def __init__(self) -> None:
        super().__init__()
        self.client = ClientTracer("requests")

    def _apply(self, module: ModuleType) -> None:
        global _case_insensitive_dict  # noqa: PLW0603 - the one header type the store write applies to
        header_type = getattr(module, "CaseInsensitiveDict", None)  # requests.structures', as adapters imports it
        if isinstance(header_type, type) and store_write_matches(header_type):
            _case_insensitive_dict = header_type
            self.client.write_headers = _write_into_store
        else:
            self.client.write_headers = set_each
        self.patch(module.HTTPAdapter, "send", send_wrapper(self.client, "requests.request", _describe))


instrumentor = RequestsInstrumentor()


def instrument(tracer_provider: TracerProvider | None = None) -> None:
    """Trace every requests call of this process (idempotent)."""
    if tracer_provider is not None:
        instrumentor.client.tracer.use(tracer_provider)
    instrumentor.instrument()


def uninstrument() -> None:
    instrumentor.uninstrument()

"""Trace-context propagation: every header format a mesh speaks, as OpenTelemetry TextMapPropagators."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Final

from opentelemetry.context import Context
from opentelemetry.propagators import textmap

from meshtrace.propagation._context import (
    get_request_id,
    get_sampling_hint,
    is_debug,
    is_sampling_deferred,
    set_debug,
    set_request_id,
    set_sampling_deferred,
    set_sampling_hint,
)
from meshtrace.propagation._getter import CaseInsensitiveGetter
from meshtrace.propagation._plain_inject import Keyed
from meshtrace.propagation.b3 import B3MultiPropagator, B3SinglePropagator
from meshtrace.propagation.baggage import BaggagePropagator
from meshtrace.propagation.composite import DEFAULT_FORMATS, MeshPropagator
from meshtrace.propagation.jaeger import JaegerPropagator
from meshtrace.propagation.ottrace import OTTracePropagator
from meshtrace.propagation.requestid import RequestIdPropagator
from meshtrace.propagation.tracecontext import TraceContextPropagator

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "B3MultiPropagator",
    "B3SinglePropagator",
    "BaggagePropagator",
    "CaseInsensitiveGetter",
    "JaegerPropagator",
    "Keyed",
    "MeshPropagator",
    "OTTracePropagator",
    "RequestIdPropagator",
    "TraceContextPropagator",
    "extract",
    "get_request_id",
    "get_sampling_hint",
    "inject",
    "is_debug",
    "is_sampling_deferred",
    "set_debug",
    "set_request_id",
    "set_sampling_deferred",
    "set_sampling_hint",
]

FORMATS: Final[Mapping[str, type[textmap.TextMapPropagator]]] = {
    "tracecontext": TraceContextPropagator,
    "baggage": BaggagePropagator,
    "b3multi": B3MultiPropagator,
    "b3": B3SinglePropagator,
    "jaeger": JaegerPropagator,
    "ottrace": OTTracePropagator,
}

# Built on first use, so MESHTRACE_PROPAGATORS is read when the application first propagates, not at import.
_default: MeshPropagator | None = None


def _propagator() -> MeshPropagator:
    global _default  # noqa: PLW0603 - one lazily built, process-wide default
    if _default is None:
        _default = MeshPropagator()
    return _default


def extract(headers: Mapping[str, str] | Mapping[str, list[str]], context: Context | None = None) -> Context:
    """The context carried by `headers` (any key case); malformed headers are ignored."""
    return _propagator().extract(headers, context)


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Write the configured formats of `context` (default: current) into `headers`.

    Header names are written in lowercase; an existing entry spelled in another case (`X-B3-TraceId`) is
    replaced rather than duplicated.
    """
    fresh: dict[str, str] = {}
    _propagator().inject(fresh, context)
    if not fresh:
        return
    for name in [name for name in headers if name.lower() in fresh and name not in fresh]:
        del headers[name]
    headers.update(fresh)

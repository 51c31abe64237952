"""The Zipkin exporter: OTel spans -> py-zipkin v2 spans -> Zipkin v2 JSON, POSTed to `/api/v2/spans`.

Mapping (OpenTelemetry's "Zipkin exporter" specification): 128-bit traceId, id and parentId as lowercase hex;
SERVER/CLIENT/PRODUCER/CONSUMER kinds (INTERNAL has none); timestamp and duration in microseconds (duration
at least 1); localEndpoint.serviceName from the resource's `service.name`; remoteEndpoint from the peer
attributes; attributes as string tags (bools lowercase, arrays as JSON); `otel.scope.name`/`version`;
status as `otel.status_code` plus `error` (the description) on ERROR; events as annotations (the name, or
`name: {attributes JSON}`).

Known py-zipkin limits, accepted: its v2 encoder writes no `debug` field, and annotations are a dict keyed by
value, so two events with the same name and attributes become one annotation.
"""

from __future__ import annotations

import ipaddress
import json
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

# The defining modules: py-zipkin re-exports these from py_zipkin.encoding without __all__, which a strict
# type checker does not count as public.
from py_zipkin.encoding._encoders import get_encoder
from py_zipkin.encoding._helpers import Endpoint, Span
from py_zipkin.encoding._types import Encoding, Kind

__all__ = ["ZipkinExporter", "encode_spans", "to_zipkin_span"]

_KINDS = {
    SpanKind.SERVER: Kind.SERVER,
    SpanKind.CLIENT: Kind.CLIENT,
    SpanKind.PRODUCER: Kind.PRODUCER,
    SpanKind.CONSUMER: Kind.CONSUMER,
}
_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
_MAX_ATTEMPTS = 5
_FIRST_BACKOFF_S = 0.5


def _seconds(microseconds: int) -> float:
    # py-zipkin takes float seconds and truncates `seconds * 1e6` to an int; the +0.5 µs keeps float error
    # (about 0.25 µs at today's epoch) from turning t into t-1.
    return (microseconds + 0.5) / 1e6


def _tag(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return json.dumps(list(value), separators=(",", ":"))
    return str(value)


def _endpoint(service: str | None, address: Any, port: Any) -> Endpoint | None:
    ipv4 = ipv6 = None
    if isinstance(address, str):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            service = service or address  # a host name: Zipkin's best field for it is the service name
        else:
            ipv4, ipv6 = (str(ip), None) if ip.version == 4 else (None, str(ip))
    port_value = port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else None
    if not (service or ipv4 or ipv6 or port_value):
        return None
    return Endpoint(service_name=service, ipv4=ipv4, ipv6=ipv6, port=port_value)


def _remote_endpoint(kind: SpanKind, attributes: Mapping[str, Any]) -> Endpoint | None:
    peer_service = attributes.get("peer.service")
    if kind in (SpanKind.CLIENT, SpanKind.PRODUCER):
        address = attributes.get("server.address", attributes.get("net.peer.name"))
        port = attributes.get("server.port", attributes.get("net.peer.port"))
    elif kind in (SpanKind.SERVER, SpanKind.CONSUMER):
        address = attributes.get("client.address", attributes.get("net.peer.ip"))
        port = attributes.get("client.port")
    else:
        return None
    return _endpoint(peer_service if isinstance(peer_service, str) else None, address, port)


def to_zipkin_span(span: ReadableSpan) -> Span:
    """The py-zipkin v2 Span for one finished OpenTelemetry span."""
    context = span.get_span_context()
    if context is None:
        raise ValueError("span without a context")
    attributes: Mapping[str, Any] = span.attributes or {}
    start_ns = span.start_time or 0
    end_ns = span.end_time or start_ns
    start_us = start_ns // 1000
    duration_us = max((end_ns - start_ns) // 1000, 1)

    tags: dict[str, str | None] = {key: _tag(value) for key, value in attributes.items()}
    scope = span.instrumentation_scope
    if scope is not None:
        tags["otel.scope.name"] = scope.name
        if scope.version:
            tags["otel.scope.version"] = scope.version
    if span.status.status_code is StatusCode.ERROR:
        tags["otel.status_code"] = "ERROR"
        tags["error"] = span.status.description or ""
    elif span.status.status_code is StatusCode.OK:
        tags["otel.status_code"] = "OK"

    annotations: dict[str, float | None] = {}
    for event in span.events:
        value = event.name
        if event.attributes:
            value = f"{event.name}: " + json.dumps(
                {key: _tag(val) for key, val in event.attributes.items()}, separators=(",", ":"))
        annotations[value] = _seconds(event.timestamp // 1000)

    service = span.resource.attributes.get("service.name") if span.resource is not None else None
    parent = span.parent
    return Span(
        trace_id=format(context.trace_id, "032x"),
        name=span.name,
        parent_id=format(parent.span_id, "016x") if parent is not None and parent.is_valid else None,
        span_id=format(context.span_id, "016x"),
        kind=_KINDS.get(span.kind, Kind.LOCAL),
        timestamp=_seconds(start_us),
        duration=_seconds(duration_us),
        local_endpoint=Endpoint(service_name=str(service) if service else None, ipv4=None, ipv6=None, port=None),
        remote_endpoint=_remote_endpoint(span.kind, attributes),
        annotations=annotations,
        tags=tags,
    )


def encode_spans(spans: Sequence[ReadableSpan]) -> str:
    """Zipkin v2 JSON (a list of spans) for `spans`, encoded by py-zipkin's V2_JSON encoder."""
    encoder = get_encoder(Encoding.V2_JSON)
    encoded = encoder.encode_queue([encoder.encode_span(to_zipkin_span(span)) for span in spans])
    return encoded if isinstance(encoded, str) else encoded.decode("utf-8")


class ZipkinExporter(SpanExporter):
    """POST Zipkin v2 JSON to `endpoint`, retrying transient failures with jittered exponential backoff.

    The httpx client ignores HTTP(S)_PROXY (`trust_env=False`): export traffic must never go through the
    sidecar the app may be using as its proxy. Retries stop at `timeout_s` per batch, or at shutdown.
    """

    def __init__(self, endpoint: str, timeout_s: float = 3.0, *,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.last_error: str | None = None
        self._client = httpx.Client(trust_env=False, timeout=timeout_s, transport=transport)
        self._shutdown = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown.is_set():
            self.last_error = "exporter is shut down"
            return SpanExportResult.FAILURE
        body = encode_spans(spans).encode("utf-8")
        deadline = time.monotonic() + self.timeout_s
        for attempt in range(_MAX_ATTEMPTS):
            remaining = deadline - time.monotonic()
            try:
                response = self._client.post(self.endpoint, content=body, timeout=max(remaining, 0.01),
                                             headers={"Content-Type": "application/json"})
            except httpx.TransportError as exc:
                retryable, self.last_error = True, f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= response.status_code < 300:
                    self.last_error = None
                    return SpanExportResult.SUCCESS
                retryable = response.status_code in _RETRYABLE_STATUS
                self.last_error = f"HTTP {response.status_code} {response.reason_phrase}"
            if not retryable:
                return SpanExportResult.FAILURE
            backoff = _FIRST_BACKOFF_S * 2 ** attempt * random.uniform(0.8, 1.2)
            if backoff > deadline - time.monotonic() or self._shutdown.wait(backoff):
                break
        return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        self._shutdown.set()
        self._client.close()

"""OTLP over HTTP/protobuf: OpenTelemetry's exporter (transport, retries, headers, compression, metrics) fed by
meshtrace's own encoder, sent straight to the backend (never through proxy settings): over one kept-alive socket
(meshtrace.exporters.direct_http) for an `http://` endpoint, else on a `requests` session that ignores them."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from meshtrace.exporters.direct_http import DirectHTTPTransport
from meshtrace.exporters.encoded import EncodedFields, EncodedSpan
from meshtrace.exporters.otlp_wire import encode_spans

__all__ = ["QUIET_LOGGERS", "FastOTLPSpanExporter", "build_otlp_exporter"]

#: Loggers through which the OTLP exporter reports every retry and failed batch; GuardedExporter holds them
#: back and logs an outage once instead.
QUIET_LOGGERS: tuple[str, ...] = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
)

_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
# A credential provider hands the exporter a `requests` session of its own (OpenTelemetry's variables).
_CREDENTIAL_VARIABLES = ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
                         "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER")


def direct_session() -> requests.Session:
    """A requests session that never uses HTTP(S)_PROXY/NO_PROXY, netrc or REQUESTS_CA_BUNDLE from the env.

    Apps may run with HTTP_PROXY pointing at the meshtrace sidecar; span export must go straight to the
    backend (through the sidecar it would be traced and counted as app traffic, or loop).
    """
    session = requests.Session()
    session.trust_env = False
    return session


class FastOTLPSpanExporter(OTLPSpanExporter):
    """OpenTelemetry's OTLP/HTTP span exporter with the request body from `meshtrace.exporters.otlp_wire`.

    Only the encoding changes (the same bytes, several times faster, which matters because the export
    thread holds the GIL while it encodes); everything after it is the parent's: the size limit, the POST
    with its headers and compression, retries with backoff, the exporter's own metrics. Should a future
    OpenTelemetry release rename the private attributes used here, the parent's export runs instead.

    Pre-encoded spans (meshtrace.exporters.encoded) are accepted mixed with SDK spans while this class's own
    export runs (`accepts_encoded()`); the parent's export would not know them.
    """

    def accepts_encoded(self) -> bool:
        return type(self).export is FastOTLPSpanExporter.export and self._own_export() is not None

    def _own_export(self) -> tuple[Any, Any, int] | None:
        inner: Any = self
        client, metrics = getattr(inner, "_client", None), getattr(inner, "_metrics", None)
        limit = getattr(inner, "_max_request_size", None)
        if client is None or metrics is None or not isinstance(limit, int):
            return None
        return client, metrics, limit

    def export(self, spans: Sequence[ReadableSpan | EncodedSpan | EncodedFields]) -> SpanExportResult:
        inner: Any = self
        own = self._own_export()
        if own is None:
            # accepts_encoded() is false in this state, so no pipeline handed us EncodedSpans: none are lost here.
            sdk_spans = [span for span in spans if isinstance(span, ReadableSpan)]
            return super().export(sdk_spans)
        client, metrics, limit = own
        if inner._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with metrics.export_operation(len(spans)) as result:
            try:
                body = encode_spans(spans)
            except Exception as error:
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if 0 < limit < len(body):
                _logger.warning("Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                                len(body), limit)
                result.error = RequestPayloadTooLargeError(f"Serialized span request size {len(body)} bytes exceeds "
                                          f"max_request_size {limit} bytes.")
                return SpanExportResult.FAILURE
            export_result = client.export(body)
            if not export_result.success:
                result.error = export_result.error
                result.error_attrs = ({"http.response.status_code": export_result.status_code}
                                      if export_result.status_code is not None else None)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def build_otlp_exporter(endpoint: str, timeout_s: float, *, lean: bool = True) -> OTLPSpanExporter:
    """An exporter POSTing to `endpoint` (the full …/v1/traces URL).

    The OTel exporter retries connection errors and 429/502/503/504 with exponential backoff (1 s, 2 s, …)
    until `timeout_s` has passed for the batch; headers, compression and TLS files still come from the
    standard OTEL_EXPORTER_OTLP_* variables. An `http://` endpoint is sent to over one kept-alive socket
    (meshtrace.exporters.direct_http: the same client, retries and headers, without `requests`' per-POST
    machinery); `https://`, a credential-provider session and `lean=False` (a benchmark's comparison) keep the
    `requests` session.
    """
    if lean and urlsplit(endpoint).scheme == "http" and not any(os.environ.get(name) for name in _CREDENTIAL_VARIABLES):
        try:
            return FastOTLPSpanExporter(endpoint=endpoint, timeout=timeout_s,
                                        _transport=DirectHTTPTransport())
        except TypeError:   # pragma: no cover - an OpenTelemetry release without the transport argument
            pass
    return FastOTLPSpanExporter(endpoint=endpoint, timeout=timeout_s, session=direct_session())

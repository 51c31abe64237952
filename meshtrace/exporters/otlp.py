"""OTLP over HTTP/protobuf, through OpenTelemetry's own exporter, on a session that ignores proxy settings."""

from __future__ import annotations

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

__all__ = ["QUIET_LOGGERS", "build_otlp_exporter"]

#: Loggers through which the OTLP exporter reports every retry and failed batch; GuardedExporter holds them
#: back and logs an outage once instead.
QUIET_LOGGERS: tuple[str, ...] = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
)


def direct_session() -> requests.Session:
    """A requests session that never uses HTTP(S)_PROXY/NO_PROXY, netrc or REQUESTS_CA_BUNDLE from the env.

    Apps may run with HTTP_PROXY pointing at the meshtrace sidecar; span export must go straight to the
    backend (through the sidecar it would be traced and counted as app traffic, or loop).
    """
    session = requests.Session()
    session.trust_env = False
    return session


def build_otlp_exporter(endpoint: str, timeout_s: float) -> OTLPSpanExporter:
    """An exporter POSTing to `endpoint` (the full …/v1/traces URL).

    The OTel exporter retries connection errors and 429/502/503/504 with exponential backoff (1 s, 2 s, …)
    until `timeout_s` has passed for the batch; headers, compression and TLS files still come from the
    standard OTEL_EXPORTER_OTLP_* variables.
    """
    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s, session=direct_session())

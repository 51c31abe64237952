"""Span exporters: `otlp` (HTTP/protobuf), `zipkin` (v2 JSON), `console`, `file` (OTLP/JSON lines), `none`."""

from __future__ import annotations

import sys

from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from meshtrace.exporters.guard import GuardedExporter
from meshtrace.settings import Settings

__all__ = ["GuardedExporter", "build_exporter"]


def build_exporter(settings: Settings) -> GuardedExporter | None:
    """The guarded exporter `settings` asks for; None for `none` (spans are still made, never exported)."""
    name, endpoint, timeout_s = settings.exporter, settings.endpoint, settings.export_timeout_s
    if name == "otlp":
        from meshtrace.exporters.otlp import QUIET_LOGGERS, build_otlp_exporter

        assert endpoint is not None
        return GuardedExporter(lambda: build_otlp_exporter(endpoint, timeout_s), f"otlp {endpoint}",
                               quiet_loggers=QUIET_LOGGERS)
    if name == "zipkin":
        from meshtrace.exporters.zipkin import ZipkinExporter

        assert endpoint is not None
        return GuardedExporter(lambda: ZipkinExporter(endpoint, timeout_s), f"zipkin {endpoint}")
    if name == "file":
        from meshtrace.exporters.file import OtlpJsonFileExporter

        assert endpoint is not None
        return GuardedExporter(lambda: OtlpJsonFileExporter(endpoint), f"file {endpoint}")
    if name == "console":
        return GuardedExporter(lambda: _console(settings.service_name), "console")
    return None


def _console(service_name: str) -> SpanExporter:
    # sys.stdout read now, not at import (the SDK's default argument), so redirected stdout is honoured.
    return ConsoleSpanExporter(service_name=service_name, out=sys.stdout)

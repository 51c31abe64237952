"""The file exporter: one OTLP/JSON ExportTraceServiceRequest per line, appended atomically.

Each export call (one batch) becomes exactly one line, written with a single `write()` on a descriptor opened
with O_APPEND, so lines from threads and from forked workers sharing the file never interleave (POSIX appends
to a regular local file are atomic with respect to the file offset). The file is opened per batch: that
costs microseconds on the export thread, needs no fork handling, and follows log rotation.

OTLP/JSON (the OTLP specification's JSON encoding): proto3 JSON mapping with lowerCamelCase field names,
enums as integers, and trace/span ids as hex strings rather than base64.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["OtlpJsonFileExporter", "to_otlp_json"]

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(obj: dict[str, Any]) -> None:
    for field in _ID_FIELDS:
        if field in obj:
            obj[field] = base64.b64decode(obj[field]).hex()


def to_otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The OTLP/JSON form of the ExportTraceServiceRequest for `spans`."""
    request: dict[str, Any] = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in request.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
    return request


class OtlpJsonFileExporter(SpanExporter):
    """Append each batch to `path` as one line of OTLP/JSON."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.last_error: str | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = json.dumps(to_otlp_json(spans), separators=(",", ":"), ensure_ascii=False) + "\n"
        data = memoryview(line.encode("utf-8"))
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                while data:  # one write() in practice; the loop only matters for a disk-full partial write
                    written = os.write(fd, data)
                    data = data[written:]
            finally:
                os.close(fd)
        except OSError as exc:
            self.last_error = f"{self.path}: {exc.strerror or exc}"
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

"""The file exporter: one OTLP/JSON ExportTraceServiceRequest per line, appended, whole lines even across forks."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.json_format import ParseDict  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer

from meshtrace.exporters.file import OtlpJsonFileExporter, to_otlp_json


def finished(build: Callable[[Tracer], None], service: str = "svc") -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    build(provider.get_tracer("test.scope", "1.2"))
    return list(memory.get_finished_spans())


def parent_and_child(tracer: Tracer) -> None:
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER, attributes={"http.route": "/x"}) as parent:
        child = tracer.start_span("child", kind=SpanKind.CLIENT, links=[Link(parent.get_span_context())])
        child.add_event("retry", {"attempt": 2})
        child.set_status(Status(StatusCode.ERROR, "boom"))
        child.end()


def spans_of(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for rs in request["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


def test_otlp_json_encoding_follows_the_spec() -> None:
    spans = finished(parent_and_child)
    request = to_otlp_json(spans)
    [resource_spans] = request["resourceSpans"]
    attributes = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
    assert attributes["service.name"] == {"stringValue": "svc"}
    [scope_spans] = resource_spans["scopeSpans"]
    assert scope_spans["scope"] == {"name": "test.scope", "version": "1.2"}
    by_name = {span["name"]: span for span in scope_spans["spans"]}
    parent, child = by_name["parent"], by_name["child"]
    sdk = {span.name: span for span in spans}
    # ids are hex (not the proto3-JSON base64), lowerCamelCase names, enums as integers
    assert parent["traceId"] == format(sdk["parent"].context.trace_id, "032x")
    assert parent["spanId"] == format(sdk["parent"].context.span_id, "016x")
    assert "parentSpanId" not in parent
    assert child["parentSpanId"] == parent["spanId"]
    assert child["traceId"] == parent["traceId"]
    assert parent["kind"] == 2
    assert child["kind"] == 3
    assert child["status"] == {"code": 2, "message": "boom"}
    assert child["links"][0] == {"traceId": parent["traceId"], "spanId": parent["spanId"],
                                 "flags": child["links"][0]["flags"]}
    assert child["events"][0]["name"] == "retry"
    assert int(parent["startTimeUnixNano"]) == sdk["parent"].start_time
    assert {"key": "http.route", "value": {"stringValue": "/x"}} in parent["attributes"]


def test_lines_are_valid_otlp_json_one_request_per_export(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = OtlpJsonFileExporter(path)
    first, second = finished(parent_and_child), finished(lambda tracer: tracer.start_span("solo").end())
    assert exporter.export(first) is SpanExportResult.SUCCESS
    assert exporter.export(second) is SpanExportResult.SUCCESS
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 2
    assert all(line.endswith("\n") and "\n" not in line[:-1] for line in lines)
    requests = [json.loads(line) for line in lines]
    assert [span["name"] for span in spans_of(requests[0])] == ["child", "parent"]
    assert [span["name"] for span in spans_of(requests[1])] == ["solo"]
    # Check against the protobuf schema: ParseDict wants proto3-JSON (base64) bytes, so turn the OTLP/JSON hex
    # ids back first, as an OTLP/JSON reader does; any other deviation from the schema fails the parse.
    for request in requests:
        for span in spans_of(request):
            for field in ("traceId", "spanId", "parentSpanId"):
                if field in span:
                    span[field] = base64.b64encode(bytes.fromhex(span[field])).decode()
            for link in span.get("links", ()):
                for field in ("traceId", "spanId"):
                    link[field] = base64.b64encode(bytes.fromhex(link[field])).decode()
        message = ParseDict(request, ExportTraceServiceRequest())
        assert message.resource_spans[0].scope_spans[0].spans


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    path.write_text('{"resourceSpans":[]}\n')
    OtlpJsonFileExporter(path).export(finished(lambda tracer: tracer.start_span("x").end()))
    assert len(path.read_text().splitlines()) == 2


def test_unwritable_path_fails_the_batch_without_raising(tmp_path: Path) -> None:
    exporter = OtlpJsonFileExporter(tmp_path / "missing-dir" / "spans.jsonl")
    assert exporter.export(finished(lambda tracer: tracer.start_span("x").end())) is SpanExportResult.FAILURE
    assert exporter.last_error is not None
    assert "No such file or directory" in exporter.last_error


def test_forked_writers_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    # Big batches (~100 KB lines) make torn writes likely if appends were not whole-line.
    def many(tracer: Tracer) -> None:
        for index in range(200):
            tracer.start_span(f"s{index}", attributes={"pad": "x" * 400}).end()

    batch = finished(many)
    exporter = OtlpJsonFileExporter(path)
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:  # child: write and leave at once, without running pytest's teardown
            code = 0
            try:
                for _ in range(10):
                    if exporter.export(batch) is not SpanExportResult.SUCCESS:
                        code = 1
            finally:
                os._exit(code)
        children.append(pid)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert len(lines) - 1 == 40
    for line in lines[:-1]:
        assert len(spans_of(json.loads(line))) == 200

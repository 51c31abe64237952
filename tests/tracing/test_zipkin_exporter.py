"""Zipkin v2 JSON from OTel spans, field by field, and the POST: direct (no env proxy), retried, never raising."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from meshtrace.exporters.zipkin import ZipkinExporter, encode_spans

T0 = 1_700_000_000_123_456_789  # ns; the µs part (…123456) must survive py-zipkin's float seconds


def finished(build: Callable[[Tracer], None], service: str = "checkout") -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    build(provider.get_tracer("test.scope", "1.2"))
    return list(memory.get_finished_spans())


def scenario(tracer: Tracer) -> None:
    parent = tracer.start_span("GET /cart/{id}", kind=SpanKind.SERVER, start_time=T0,
                               attributes={"http.route": "/cart/{id}", "client.address": "10.0.0.7"})
    with trace.use_span(parent, end_on_exit=False):
        child = tracer.start_span("GET", kind=SpanKind.CLIENT, start_time=T0 + 1_000_000, attributes={
            "http.response.status_code": 503, "retry": True, "tags": ("a", "b"), "ratio": 0.5,
            "server.address": "inventory.internal", "server.port": 8080, "peer.service": "inventory"})
        child.add_event("exception", {"exception.type": "Timeout"}, timestamp=T0 + 2_000_000)
        child.add_event("retrying", timestamp=T0 + 3_000_000)
        child.set_status(Status(StatusCode.ERROR, "upstream 503"))
        child.end(end_time=T0 + 5_000_000)
        local = tracer.start_span("compute", start_time=T0 + 6_000_000)
        local.set_status(Status(StatusCode.OK))
        local.end(end_time=T0 + 6_000_100)  # 100 ns: below Zipkin's 1 µs resolution
    parent.end(end_time=T0 + 9_000_000)


def encoded() -> dict[str, dict[str, Any]]:
    decoded = json.loads(encode_spans(finished(scenario)))
    assert isinstance(decoded, list)
    return {span["name"]: span for span in decoded}


def test_ids_names_kinds_and_parentage() -> None:
    spans = encoded()
    server, client, local = spans["GET /cart/{id}"], spans["GET"], spans["compute"]
    assert len(server["traceId"]) == 32
    assert server["traceId"] == client["traceId"] == local["traceId"]
    assert all(len(span["id"]) == 16 and span["id"] == span["id"].lower() for span in spans.values())
    assert "parentId" not in server
    assert client["parentId"] == server["id"]
    assert local["parentId"] == server["id"]
    assert server["kind"] == "SERVER"
    assert client["kind"] == "CLIENT"
    assert "kind" not in local  # INTERNAL has no Zipkin kind
    assert "shared" not in server


def test_timestamps_and_durations_in_microseconds() -> None:
    spans = encoded()
    assert spans["GET /cart/{id}"]["timestamp"] == T0 // 1000
    assert spans["GET /cart/{id}"]["duration"] == 9000
    assert spans["GET"]["timestamp"] == T0 // 1000 + 1000
    assert spans["GET"]["duration"] == 4000
    assert spans["compute"]["duration"] == 1  # never 0 (Zipkin would read a missing duration)


def test_endpoints() -> None:
    spans = encoded()
    assert all(span["localEndpoint"] == {"serviceName": "checkout"} for span in spans.values())
    assert spans["GET"]["remoteEndpoint"] == {"serviceName": "inventory", "port": 8080}
    assert spans["GET /cart/{id}"]["remoteEndpoint"] == {"ipv4": "10.0.0.7"}
    assert "remoteEndpoint" not in spans["compute"]


def test_tags_status_and_annotations() -> None:
    spans = encoded()
    client = spans["GET"]
    assert client["tags"] == {
        "http.response.status_code": "503", "retry": "true", "tags": '["a","b"]', "ratio": "0.5",
        "server.address": "inventory.internal", "server.port": "8080", "peer.service": "inventory",
        "otel.scope.name": "test.scope", "otel.scope.version": "1.2",
        "otel.status_code": "ERROR", "error": "upstream 503",
    }
    assert spans["compute"]["tags"]["otel.status_code"] == "OK"
    assert "error" not in spans["compute"]["tags"]
    assert "otel.status_code" not in spans["GET /cart/{id}"]["tags"]  # UNSET status writes nothing
    assert client["annotations"] == [
        {"timestamp": T0 // 1000 + 2000, "value": 'exception: {"exception.type":"Timeout"}'},
        {"timestamp": T0 // 1000 + 3000, "value": "retrying"},
    ]


class Recorder:
    """An httpx transport standing in for the network: answers with the next status, records requests."""

    def __init__(self, *statuses: int | Exception) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 202
        if isinstance(status, Exception):
            raise status
        return httpx.Response(status)


def exporter_with(recorder: Recorder, timeout_s: float = 10.0) -> ZipkinExporter:
    return ZipkinExporter("http://zipkin.test:9411/api/v2/spans", timeout_s,
                          transport=httpx.MockTransport(recorder))


def test_posts_v2_json_to_the_endpoint() -> None:
    recorder = Recorder(202)
    spans = finished(scenario)
    assert exporter_with(recorder).export(spans) is SpanExportResult.SUCCESS
    [request] = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "http://zipkin.test:9411/api/v2/spans"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == json.loads(encode_spans(spans))


def test_retries_transient_failures_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("meshtrace.exporters.zipkin._FIRST_BACKOFF_S", 0.001)
    recorder = Recorder(httpx.ConnectError("refused"), 503, 202)
    assert exporter_with(recorder).export(finished(scenario)) is SpanExportResult.SUCCESS
    assert len(recorder.requests) == 3


def test_a_permanent_error_is_not_retried_and_is_reported() -> None:
    recorder = Recorder(400)
    exporter = exporter_with(recorder)
    assert exporter.export(finished(scenario)) is SpanExportResult.FAILURE
    assert len(recorder.requests) == 1
    assert exporter.last_error == "HTTP 400 Bad Request"


def test_gives_up_at_its_timeout_and_after_shutdown() -> None:
    recorder = Recorder(*[httpx.ConnectError("refused")] * 10)
    exporter = exporter_with(recorder, timeout_s=0.2)
    assert exporter.export(finished(scenario)) is SpanExportResult.FAILURE
    assert exporter.last_error == "ConnectError: refused"
    exporter.shutdown()
    sent = len(recorder.requests)
    assert exporter.export(finished(scenario)) is SpanExportResult.FAILURE
    assert len(recorder.requests) == sent

"""OTLP and Zipkin export over loopback sockets: direct despite HTTP_PROXY, quiet when the backend is down."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshtrace import counters
from meshtrace.exporters import GuardedExporter, build_exporter
from meshtrace.exporters.file import OtlpJsonFileExporter
from meshtrace.exporters.zipkin import ZipkinExporter
from meshtrace.settings import load_settings


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class CaptureServer:
    """A loopback HTTP server answering every POST with `status` and recording it."""

    status: int = 200
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> CaptureServer:
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                capture.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(capture.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def backend() -> Iterator[CaptureServer]:
    server = CaptureServer().start()
    yield server
    server.close()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[CaptureServer]:
    """An HTTP proxy the environment points at (as when the app's traffic goes through the sidecar)."""
    server = CaptureServer().start()
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, server.url)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def zero_counters() -> Iterator[None]:
    counters.reset()
    yield
    counters.reset()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens here once the socket is closed


def spans(count: int = 2) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "orders"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent"):
        for index in range(count - 1):
            tracer.start_span(f"child{index}").end()
    return list(memory.get_finished_spans())


def built(exporter: str, endpoint: str | None = None) -> GuardedExporter:
    guarded = build_exporter(load_settings(exporter=exporter, endpoint=endpoint, environ={}))
    assert guarded is not None
    return guarded


def test_otlp_posts_protobuf_to_v1_traces_directly_despite_http_proxy(backend: CaptureServer,
                                                                      proxy: CaptureServer) -> None:
    exporter = built(exporter="otlp", endpoint=backend.url)
    batch = spans(3)
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert proxy.received == []
    [request] = backend.received
    assert request.path == "/v1/traces"
    assert request.headers["content-type"] == "application/x-protobuf"
    message = ExportTraceServiceRequest.FromString(request.body)
    names = sorted(span.name for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans)
    assert names == ["child0", "child1", "parent"]
    assert counters.snapshot()["spans_exported"] == 3


def test_zipkin_posts_json_directly_despite_http_proxy(backend: CaptureServer, proxy: CaptureServer) -> None:
    exporter = built(exporter="zipkin", endpoint=backend.url)
    assert exporter.export(spans(2)) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert proxy.received == []
    [request] = backend.received
    assert request.path == "/api/v2/spans"
    assert {span["name"] for span in json.loads(request.body)} == {"parent", "child0"}
    assert counters.snapshot()["spans_exported"] == 2


def test_build_exporter_picks_each_kind(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert isinstance(built(exporter="zipkin").inner, ZipkinExporter)
    assert isinstance(built(exporter="file", endpoint=str(tmp_path_factory.mktemp("f") / "x")).inner,
                      OtlpJsonFileExporter)
    assert built(exporter="console").description == "console"
    assert built(exporter="otlp").description == "otlp http://127.0.0.1:4318/v1/traces"
    assert build_exporter(load_settings(exporter="none", environ={})) is None


@pytest.mark.parametrize("kind", ["otlp", "zipkin"])
def test_unreachable_backend_is_logged_once_and_counted(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = load_settings(exporter=kind, endpoint=f"http://127.0.0.1:{closed_port()}",
                             environ={"OTEL_EXPORTER_OTLP_TIMEOUT": "0.3"})
    exporter = build_exporter(settings)
    assert exporter is not None
    results = [exporter.export(spans(2)) for _ in range(3)]
    exporter.shutdown()
    assert results == [SpanExportResult.FAILURE] * 3
    assert counters.snapshot()["export_failures"] == 3
    assert counters.snapshot()["spans_failed_export"] == 6
    assert counters.snapshot()["spans_exported"] == 0
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert loud[0].name == "meshtrace.export"
    assert "cannot export spans to" in loud[0].getMessage()


def test_backend_error_status_is_a_counted_failure(backend: CaptureServer) -> None:
    backend.status = 400
    assert built(exporter="otlp", endpoint=backend.url).export(spans(1)) is SpanExportResult.FAILURE
    assert counters.snapshot()["export_failures"] == 1

"""The OTLP exporter's lean transport over real loopback sockets: what `requests` did, on one kept-alive socket."""

from __future__ import annotations

import gzip
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshtrace import counters
from meshtrace.demo.processes import free_port
from meshtrace.exporters import GuardedExporter, build_exporter
from meshtrace.exporters.direct_http import DirectHTTPTransport
from meshtrace.exporters.otlp import build_otlp_exporter
from meshtrace.settings import load_settings


@dataclass
class Backend:
    """A loopback OTLP endpoint: answers POSTs with the scripted (status, extra headers), then 200; records what
    it received and on which connection (the client's port)."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    close_after_response: bool = False
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self, port: int = 0) -> Backend:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"   # keep-alive, as collectors and Jaeger answer

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                backend.received.append((self.client_address[1], {k.lower(): v for k, v in self.headers.items()},
                                         body))
                status, extra = backend.script.pop(0) if backend.script else (200, {})
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                if backend.close_after_response:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend().start()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def zero_counters() -> Iterator[None]:
    counters.reset()
    yield
    counters.reset()


def spans(count: int = 2) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "orders"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for index in range(count):
        tracer.start_span(f"span{index}").end()
    return list(memory.get_finished_spans())


def exporter(endpoint: str, timeout: str = "3") -> GuardedExporter:
    guarded = build_exporter(load_settings(exporter="otlp", endpoint=endpoint,
                                           environ={"OTEL_EXPORTER_OTLP_TIMEOUT": timeout}))
    assert guarded is not None
    return guarded


def names(body: bytes) -> list[str]:
    message = ExportTraceServiceRequest.FromString(body)
    return sorted(span.name for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans)


def test_http_endpoints_take_the_direct_transport_and_https_keeps_requests() -> None:
    transport = build_otlp_exporter("http://127.0.0.1:4318/v1/traces", 1.0)._client._transport
    assert isinstance(transport, DirectHTTPTransport)
    secure: OTLPSpanExporter = build_otlp_exporter("https://127.0.0.1:4318/v1/traces", 1.0)
    assert not isinstance(secure._client._transport, DirectHTTPTransport)


def test_batches_share_one_kept_alive_connection(backend: Backend) -> None:
    guarded = exporter(backend.url)
    results = [guarded.export(spans(2)) for _ in range(3)]
    guarded.shutdown()
    assert results == [SpanExportResult.SUCCESS] * 3
    assert len({port for port, _, _ in backend.received}) == 1
    _, headers, body = backend.received[0]
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["host"] == backend.url.removeprefix("http://")
    assert names(body) == ["span0", "span1"]
    assert counters.snapshot()["spans_exported"] == 6


def test_a_503_is_retried_after_its_retry_after(backend: Backend) -> None:
    backend.script = [(503, {"Retry-After": "0"}), (503, {"Retry-After": "0"})]
    guarded = exporter(backend.url)
    assert guarded.export(spans(1)) is SpanExportResult.SUCCESS
    guarded.shutdown()
    assert len(backend.received) == 3
    assert counters.snapshot()["export_failures"] == 0


def test_a_400_is_not_retried(backend: Backend) -> None:
    backend.script = [(400, {})]
    guarded = exporter(backend.url)
    assert guarded.export(spans(1)) is SpanExportResult.FAILURE
    assert len(backend.received) == 1
    assert counters.snapshot()["export_failures"] == 1


def test_connection_refused_then_recovery_is_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    guarded = exporter(f"http://127.0.0.1:{port}", timeout="0.3")
    failed = [guarded.export(spans(1)) for _ in range(2)]
    backend = Backend().start(port)
    try:
        recovered = guarded.export(spans(1))
    finally:
        guarded.shutdown()
        backend.close()
    assert failed == [SpanExportResult.FAILURE] * 2
    assert recovered is SpanExportResult.SUCCESS
    assert [names(body) for _, _, body in backend.received] == [["span0"]]
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, loud
    assert "cannot export spans to" in loud[0]
    assert any("works again (2 batches failed meanwhile)" in r.getMessage() for r in caplog.records)


def test_a_connection_the_backend_closed_is_replaced_without_a_failure(backend: Backend) -> None:
    backend.close_after_response = True
    guarded = exporter(backend.url)
    results = [guarded.export(spans(1)) for _ in range(3)]
    guarded.shutdown()
    assert results == [SpanExportResult.SUCCESS] * 3
    assert len({port for port, _, _ in backend.received}) == 3


def test_gzip_when_configured(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    guarded = exporter(backend.url)
    assert guarded.export(spans(2)) is SpanExportResult.SUCCESS
    [(_, headers, body)] = backend.received
    assert headers["content-encoding"] == "gzip"
    assert names(gzip.decompress(body)) == ["span0", "span1"]


def test_headers_from_the_environment_are_sent(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=blue,authorization=Bearer%20k")
    guarded = exporter(backend.url)
    assert guarded.export(spans(1)) is SpanExportResult.SUCCESS
    [(_, headers, _)] = backend.received
    assert headers["x-tenant"] == "blue"
    assert headers["authorization"] == "Bearer k"


def test_never_through_http_proxy(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = Backend().start()
    try:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        guarded = exporter(backend.url)
        assert guarded.export(spans(1)) is SpanExportResult.SUCCESS
    finally:
        proxy.close()
    assert proxy.received == []
    assert len(backend.received) == 1


def serve_raw(response: bytes) -> tuple[str, threading.Thread]:
    """A one-shot server answering one request with `response` bytes as they are, then closing."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(response)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/v1/traces", thread


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=1\r\n{}\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}",
])
def test_chunked_interim_and_read_to_close_responses(response: bytes) -> None:
    url, thread = serve_raw(response)
    transport = DirectHTTPTransport()
    result = transport.request("POST", url, headers={"Content-Type": "application/x-protobuf"}, timeout=2,
                               data=b"abc")
    thread.join(2)
    transport.close()
    assert (result.status_code, result.error, result.content()) == (200, None, b"{}")


def test_garbage_is_a_connection_error_the_client_retries() -> None:
    url, thread = serve_raw(b"SSH-2.0-OpenSSH\r\n\r\n")
    transport = DirectHTTPTransport()
    result = transport.request("POST", url, headers={}, timeout=2, data=b"abc")
    thread.join(2)
    assert result.status_code is None
    assert transport.is_connection_error(result.error)


def test_a_header_that_would_split_the_request_is_refused() -> None:
    transport = DirectHTTPTransport()
    result = transport.request("POST", "http://127.0.0.1:9/v1/traces", headers={"x-a": "1\r\nX-Evil: 1"},
                               timeout=1, data=b"")
    assert isinstance(result.error, ValueError)
    assert not transport.is_connection_error(result.error)

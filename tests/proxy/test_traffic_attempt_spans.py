"""A CLIENT span per upstream attempt on routes with retries, with http.request.resend_count; none without."""

from __future__ import annotations

import http.client
import socket
import threading
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from proxy_harness import RawServer, SidecarThread, read_head, sidecar_config
from traffic_support import API, service_entry

from meshtrace.propagation import MeshPropagator
from meshtrace.proxy.config import Address

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen = 0
        self.lock = threading.Lock()
        self.server = RawServer(self._serve)

    def _serve(self, sock: socket.socket) -> None:
        with self.lock:
            self.seen += 1
            n = self.seen
        while read_head(sock):
            sock.sendall(UNAVAILABLE if n <= self.failures else OK)
            if n <= self.failures:
                return


def run(tmp_path: Path, failures: int, route_extra: str) -> tuple[int, list[ReadableSpan]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    flaky = Flaky(failures)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        API + "kind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n"
        "  - route: [{destination: {host: reviews}}]\n" + route_extra
        + "---\n" + service_entry("reviews", [("127.0.0.1", flaky.server.port, "v1")], port=9080))
    proxy = SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules), tracing=True),
                          tracer=provider.get_tracer("test"), propagator=MeshPropagator())
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port("outbound"), timeout=10)
        conn.request("GET", "/", headers={"Host": "reviews:9080"})
        response = conn.getresponse()
        response.read()
        conn.close()
        proxy.wait_hops(1)
        return response.status, list(exporter.get_finished_spans())
    finally:
        proxy.close()
        flaky.server.close()


def test_each_attempt_gets_a_child_client_span_with_resend_count(tmp_path: Path) -> None:
    status, spans = run(tmp_path, 2, "    retries: {attempts: 3, retryOn: 5xx}\n")
    assert status == 200
    attempts = sorted((s for s in spans if s.attributes and "meshtrace.attempt" in s.attributes),
                      key=lambda s: s.start_time or 0)
    (hop,) = [s for s in spans if s not in attempts]
    assert hop.context is not None
    assert len(attempts) == 3
    for attempt in attempts:
        assert attempt.kind == SpanKind.CLIENT
        assert attempt.parent is not None
        assert attempt.parent.span_id == hop.context.span_id
        assert attempt.context is not None
        assert attempt.context.trace_id == hop.context.trace_id
    counts = [(a.attributes or {}).get("http.request.resend_count") for a in attempts]
    assert counts == [None, 1, 2]
    codes = [(a.attributes or {}).get("http.response.status_code") for a in attempts]
    assert codes == [503, 503, 200]
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]


def test_no_attempt_spans_without_retries(tmp_path: Path) -> None:
    status, spans = run(tmp_path, 0, "")
    assert status == 200
    assert len(spans) == 1
    assert "meshtrace.attempt" not in (spans[0].attributes or {})

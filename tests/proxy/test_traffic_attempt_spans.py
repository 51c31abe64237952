"""A CLIENT span per upstream attempt on routes with retries, with http.request.resend_count; none without.

Each try's request carries the trace headers of its own attempt span, so the upstream's span nests under the try
that reached it (as with Envoy), while the hop record keeps the hop span's ids."""

from __future__ import annotations

import http.client
import socket
import threading
from pathlib import Path
from typing import NamedTuple

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from proxy_harness import RawServer, SidecarThread, read_head, sidecar_config
from traffic_support import API, service_entry

from meshtrace.propagation import MeshPropagator
from meshtrace.proxy.config import Address
from meshtrace.proxy.hop import Hop

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen = 0
        self.heads: list[bytes] = []    # each try's request head, in arrival order
        self.lock = threading.Lock()
        self.server = RawServer(self._serve)

    def _serve(self, sock: socket.socket) -> None:
        with self.lock:
            self.seen += 1
            n = self.seen
        while head := read_head(sock):
            with self.lock:
                self.heads.append(head)
            sock.sendall(UNAVAILABLE if n <= self.failures else OK)
            if n <= self.failures:
                return


class Run(NamedTuple):
    status: int
    spans: list[ReadableSpan]
    heads: list[bytes]      # the request heads the upstream received, one per try
    hops: list[Hop]


def run(tmp_path: Path, failures: int, route_extra: str, propagator: MeshPropagator | None = None) -> Run:
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
                          tracer=provider.get_tracer("test"), propagator=propagator or MeshPropagator())
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port("outbound"), timeout=10)
        conn.request("GET", "/", headers={"Host": "reviews:9080"})
        response = conn.getresponse()
        response.read()
        conn.close()
        hops = proxy.wait_hops(1)
        return Run(response.status, list(exporter.get_finished_spans()), list(flaky.heads), list(hops))
    finally:
        proxy.close()
        flaky.server.close()


def test_each_attempt_gets_a_child_client_span_with_resend_count(tmp_path: Path) -> None:
    status, spans, _, _ = run(tmp_path, 2, "    retries: {attempts: 3, retryOn: 5xx}\n")
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
    status, spans, _, _ = run(tmp_path, 0, "")
    assert status == 200
    assert len(spans) == 1
    assert "meshtrace.attempt" not in (spans[0].attributes or {})


def _header(head: bytes, name: bytes) -> bytes:
    values = [line.partition(b":")[2].strip() for line in head.split(b"\r\n")[1:]
              if line.partition(b":")[0].strip().lower() == name]
    assert len(values) == 1, (name, head)
    return values[0]


def _traceparent(head: bytes) -> tuple[bytes, bytes, bool]:
    """Trace id, parent id and the sampled bit (other flag bits, such as W3C's random-trace-id, may be set)."""
    version, trace_id, parent_id, trace_flags = _header(head, b"traceparent").split(b"-")
    assert version == b"00"
    return trace_id, parent_id, bool(int(trace_flags, 16) & 0x01)


def _split(spans: list[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    attempts = sorted((s for s in spans if s.attributes and "meshtrace.attempt" in s.attributes),
                      key=lambda s: s.start_time or 0)
    (hop,) = [s for s in spans if s not in attempts]
    return hop, attempts


def test_each_try_sends_trace_headers_naming_its_attempt_span(tmp_path: Path) -> None:
    # The upstream fails the first try with a 503 and answers the second: each try's server span must be able to
    # hang under the attempt that reached it, in every configured format.
    result = run(tmp_path, 1, "    retries: {attempts: 2, retryOn: 5xx}\n",
                 MeshPropagator(["tracecontext", "b3multi"]))
    assert result.status == 200
    hop, attempts = _split(result.spans)
    assert hop.context is not None
    assert len(attempts) == 2
    assert len(result.heads) == 2
    trace_id = f"{hop.context.trace_id:032x}".encode()
    hop_id = f"{hop.context.span_id:016x}".encode()
    for attempt, head in zip(attempts, result.heads, strict=True):
        assert attempt.context is not None
        assert attempt.parent is not None
        assert attempt.parent.span_id == hop.context.span_id
        span_id = f"{attempt.context.span_id:016x}".encode()
        assert _traceparent(head) == (trace_id, span_id, True)
        assert _header(head, b"x-b3-traceid") == trace_id
        assert _header(head, b"x-b3-spanid") == span_id
        assert _header(head, b"x-b3-parentspanid") == hop_id
        assert _header(head, b"x-b3-sampled") == b"1"
    assert [(a.attributes or {}).get("http.response.status_code") for a in attempts] == [503, 200]
    # The hop record (access log, metrics exemplars) still names the hop span, not an attempt.
    (record,) = result.hops
    assert (record.trace_id, record.span_id) == (trace_id.decode(), hop_id.decode())


def test_without_retries_the_upstream_gets_the_hop_span(tmp_path: Path) -> None:
    result = run(tmp_path, 0, "", MeshPropagator(["tracecontext"]))
    assert result.status == 200
    ((hop_span,),) = [result.spans]
    assert hop_span.context is not None
    (head,) = result.heads
    trace_id = f"{hop_span.context.trace_id:032x}"
    span_id = f"{hop_span.context.span_id:016x}"
    assert _traceparent(head) == (trace_id.encode(), span_id.encode(), True)
    (record,) = result.hops
    assert (record.trace_id, record.span_id) == (trace_id, span_id)

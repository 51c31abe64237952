"""The trace headers go upstream as one ready block of header lines that the request head's encoder splices in:
the upstream sees each injected header once, in the propagator's order and words, with the incoming trace state
and a 64-bit trace id as the formats write them, and the headers the proxy adds after them (chunked framing, an
upgrade) still after them."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from opentelemetry import baggage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from proxy_harness import RawServer, SidecarThread, propagator_headers, raw_exchange, sidecar_config
from traffic_support import API, service_entry

from meshtrace.propagation import DEFAULT_FORMATS, MeshPropagator, is_debug
from meshtrace.proxy.config import Address
from meshtrace.proxy.tracing import HopTracer

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
TRACE64 = "463ac35c9f6413ad"                # a 64-bit trace id, as B3 and OT senders often send
PARENT = "00f067aa0ba902b7"
STATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
INJECTED = [b"traceparent", b"tracestate", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled",
            b"b3", b"uber-trace-id", b"ot-tracer-traceid", b"ot-tracer-spanid", b"ot-tracer-sampled"]


INCOMING: list[dict[bytes, bytes]] = [
    {},
    {b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", b"tracestate": STATE.encode()},
    {b"traceparent": b"00-0000000000000000" + TRACE64.encode() + b"-b7ad6b7169203331-01",
     b"tracestate": STATE.encode()},
    {b"b3": b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"},
    {b"b3": b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"},
    {b"x-b3-traceid": TRACE64.encode(), b"x-b3-spanid": PARENT.encode()},
    {b"uber-trace-id": TRACE64.encode() + b":" + PARENT.encode() + b":0:3"},
    {b"ot-tracer-traceid": TRACE64.encode(), b"ot-tracer-spanid": PARENT.encode(), b"ot-tracer-sampled": b"true",
     b"ot-baggage-user": b"alice"},
    {b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", b"baggage": b"k=v"},
]


class Upstream:
    """Answers every request with a 200 and closes; keeps each request head as (request line, header pairs)."""

    def __init__(self) -> None:
        self.heads: list[tuple[bytes, list[tuple[bytes, bytes]]]] = []
        self.lock = threading.Lock()
        self.server = RawServer(self._serve)

    def _serve(self, sock: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data or (b"chunked" in data and not data.endswith(b"0\r\n\r\n")):
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        line, *lines = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        with self.lock:
            self.heads.append((line, [(name.lower(), value) for name, _, value in
                                      (header.partition(b": ") for header in lines)]))
        sock.sendall(OK)


def _send(request: bytes, rules: Path | None = None,
          ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], tuple[str, str]]:
    """`request` through a traced sidecar (its inbound listener; with `rules`, its outbound one, the rules naming
    the upstream as `{upstream}`): the header pairs the upstream got, the injected ones among them (in their
    order), and the hop record's trace and span ids."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    upstream = Upstream()
    if rules is None:
        config = sidecar_config(upstream.server.port, tracing=True)
    else:
        rules.write_text(rules.read_text().replace("{upstream}", str(upstream.server.port)))
        config = sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules), tracing=True)
    proxy = SidecarThread(config, tracer=provider.get_tracer("test"), propagator=MeshPropagator(DEFAULT_FORMATS))
    try:
        port = proxy.port("inbound" if rules is None else "outbound")
        reply = raw_exchange(port, request % {b"port": str(port).encode()})
        (hop,) = proxy.wait_hops(1)
    finally:
        proxy.close()
        upstream.server.close()
        provider.shutdown()
    assert reply.startswith(b"HTTP/1.1 200 ")
    ((_, headers),) = upstream.heads
    return headers, [pair for pair in headers if pair[0] in INJECTED], (hop.trace_id, hop.span_id)


def test_each_trace_header_goes_upstream_once_with_the_trace_state_and_a_64_bit_trace_id() -> None:
    headers, injected, (trace_id, span_id) = _send(
        b"GET /r HTTP/1.1\r\nHost: 127.0.0.1:%(port)s\r\n"
        b"X-B3-TraceId: " + TRACE64.encode() + b"\r\nX-B3-SpanId: " + PARENT.encode() + b"\r\nX-B3-Sampled: 1\r\n"
        b"traceparent: 00-" + TRACE64.rjust(32, "0").encode() + b"-" + PARENT.encode() + b"-01\r\n"
        b"tracestate: " + STATE.encode() + b"\r\n"
        b"uber-trace-id: 1:2:0:1\r\nConnection: close\r\n\r\n")
    assert trace_id == TRACE64.rjust(32, "0")
    t, s, p = trace_id, span_id, PARENT
    assert injected == [(name.encode(), value.encode()) for name, value in [
        ("traceparent", f"00-{t}-{s}-01"),
        ("tracestate", STATE),
        ("x-b3-traceid", t),
        ("x-b3-spanid", s),
        ("x-b3-parentspanid", p),
        ("x-b3-sampled", "1"),
        ("b3", f"{t}-{s}-1-{p}"),
        ("uber-trace-id", f"{t}:{s}:{p}:01"),
        ("ot-tracer-traceid", TRACE64),     # OT's 64-bit id goes on as 16 hex
        ("ot-tracer-spanid", s),
        ("ot-tracer-sampled", "true"),
    ]]
    names = [name for name, _ in headers]
    assert all(names.count(name) == 1 for name in INJECTED)     # the incoming ones dropped, ours once
    assert names[-len(INJECTED):] == INJECTED                   # last: nothing added after them here


def test_chunked_framing_still_follows_the_trace_headers() -> None:
    headers, injected, (trace_id, _) = _send(
        b"POST /r HTTP/1.1\r\nHost: 127.0.0.1:%(port)s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n")
    names = [name for name, _ in headers]
    rendered = [name for name in INJECTED if name not in (b"tracestate", b"x-b3-parentspanid")]   # a root span
    assert [name for name, _ in injected] == rendered
    assert names[-len(rendered) - 1:] == [*rendered, b"transfer-encoding"]
    assert names.count(b"transfer-encoding") == 1
    assert dict(headers)[b"traceparent"].startswith(f"00-{trace_id}-".encode())


def test_a_try_of_a_route_with_retries_sends_its_own_block_before_the_chunked_framing(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(API + "kind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n"
                     "  - route: [{destination: {host: reviews}}]\n    retries: {attempts: 2, retryOn: 5xx}\n"
                     "---\n" + service_entry("reviews", [("127.0.0.1", 0, "v1")], port=9080)
                     .replace("http: 0", "http: {upstream}"))
    headers, injected, (trace_id, hop_id) = _send(
        b"POST /r HTTP/1.1\r\nHost: reviews:9080\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n", rules)
    names = [name for name, _ in headers]
    rendered = [name for name in INJECTED if name != b"tracestate"]    # the attempt span's parent: the hop span
    assert [name for name, _ in injected] == rendered
    assert names[-len(rendered) - 1:] == [*rendered, b"transfer-encoding"]
    assert names.count(b"transfer-encoding") == 1
    values = dict(headers)
    assert values[b"x-b3-parentspanid"] == hop_id.encode()     # the try's span under the hop span
    assert values[b"traceparent"].startswith(f"00-{trace_id}-".encode())
    assert values[b"x-b3-spanid"] != hop_id.encode()


def test_the_block_is_the_propagators_headers_as_lines() -> None:
    """`render`'s block holds exactly what the propagator writes for the hop span, as `name: value` CRLF lines,
    and the hop record's ids; a context it does not render (debug, baggage) is left to `inject`."""
    for chosen in (DEFAULT_FORMATS, ("b3",), ("jaeger", "tracecontext"), ("ottrace", "b3multi")):
        propagator = MeshPropagator(chosen)
        tracer = HopTracer(TracerProvider().get_tracer("test"), propagator, inbound=True)
        for incoming in INCOMING:
            span, context = tracer.start(incoming, "x:80/*", 1)
            rendered = tracer.render(span, context)
            if rendered is None:    # only for a debug flag or baggage
                assert is_debug(context) or baggage.get_all(context), (chosen, incoming)
                continue
            expected = propagator_headers(propagator, span, context)
            assert rendered[0] == b"".join(b"%s: %s\r\n" % pair for pair in expected), (chosen, incoming)
            sc = span.get_span_context()
            assert rendered[1:] == (f"{sc.trace_id:032x}", f"{sc.span_id:016x}")

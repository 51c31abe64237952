"""VirtualService mirror: a fire-and-forget `-shadow` copy that never changes the client's answer."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from proxy_harness import RawServer, SidecarThread, read_head, sidecar_config
from traffic_support import API, service_entry

from meshtrace.demo.processes import free_port
from meshtrace.propagation import MeshPropagator
from meshtrace.proxy.config import Address
from meshtrace.proxy.mirror import shadow_authority

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Recording:
    """An upstream that records each request (head and body) and answers `answer`, or runs `behaviour`."""

    def __init__(self, behaviour: Callable[[socket.socket], None] | None = None, answer: bytes = OK) -> None:
        self.requests: list[bytes] = []
        self.got = threading.Event()
        self.answer = answer
        self.server = RawServer(behaviour or self._serve)

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        data = read_head(sock)
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                size = int(line.split(b":", 1)[1])
                while len(body) < size:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    body += chunk
        self.requests.append(head + b"\r\n\r\n" + body)
        self.got.set()
        sock.sendall(self.answer)


def start(tmp_path: Path, main: int, mirror: int, extra: str = "", **kw: object) -> SidecarThread:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        API + "kind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n"
        "  - route: [{destination: {host: reviews}}]\n    mirror: {host: shadow}\n" + extra
        + "---\n" + service_entry("reviews", [("127.0.0.1", main, "v1")], port=9080)
        + "---\n" + service_entry("shadow", [("127.0.0.1", mirror, "v1")], port=9080))
    return SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules)), **kw)  # type: ignore[arg-type]


def request(proxy: SidecarThread, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port("outbound"), timeout=10)
    try:
        conn.request("POST" if body is not None else "GET", "/p?q=1", body=body, headers={"Host": "reviews:9080"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_shadow_authority_keeps_the_port() -> None:
    assert shadow_authority(b"reviews") == b"reviews-shadow"
    assert shadow_authority(b"reviews:9080") == b"reviews-shadow:9080"


def test_mirror_gets_a_shadow_copy_with_the_body(tmp_path: Path) -> None:
    main = Recording()
    shadow = Recording(answer=b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nnope")
    proxy = start(tmp_path, main.server.port, shadow.server.port)
    try:
        assert request(proxy, b"hello") == (200, b"ok")
        assert shadow.got.wait(5)
        copy = shadow.requests[0]
        assert copy.startswith(b"POST /p?q=1 HTTP/1.1\r\n")
        assert b"\r\nhost: reviews-shadow:9080\r\n" in copy.lower()
        assert copy.endswith(b"\r\n\r\nhello")
        assert b"host: reviews:9080" in main.requests[0].lower()
        hop = proxy.wait_hops(1)[0]
        assert (hop.status, hop.attempts, hop.upstream_address) == (200, 1, f"127.0.0.1:{main.server.port}")
    finally:
        proxy.close()
        main.server.close()
        shadow.server.close()


def test_hanging_or_refusing_mirror_does_not_touch_the_response(tmp_path: Path) -> None:
    release = threading.Event()
    reached = threading.Event()

    def hang(sock: socket.socket) -> None:
        read_head(sock)
        reached.set()
        release.wait(10)

    main = Recording()
    hanging = RawServer(hang)
    proxy = start(tmp_path, main.server.port, hanging.port)
    try:
        assert request(proxy) == (200, b"ok")
        assert reached.wait(5)
        assert not release.is_set()      # the client had its answer while the mirror still hangs
        assert request(proxy) == (200, b"ok")
    finally:
        release.set()
        proxy.close()
        main.server.close()
        hanging.close()
    refused = tmp_path / "refused"
    refused.mkdir()
    main = Recording()
    proxy = start(refused, main.server.port, free_port())
    try:
        assert [request(proxy) for _ in range(3)] == [(200, b"ok")] * 3
    finally:
        proxy.close()
        main.server.close()


def test_mirror_percentage_zero_sends_none_and_big_bodies_are_not_mirrored(tmp_path: Path) -> None:
    main = Recording()
    shadow = Recording()
    proxy = start(tmp_path, main.server.port, shadow.server.port, "    mirrorPercentage: {value: 0}\n")
    try:
        assert [request(proxy)[0] for _ in range(5)] == [200] * 5
    finally:
        proxy.close()
    other = tmp_path / "big"
    other.mkdir()
    proxy = start(other, main.server.port, shadow.server.port)
    try:
        assert request(proxy, b"x" * (64 * 1024 + 1))[0] == 200
        assert request(proxy)[0] == 200
        assert shadow.got.wait(5)
        assert len(shadow.requests) == 1            # only the small one
        assert shadow.requests[0].startswith(b"GET ")
    finally:
        proxy.close()
        main.server.close()
        shadow.server.close()


def test_mirror_span_is_a_marked_child_of_the_hop_span(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    main = Recording()
    shadow = Recording()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        API + "kind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n"
        "  - route: [{destination: {host: reviews}}]\n    mirror: {host: shadow}\n"
        + "---\n" + service_entry("reviews", [("127.0.0.1", main.server.port, "v1")], port=9080)
        + "---\n" + service_entry("shadow", [("127.0.0.1", shadow.server.port, "v1")], port=9080))
    proxy = SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules), tracing=True),
                          tracer=provider.get_tracer("test"), propagator=MeshPropagator())
    try:
        assert request(proxy)[0] == 200
        assert shadow.got.wait(5)
        for _ in range(500):
            if len(exporter.get_finished_spans()) >= 2:
                break
            threading.Event().wait(0.01)
        spans = exporter.get_finished_spans()
        (mirror,) = [s for s in spans if s.attributes and s.attributes.get("meshtrace.mirror")]
        (hop,) = [s for s in spans if s is not mirror]
        assert mirror.kind == SpanKind.CLIENT
        assert mirror.parent is not None
        assert mirror.context is not None
        assert hop.context is not None
        assert mirror.parent.span_id == hop.context.span_id
        assert mirror.context.trace_id == hop.context.trace_id
        assert hop.attributes is not None
        assert hop.attributes["upstream_address"] == f"127.0.0.1:{main.server.port}"
        # The copy carries the mirror span's context, the real request the hop span's.
        assert f"{mirror.context.span_id:016x}".encode() in shadow.requests[0]
        assert f"{hop.context.span_id:016x}".encode() in main.requests[0]
    finally:
        proxy.close()
        main.server.close()
        shadow.server.close()


def test_a_refusing_mirror_host_is_ejected_and_copies_go_to_the_healthy_one(tmp_path: Path) -> None:
    main = Recording()
    good = Recording()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        API + "kind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n"
        "  - route: [{destination: {host: reviews}}]\n    mirror: {host: shadow}\n"
        + "---\n" + service_entry("reviews", [("127.0.0.1", main.server.port, "v1")], port=9080)
        + "---\n" + service_entry("shadow", [("127.0.0.1", free_port(), "v1"), ("127.0.0.1", good.server.port, "v1")],
                                  port=9080)
        + "---\n" + API + "kind: DestinationRule\nmetadata: {name: shadow}\nspec:\n  host: shadow\n"
        "  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 50}}\n")
    proxy = SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules)))
    try:
        # Only mirrored traffic reaches `shadow`: its refusals alone must eject the bad host. Round robin without
        # ejection would give the good host 5 copies of 10; a copy or two may go out before the refusal lands.
        assert [request(proxy)[0] for _ in range(10)] == [200] * 10
        for _ in range(500):
            if len(good.requests) >= 8:
                break
            threading.Event().wait(0.01)
        assert len(good.requests) >= 8
    finally:
        proxy.close()
        main.server.close()
        good.server.close()

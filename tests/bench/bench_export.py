"""Export micro-benchmark (a script, not a test): OpenTelemetry's OTLP encoder vs meshtrace's, spans/s and ratio.

Run: `.venv/bin/python tests/bench/bench_export.py [--spans 512] [--rounds 20]`. The spans are what the sidecar
records for an inbound hop (Envoy's tags plus the OTel semantic-convention attributes, a fresh request id per
span, an ERROR status on every tenth), finished through the SDK as in the proxy; each encoder serialises the
same batch `--rounds` times and the best round counts. Both must produce identical bytes.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as otel_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshtrace.exporters.otlp_wire import encode_spans


def hop_spans(count: int) -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "reviews"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("meshtrace.proxy", "0.1")
    for index in range(count):
        status = 503 if index % 10 == 0 else 200
        span = tracer.start_span("127.0.0.1:8080/*", kind=SpanKind.SERVER)
        span.set_attributes({
            "component": "proxy", "node_id": "sidecar~127.0.0.1~reviews.default", "zone": "",
            "downstream_cluster": "-", "guid:x-request-id": str(uuid.uuid4()),
            "http.url": f"http://127.0.0.1:15006/api/v1/items/{index}", "http.method": "GET",
            "http.protocol": "HTTP/1.1", "user_agent": "wrk", "peer.address": f"127.0.0.1:{40000 + index % 50}",
            "request_size": 0, "response_size": 24, "upstream_cluster": "inbound|8080||",
            "upstream_address": "127.0.0.1:8080", "http.status_code": status,
            "response_flags": "UF" if status == 503 else "-", "http.request.method": "GET",
            "network.protocol.version": "1.1", "server.address": "127.0.0.1", "server.port": 15006,
            "http.response.status_code": status, "url.path": f"/api/v1/items/{index}", "url.scheme": "http",
            "client.address": "127.0.0.1", "user_agent.original": "wrk",
        })
        if status == 503:
            span.set_attributes({"error": True, "error.type": "503"})
            span.set_status(Status(StatusCode.ERROR, "UF"))
        span.end()
    return exporter.get_finished_spans()


def best_seconds(encode: Callable[[], bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        encode()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--spans", type=int, default=512, help="spans per batch (the processor's batch size)")
    parser.add_argument("--rounds", type=int, default=20, help="encodings of the batch per encoder")
    args = parser.parse_args()
    spans = hop_spans(args.spans)
    theirs = otel_encode_spans(spans).SerializePartialToString()
    ours = encode_spans(spans)
    if ours != theirs:
        raise SystemExit("the encoders disagree: meshtrace's bytes differ from OpenTelemetry's")
    otel_s = best_seconds(lambda: otel_encode_spans(spans).SerializePartialToString(), args.rounds)
    ours_s = best_seconds(lambda: encode_spans(spans), args.rounds)
    print(f"{len(spans)} hop spans, {len(ours)} bytes, identical output")
    for name, seconds in (("opentelemetry encode_spans+Serialize", otel_s), ("meshtrace otlp_wire", ours_s)):
        print(f"{name:38} {seconds / len(spans) * 1e6:7.2f} us/span  {len(spans) / seconds:10.0f} spans/s")
    print(f"ratio (OpenTelemetry time / meshtrace time): {otel_s / ours_s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

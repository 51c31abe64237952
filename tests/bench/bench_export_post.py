"""The export thread's instructions per hop span: a batch of pre-encoded hop spans through the sidecar's exporter.

Run: `.venv/bin/python tests/bench/bench_export_post.py [--batch 512] [--batches 4]` (needs valgrind). The spans are
the sidecar's hop spans as its encoded lane queues them (`HopWire`, a fresh request id each); each batch goes
through what the export thread runs per batch: the GuardedExporter, FastOTLPSpanExporter's encoding, OpenTelemetry's
OTLP client and the transport's POST to an OTLP sink in a helper process (not counted). Printed per span, for the
kept-alive socket transport (meshtrace.exporters.direct_http, what an http:// endpoint gets) and for the `requests`
session it replaced: `--batches` and three times as many batches under callgrind, differenced, so start-up,
connecting and building the spans are not counted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from http.server import ThreadingHTTPServer

# Shared with the other benchmarks (this directory is sys.path[0] when the script runs).
from benchkit import OtlpSink, instructions


def sink() -> int:
    """The helper process: print the sink's port, serve until stdin closes."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), OtlpSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    return 0


def run(batches: int, batch: int, transport: str) -> None:
    """Export `batches` batches of `batch` hop spans, as the export thread would, to a sink of our own."""
    helper = subprocess.Popen([sys.executable, __file__, "--sink"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert helper.stdout is not None
    port = int(helper.stdout.readline())
    os.environ.update({"MESHTRACE_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                       "OTEL_BSP_SCHEDULE_DELAY": "3600000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1000000",
                       "OTEL_BSP_MAX_QUEUE_SIZE": "1000000"})
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from meshtrace.exporters import otlp
    from meshtrace.exporters.encoded import EncodedSpan
    from meshtrace.proxy.config import load_config
    from meshtrace.proxy.hop import Hop
    from meshtrace.proxy.hop_span import HopSpan
    from meshtrace.proxy.server import _tracing
    from meshtrace.proxy.tracing import HopTracer

    if transport == "requests":     # what an https:// endpoint still gets
        built = otlp.build_otlp_exporter

        def with_requests(endpoint: str, timeout_s: float, *, lean: bool = False) -> OTLPSpanExporter:
            return built(endpoint, timeout_s, lean=False)

        otlp.build_otlp_exporter = with_requests
    tracer, propagator = _tracing(load_config({"listen": "127.0.0.1:0", "upstream": "127.0.0.1:9",
                                               "tracing": True, "service": "bench"}))
    assert tracer is not None
    assert propagator is not None
    hop_tracer = HopTracer(tracer, propagator, inbound=True, node_id="sidecar~bench", zone="")
    processor = tracer.span_processor._span_processors[0]  # type: ignore[attr-defined]
    exporter = processor.exporter
    spans: list[EncodedSpan] = []
    queue = processor._queue
    start_ns = time.time_ns()
    for index in range(batch):
        hop = Hop("inbound", time.time(), "HTTP/1.1", "GET", "/", "127.0.0.1:8080", "http", "wrk",
                  f"3c6e2a9e-6c1e-4c4c-9a0c-{index:012x}", "127.0.0.1:40000", "127.0.0.1:8081", "inbound|8081||",
                  "default", 200, "-", 0, 24)
        span, _ = hop_tracer.start({b"host": b"127.0.0.1:8080", b"user-agent": b"wrk"}, "127.0.0.1:8080/*",
                                   start_ns)
        assert isinstance(span, HopSpan)
        hop_tracer.finish(span, hop, start_ns + 1000)
    spans = list(queue)
    queue.clear()
    assert exporter.export(spans).name == "SUCCESS"     # connects: not counted (both runs do it once)
    for _ in range(batches):
        exporter.export(spans)
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=512, help="spans per batch (the processor's default)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", nargs=3, metavar=("BATCHES", "BATCH", "TRANSPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        return sink()
    if args.run is not None:
        run(int(args.run[0]), int(args.run[1]), args.run[2])
        return 0
    if shutil.which("valgrind") is None:
        print("bench_export_post: skipped, valgrind is not installed")
        return 0
    for transport in ("direct", "requests"):
        small, large = (instructions(__file__, ["--run", str(n), str(args.batch), transport])
                        for n in (args.batches, 3 * args.batches))
        per_batch = (large - small) / (2 * args.batches)
        print(f"{transport:<9} {per_batch / args.batch:>8,.0f} instructions per span "
              f"({per_batch:,.0f} per batch of {args.batch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

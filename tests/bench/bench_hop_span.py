"""The hop tracer's own instructions per traced hop, phase by phase: start, render, finish (encoded lane).

Run: `.venv/bin/python tests/bench/bench_hop_span.py [--incoming none|traceparent] [--hops 1000]` (needs
valgrind). The tracer is the sidecar's (`proxy.server._tracing`: ProxySampler under meshtrace's HintedSampler,
100% sampled, OTLP through DroppingBatchSpanProcessor, so the hop spans take the encoded lane) and the hop
tracer an inbound listener's; each hop is `start` on a wrk-like request head, `render` (the trace header block
the exchange splices into the upstream request head), and `finish` with a fixed 200 `Hop`. The export queue is
made larger than the run and its batch as large, so the export thread never wakes: only the event loop's side is
counted. Three callgrind runs per phase set (start; start+render; start+render+finish) at `--hops` and three times
as many, differenced, give each phase's instructions per hop (exact to a few dozen instructions; no wall clock
involved).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import time
from collections.abc import Sequence

# Shared with the other benchmarks (this directory is sys.path[0] when the script runs).
from benchkit import instructions

PHASES = ("start", "render", "finish")
INCOMING = {
    "none": {b"host": b"127.0.0.1:8080", b"user-agent": b"wrk"},
    "traceparent": {b"host": b"127.0.0.1:8080", b"user-agent": b"wrk",
                    b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
}


def run(hops: int, phases: int, incoming: str) -> None:
    """`hops` hops doing the first `phases` phases each, in this process."""
    os.environ.update({"MESHTRACE_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                       "OTEL_BSP_MAX_QUEUE_SIZE": "65536", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "65536",
                       "OTEL_BSP_SCHEDULE_DELAY": "3600000"})
    from meshtrace.proxy.config import load_config
    from meshtrace.proxy.hop import Hop
    from meshtrace.proxy.server import _tracing
    from meshtrace.proxy.tracing import HopTracer

    tracer, propagator = _tracing(load_config({"listen": "127.0.0.1:0", "upstream": "127.0.0.1:9",
                                               "tracing": True, "service": "bench"}))
    assert tracer is not None
    assert propagator is not None
    hop_tracer = HopTracer(tracer, propagator, inbound=True, node_id="sidecar~bench", zone="")
    hmap = INCOMING[incoming]
    hop = Hop("inbound", time.time(), "HTTP/1.1", "GET", "/", "127.0.0.1:8080", "http", "wrk",
              "3c6e2a9e-6c1e-4c4c-9a0c-9d6f6f0e6e1b", "127.0.0.1:40000", "127.0.0.1:8081", "inbound|8081||",
              "default", 200, "-", 0, 24)
    name = "127.0.0.1:8080/*"
    start_ns = time.time_ns()
    start, render, finish = hop_tracer.start, hop_tracer.render, hop_tracer.finish
    # As `meshtrace proxy` runs: without it, full collections over the start-up heap land in some runs only.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    for _ in range(hops):
        span, context = start(hmap, name, start_ns)
        if phases > 1:
            render(span, context)
            if phases > 2:
                finish(span, hop, start_ns + 1000)
    os._exit(0)     # the queued spans are never exported: nothing listens on the endpoint


def _instructions(hops: int, phases: int, incoming: str) -> int:
    return instructions(__file__, ["--run", str(hops), str(phases), "--incoming", incoming])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hops", type=int, default=1000)
    parser.add_argument("--incoming", choices=sorted(INCOMING), default="none")
    parser.add_argument("--run", type=int, nargs=2, metavar=("HOPS", "PHASES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        run(args.run[0], args.run[1], args.incoming)
        return 0
    if shutil.which("valgrind") is None:
        print("bench_hop_span: skipped, valgrind is not installed")
        return 0
    per_hop = []
    for phases in range(1, len(PHASES) + 1):
        small, large = (_instructions(n, phases, args.incoming) for n in (args.hops, 3 * args.hops))
        per_hop.append((large - small) / (2 * args.hops))
    previous = 0.0
    for phase, cumulative in zip(PHASES, per_hop, strict=True):
        print(f"{phase:<7} {cumulative - previous:>9,.0f} instructions per hop")
        previous = cumulative
    print(f"{'total':<7} {per_hop[-1]:>9,.0f} instructions per hop (incoming: {args.incoming})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

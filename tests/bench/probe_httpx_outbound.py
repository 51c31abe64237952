"""Probe (not a benchmark): callgrind instructions per outbound `httpx` call, and what writing the headers costs.

    python tests/bench/probe_httpx_outbound.py [--calls 500] [--modes bare setitem meshtrace async-setitem ...]

Set up as probe_outbound.py sets up `requests`: an SDK TracerProvider with meshtrace's DroppingBatchSpanProcessor
(what meshtrace.configure installs; its export thread kept asleep) to a no-op exporter, MeshPropagator (every
format: ten headers) as the global propagator, every call a sibling under one parent span. The call is
`Client.get` over httpx.MockTransport (everything above the transport runs). Modes: `bare` (not instrumented),
`setitem` (meshtrace, headers written by one `Headers.__setitem__` each, as before the list write), `meshtrace`
(as instrumented: one append to the raw list); `async-...` the same through AsyncClient. Each mode runs at
`--calls` and three times as many under callgrind, differenced, so start-up cancels out.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
from collections.abc import Sequence

from benchkit import instructions

MODES = ("bare", "setitem", "meshtrace", "async-bare", "async-setitem", "async-meshtrace")
WARMUP = 100


def run(mode: str, calls: int) -> None:
    import httpx
    from bench_library import NoOpExporter
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.trace import TracerProvider

    from meshtrace.integrations import httpx as mt_httpx
    from meshtrace.integrations._client import set_each
    from meshtrace.processor import DroppingBatchSpanProcessor
    from meshtrace.propagation import MeshPropagator

    provider = TracerProvider()
    size = 4 * (calls + WARMUP) + 16
    provider.add_span_processor(DroppingBatchSpanProcessor(NoOpExporter(), max_queue_size=size,
                                                           max_export_batch_size=size, schedule_delay_millis=3_600_000))
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(MeshPropagator())
    kind = mode.removeprefix("async-")
    if kind != "bare":
        mt_httpx.instrument(tracer_provider=provider)
        if kind == "setitem":
            mt_httpx.instrumentor.client.write_headers = set_each
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    url = "http://backend.local:8080/items/1"
    gc.collect()
    with provider.get_tracer("bench").start_as_current_span("parent"):
        if mode.startswith("async-"):
            async def calls_async() -> None:
                async with httpx.AsyncClient(transport=transport) as client:
                    for _ in range(WARMUP + calls):
                        await client.get(url)

            asyncio.run(calls_async())
        else:
            with httpx.Client(transport=transport) as client:
                for _ in range(WARMUP + calls):
                    client.get(url)
    sys.stdout.flush()
    os._exit(0)


def per_call(mode: str, calls: int) -> float:
    small, large = (instructions(__file__, ["--run", mode, str(n)]) for n in (calls, 3 * calls))
    return (large - small) / (2 * calls)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:3]))
    parser.add_argument("--run", nargs=2, metavar=("MODE", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        run(args.run[0], int(args.run[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("probe_httpx_outbound: skipped, valgrind is not installed")
        return 0
    for mode in args.modes:
        print(f"{mode:<16} {per_call(mode, args.calls):>9,.0f} instructions per call", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

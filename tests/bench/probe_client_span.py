"""Instructions per outbound `requests` call, and how much of meshtrace's share is the CLIENT span itself.

Run: `.venv/bin/python tests/bench/probe_client_span.py [--calls 300] [--modes ...]` (needs valgrind). Set up as
bench_library.py sets up its outbound case: an SDK TracerProvider (default sampler, ParentBased(ALWAYS_ON)),
the SDK's BatchSpanProcessor to a no-op exporter, MeshPropagator as the global propagator, a Session over a
mocked connection, every call a sibling under one parent span. The export thread is kept asleep (queue and
batch larger than the run, an hour's schedule), so only the caller's side is counted. Modes:

- bare, meshtrace, opentelemetry: the whole call, as bench_library times it;
- span: only what the client integration asks of the span (`spans.start_owned_span` on the wrapper's attribute
  dict, `LightSpan.end_with_attribute` with the status code), in a loop of its own; span-start: its start alone;

`--processor meshtrace` queues the spans through meshtrace's DroppingBatchSpanProcessor (what `meshtrace.configure`
installs) instead of the SDK's BatchSpanProcessor.

Each mode runs at `--calls` and three times as many under callgrind, differenced, so start-up cancels out.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

from benchkit import instructions

MODES = ("bare", "meshtrace", "opentelemetry", "span", "span-start")
ATTRIBUTES: dict[str, Any] = {"http.request.method": "GET", "url.full": "http://backend.local:8080/items/1",
              "server.address": "backend.local", "server.port": 8080}


def run(mode: str, calls: int, processor: str) -> None:
    import requests

    # The same stand-ins as bench_library's outbound case (everything above urllib3's socket still runs).
    from bench_library import MockedAdapter, NoOpExporter
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    from meshtrace import spans
    from meshtrace.integrations import requests as mt_requests
    from meshtrace.lightspan import LightSpan
    from meshtrace.processor import DroppingBatchSpanProcessor
    from meshtrace.propagation import MeshPropagator

    provider = TracerProvider()
    size = 4 * calls + 16
    batch = DroppingBatchSpanProcessor if processor == "meshtrace" else BatchSpanProcessor
    provider.add_span_processor(batch(NoOpExporter(), max_queue_size=size, max_export_batch_size=size,
                                      schedule_delay_millis=3_600_000))
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(MeshPropagator())
    session = requests.Session()
    session.mount("http://", MockedAdapter())
    if mode == "meshtrace":
        mt_requests.instrument(tracer_provider=provider)
    elif mode == "opentelemetry":
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        RequestsInstrumentor().instrument(tracer_provider=provider)
    client = provider.get_tracer("meshtrace.integrations.requests")
    client_kind = SpanKind.CLIENT
    gc.collect()
    with provider.get_tracer("bench").start_as_current_span("parent"):
        current = trace.set_span_in_context(trace.get_current_span())
        if mode in ("bare", "meshtrace", "opentelemetry"):
            for _ in range(calls):
                session.get("http://backend.local:8080/items/1").close()
        elif mode == "span":
            start_owned = spans.start_owned_span
            for _ in range(calls):
                span = start_owned(client, "GET", current, client_kind, dict(ATTRIBUTES))
                if type(span) is LightSpan:
                    span.end_with_attribute("http.response.status_code", 200)
                else:
                    span.set_attribute("http.response.status_code", 200)
                    span.end()
        else:
            for _ in range(calls):
                spans.start_owned_span(client, "GET", current, client_kind, dict(ATTRIBUTES))
    os._exit(0)


def per_call(mode: str, calls: int, processor: str) -> float:
    small, large = (instructions(__file__, ["--processor", processor, "--run", mode, str(n)])
                    for n in (calls, 3 * calls))
    return (large - small) / (2 * calls)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--processor", choices=("sdk", "meshtrace"), default="sdk",
                        help="the batch processor: the SDK's (bench_library's) or meshtrace's (meshtrace.configure's)")
    parser.add_argument("--run", nargs=2, metavar=("MODE", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        run(args.run[0], int(args.run[1]), args.processor)
        return 0
    if shutil.which("valgrind") is None:
        print("probe_client_span: skipped, valgrind is not installed")
        return 0
    figures = {mode: per_call(mode, args.calls, args.processor) for mode in args.modes}
    bare = figures.get("bare")
    for mode, figure in figures.items():
        added = f"  (+{figure - bare:,.0f} over bare)" if bare is not None and mode in MODES[1:3] else ""
        print(f"{mode:<14} {figure:>9,.0f} instructions per call{added}")
    if bare is not None and "meshtrace" in figures and "opentelemetry" in figures:
        print(f"ratio meshtrace/opentelemetry added: "
              f"{(figures['meshtrace'] - bare) / (figures['opentelemetry'] - bare):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Probe (not a benchmark: run_all.py runs bench_*.py only): callgrind instructions per outbound `requests` call.

    python tests/bench/probe_outbound.py [--calls 1000] [--shape sibling|first|both] [--variants ...]
    python tests/bench/probe_outbound.py --annotate meshtrace [--shape first]

The call is bench_library's: `Session.get` over a mocked connection pool (everything above urllib3's socket
runs), the SDK's batch processor (its export thread kept asleep: only the caller's side is counted),
meshtrace's MeshPropagator (every format) as the global propagator, so meshtrace and OpenTelemetry's requests
instrumentation inject the same ten headers.
Shapes: `sibling` makes every call under one parent span (the bench's case: the outbound calls a request
handler makes are siblings); `first` makes each call under a parent span of its own, started and ended around it
(a service's first outbound call per request; the parent's start and end are in the bare figure too, so they
cancel out of the added cost). Each variant runs in its own callgrind process at `--calls` and three times as
many; the difference over the extra calls is the per-call figure (start-up and warm-up cancel out). Variants
beyond the three of the bench take one piece away from meshtrace's, so the differences attribute its cost:
`mesh-nowrite` (headers rendered, not written), `mesh-norender` (no headers at all).

`--processor meshtrace` queues the spans through meshtrace's DroppingBatchSpanProcessor (what
`meshtrace.configure` installs) instead of the SDK's BatchSpanProcessor (bench_library's set-up).

`--annotate VARIANT` runs one variant under callgrind with an output file and prints callgrind_annotate's
inclusive listing (C functions: the interpreter's own frames dominate; look for dict, unicode, contextvar work).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

# Shared with the other benchmarks (this directory is sys.path[0] when the script runs).
from benchkit import instructions

VARIANTS = ("bare", "meshtrace", "opentelemetry", "mesh-nowrite", "mesh-norender")
SHAPES = ("sibling", "first")
PROCESSORS = ("sdk", "meshtrace")
WARMUP = 200


def _setup(variant: str, processor: str) -> tuple[Callable[[], None], Any]:
    """The outbound call for `variant`, and the tracer of the parent spans."""
    import requests

    # The same stand-ins as bench_library's outbound case (everything above urllib3's socket still runs).
    from bench_library import MockedAdapter, NoOpExporter
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from meshtrace.processor import DroppingBatchSpanProcessor
    from meshtrace.propagation import MeshPropagator

    provider = TracerProvider()
    batch = DroppingBatchSpanProcessor if processor == "meshtrace" else BatchSpanProcessor
    # The export thread never wakes (queue and batch larger than a run, an hour's schedule): how often it woke
    # would follow the wall clock, which differs from run to run under valgrind on a shared machine.
    provider.add_span_processor(batch(NoOpExporter(), max_queue_size=65536, max_export_batch_size=65536,
                                      schedule_delay_millis=3_600_000))
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(MeshPropagator())
    if variant == "opentelemetry":
        from opentelemetry.instrumentation.requests import RequestsInstrumentor
        RequestsInstrumentor().instrument(tracer_provider=provider)
    elif variant != "bare":
        from meshtrace.integrations import requests as mt_requests
        mt_requests.instrument(tracer_provider=provider)
        if variant == "mesh-nowrite":
            mt_requests.instrumentor.client.write_headers = lambda headers, keyed: None
        elif variant == "mesh-norender":
            mt_requests.instrumentor.client.write_headers = lambda headers, keyed: None
            MeshPropagator.child_keyed = lambda self, context, span, inner=None: ()  # type: ignore[method-assign]
    session = requests.Session()
    session.mount("http://", MockedAdapter())

    def call() -> None:
        session.get("http://backend.local:8080/items/1").close()

    return call, provider.get_tracer("probe")


def run(variant: str, shape: str, calls: int, processor: str) -> None:
    call, tracer = _setup(variant, processor)
    parent = tracer.start_as_current_span
    if shape == "sibling":
        with parent("parent"):
            for _ in range(WARMUP + calls):
                call()
    else:
        for _ in range(WARMUP + calls):
            with parent("parent"):
                call()
    sys.stdout.flush()
    os._exit(0)  # the queued spans are never exported, nor the export thread joined: not what is measured


def per_call(variant: str, shape: str, calls: int, processor: str) -> float:
    small, large = (instructions(__file__, ["--processor", processor, "--run", variant, shape, str(n)])
                    for n in (calls, 3 * calls))
    return (large - small) / (2 * calls)


def annotate(variant: str, shape: str, calls: int, limit: int, processor: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                        "--processor", processor, "--run", variant, shape, str(calls)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": "0"})
        listing = subprocess.run(["callgrind_annotate", "--inclusive=yes", f"--threshold={99.9}", out],
                                 check=True, capture_output=True, text=True).stdout
    lines = listing.splitlines()
    print("\n".join(lines[:limit + 20]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--shape", choices=(*SHAPES, "both"), default="both")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--annotate", choices=VARIANTS, help="print callgrind_annotate --inclusive for one variant")
    parser.add_argument("--limit", type=int, default=60, help="lines of the annotate listing")
    parser.add_argument("--processor", choices=PROCESSORS, default="sdk",
                        help="the batch processor: the SDK's (bench_library's) or meshtrace's (meshtrace.configure's)")
    parser.add_argument("--run", nargs=3, metavar=("VARIANT", "SHAPE", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        gc.collect()
        run(args.run[0], args.run[1], int(args.run[2]), args.processor)
        return 0
    if shutil.which("valgrind") is None:
        print("probe_outbound: skipped, valgrind is not installed")
        return 0
    shapes = SHAPES if args.shape == "both" else (args.shape,)
    if args.annotate:
        annotate(args.annotate, shapes[0], args.calls, args.limit, args.processor)
        return 0
    for shape in shapes:
        variants = dict.fromkeys(["bare", *args.variants])
        figures = {variant: per_call(variant, shape, args.calls, args.processor) for variant in variants}
        bare = figures["bare"]
        print(f"\n{shape} calls ({args.calls} and {3 * args.calls} per run, differenced): instructions per call")
        print(f"  {'bare':<14} {bare:>10,.0f}")
        for variant, figure in figures.items():
            if variant != "bare":
                print(f"  {variant:<14} {figure:>10,.0f}  (+{figure - bare:,.0f})")
        mesh, otel = figures.get("meshtrace"), figures.get("opentelemetry")
        if mesh is not None and otel is not None and otel > bare:
            print(f"  ratio meshtrace/opentelemetry added: {(mesh - bare) / (otel - bare):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

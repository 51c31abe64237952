"""Benchmark (a script, not a test): what meshtrace's instrumentation adds per request, next to OpenTelemetry's.

    python tests/bench/bench_library.py [--chunk-requests N] [--rounds R] [--profile]

In one process and one run: a bare Flask request (a direct WSGI call, body read and closed as a server
would), the same app with meshtrace, the same with opentelemetry-instrumentation-flask; then an outbound
`requests` call over a mocked connection (everything above urllib3's socket work runs), bare, with
meshtrace, with opentelemetry-instrumentation-requests. Every variant exports through the SDK's batch
processor to a no-op exporter and uses the same global propagator (meshtrace's, every header format).

How the added cost is estimated (the same way for every case and variant). A round times one short chunk of
each of the three variants back to back, in an order rotated every round, each chunk after a full garbage
collection (so no variant pays for another's garbage, nor the batch processor's backlog at a chunk's start).
A variant's added cost in a round is its chunk's us/request minus the bare chunk's of the same round: the
machine's slow drift (other processes on shared cores; a bare `requests` call itself swings by +-10%, as a
Session re-reads the environment and ~/.netrc every call) moves all three chunks of a round together and
cancels out of the paired difference. The figure reported is the median of those per-round differences over
many rounds, which a few rounds hit by a burst of noise cannot move; the spread (25th-75th percentile) of the
per-round figures is printed beside it, so a reader sees how far to trust the ratio. The best-round estimator
used before took each variant's minimum in different rounds, so bare's lucky round and the traced variants'
lucky rounds were unrelated, and the difference of two minima swung with whichever variant got luckiest.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import math
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import flask
import requests
import urllib3
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from werkzeug.test import EnvironBuilder

from meshtrace.integrations import flask as mt_flask
from meshtrace.integrations import requests as mt_requests
from meshtrace.propagation import MeshPropagator


class NoOpExporter(SpanExporter):
    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def make_app(name: str) -> flask.Flask:
    app = flask.Flask(name)

    @app.get("/users/<int:uid>")
    def user(uid: int) -> str:
        return "ok"

    return app


MESH_HEADERS = {"X-B3-TraceId": "4bf92f3577b34da6a3ce929d0e0e4736", "X-B3-SpanId": "00f067aa0ba902b7",
                "X-B3-Sampled": "1", "x-request-id": "5f9c2a8e-0d1b-4c3e-9a51-7e2d4b6c8f10"}


def wsgi_caller(app: flask.Flask, headers: dict[str, str] | None = None) -> Callable[[], None]:
    all_headers: dict[str, str] = {"User-Agent": "bench/1", **(headers or {})}
    base = EnvironBuilder(path="/users/42", headers=list(all_headers.items())).get_environ()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
        return len

    def call() -> None:
        body = app(dict(base), start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    return call


class FakePool:
    """Stands in for urllib3's connection pool: everything above the socket still runs."""

    def urlopen(self, method: str, url: str, **kwargs: Any) -> urllib3.HTTPResponse:
        return urllib3.HTTPResponse(body=io.BytesIO(b"ok"), status=200, headers={"Content-Length": "2"},
                                    preload_content=False)


class MockedAdapter(requests.adapters.HTTPAdapter):
    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> Any:
        return FakePool()


def requests_caller() -> Callable[[], None]:
    session = requests.Session()
    session.mount("http://", MockedAdapter())

    def call() -> None:
        session.get("http://backend.local:8080/items/1").close()

    return call


def us_per_call(call: Callable[[], None], count: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count * 1e6


# What turns a variant on and off around its chunk (instrumentation patches classes, so one at a time), and
# the call it times.
Variant = tuple[Callable[[], None], Callable[[], None], Callable[[], None]]


def _idle() -> None:
    return None


def interleaved(variants: dict[str, Variant], count: int, rounds: int, warmup: int = 3) -> dict[str, list[float]]:
    """us/request of each variant's chunk of `count` calls, per round; see the module doc."""
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            on, off, call = variants[name]
            on()
            try:
                figure = us_per_call(call, count)
            finally:
                off()
            if index >= warmup:
                results[name].append(figure)
    return results


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def report(title: str, results: dict[str, list[float]]) -> tuple[float, float]:
    """Print the medians of the per-round figures and their spread; returns (meshtrace, OTel) added us."""
    bare = results["bare"]
    added = {name: [value - base for value, base in zip(results[name], bare, strict=True)]
             for name in ("meshtrace", "opentelemetry")}
    ratios = [mesh / otel for mesh, otel in zip(added["meshtrace"], added["opentelemetry"], strict=True)
              if otel > 0]
    mesh_added, otel_added = statistics.median(added["meshtrace"]), statistics.median(added["opentelemetry"])
    print(f"\n{title}")
    print(f"  ({len(bare)} interleaved rounds; median per round, [25th-75th percentile])")
    q1, median, q3 = quartiles(bare)
    print(f"  bare           {median:8.1f} us/request  [{q1:.1f}-{q3:.1f}]")
    for name in ("meshtrace", "opentelemetry"):
        q1, median, q3 = quartiles(added[name])
        print(f"  {name:<14} {statistics.median(results[name]):8.1f} us/request  (+{median:.1f} us added,"
              f" [{q1:.1f}-{q3:.1f}])")
    low, mid, high = quartiles(ratios) if len(ratios) >= 2 else (math.nan,) * 3
    print(f"  ratio meshtrace/opentelemetry added cost: {mesh_added / otel_added:.2f}"
          f"  (per-round ratios: median {mid:.2f} [{low:.2f}-{high:.2f}])")
    return mesh_added, otel_added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=100000,
                        help="Flask requests per variant in all (outbound: a quarter of it), split over the rounds")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="profile the meshtrace Flask variant")
    options = parser.parse_args(argv)
    flask_chunk = max(1, options.requests // options.rounds)
    outbound_chunk = max(1, options.requests // 4 // options.rounds)

    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    exporter = NoOpExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=4096))
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(MeshPropagator())

    bare_app, mesh_app, otel_app = make_app("bare"), make_app("mesh"), make_app("otel")
    mt_flask.instrument_app(mesh_app, tracer_provider=provider)
    FlaskInstrumentor().instrument_app(otel_app, tracer_provider=provider)  # type: ignore[no-untyped-call]
    for title, headers in (
        ("Flask request entering the mesh (no trace headers; direct WSGI call, route /users/<int:uid>)", None),
        ("Flask request inside the mesh (B3 headers + x-request-id, as Istio sends them)", MESH_HEADERS),
    ):
        apps = {"bare": bare_app, "meshtrace": mesh_app, "opentelemetry": otel_app}
        flask_variants = {name: (_idle, _idle, wsgi_caller(app, headers)) for name, app in apps.items()}
        report(title, interleaved(flask_variants, flask_chunk, options.rounds))

    outbound = requests_caller()
    requests_variants: dict[str, Variant] = {
        "bare": (_idle, _idle, outbound),
        "meshtrace": (lambda: mt_requests.instrument(tracer_provider=provider), mt_requests.uninstrument, outbound),
        "opentelemetry": (lambda: RequestsInstrumentor().instrument(tracer_provider=provider),
                          lambda: RequestsInstrumentor().uninstrument(), outbound),
    }
    tracer = provider.get_tracer("bench")
    with tracer.start_as_current_span("parent"):  # outbound calls are made while serving
        requests_results = interleaved(requests_variants, outbound_chunk, options.rounds)
    report("Outbound requests call (mocked connection, under an active span)", requests_results)

    if options.profile:
        call = wsgi_caller(mesh_app)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(options.requests):
            call()
        profiler.disable()
        print("\nProfile of the meshtrace Flask variant (top 25 by own time):")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    provider.shutdown()
    print(f"\n(spans exported to the no-op exporter: {exporter.exported})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark (a script, not a test): what meshtrace's instrumentation adds per request, next to OpenTelemetry's.

    python tests/bench/bench_library.py [--requests N] [--rounds R] [--profile]

In one process and one run: a bare Flask request (a direct WSGI call, body read and closed as a server
would), the same app with meshtrace, the same with opentelemetry-instrumentation-flask; then an outbound
`requests` call over a mocked connection (everything above urllib3's socket work runs), bare, with
meshtrace, with opentelemetry-instrumentation-requests. Every variant exports through the SDK's batch
processor to a no-op exporter and uses the same global propagator (meshtrace's, every header format).
Rounds are interleaved and the best round of each variant is kept, which filters out machine noise.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
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


def best_us(call: Callable[[], None], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count * 1e6


def report(title: str, results: dict[str, list[float]]) -> tuple[float, float]:
    best = {name: min(values) for name, values in results.items()}
    mesh_added = best["meshtrace"] - best["bare"]
    otel_added = best["opentelemetry"] - best["bare"]
    print(f"\n{title}")
    print(f"  bare           {best['bare']:8.1f} us/request")
    print(f"  meshtrace      {best['meshtrace']:8.1f} us/request  (+{mesh_added:.1f} us)")
    print(f"  opentelemetry  {best['opentelemetry']:8.1f} us/request  (+{otel_added:.1f} us)")
    print(f"  ratio meshtrace/opentelemetry added cost: {mesh_added / otel_added:.2f}")
    return mesh_added, otel_added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="profile the meshtrace Flask variant")
    options = parser.parse_args(argv)

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
    flask_calls = {"bare": wsgi_caller(bare_app), "meshtrace": wsgi_caller(mesh_app),
                   "opentelemetry": wsgi_caller(otel_app)}
    for call in flask_calls.values():
        for _ in range(2000):
            call()  # warm caches
    flask_results: dict[str, list[float]] = {name: [] for name in flask_calls}
    for _ in range(options.rounds):
        for name, call in flask_calls.items():
            flask_results[name].append(best_us(call, options.requests))
    report("Flask request entering the mesh (no trace headers; direct WSGI call, route /users/<int:uid>)",
           flask_results)
    flask_calls = {"bare": wsgi_caller(bare_app, MESH_HEADERS), "meshtrace": wsgi_caller(mesh_app, MESH_HEADERS),
                   "opentelemetry": wsgi_caller(otel_app, MESH_HEADERS)}
    flask_results = {name: [] for name in flask_calls}
    for _ in range(options.rounds):
        for name, call in flask_calls.items():
            flask_results[name].append(best_us(call, options.requests))
    report("Flask request inside the mesh (B3 headers + x-request-id, as Istio sends them)", flask_results)

    outbound = requests_caller()
    instrumenters: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "bare": (lambda: None, lambda: None),
        "meshtrace": (lambda: mt_requests.instrument(tracer_provider=provider), mt_requests.uninstrument),
        "opentelemetry": (lambda: RequestsInstrumentor().instrument(tracer_provider=provider),
                          lambda: RequestsInstrumentor().uninstrument()),
    }
    requests_results: dict[str, list[float]] = {name: [] for name in instrumenters}
    tracer = provider.get_tracer("bench")
    for _ in range(options.rounds):
        for name, (on, off) in instrumenters.items():
            on()
            try:
                with tracer.start_as_current_span("parent"):  # outbound calls are made while serving
                    for _ in range(500):
                        outbound()
                    requests_results[name].append(best_us(outbound, options.requests // 4))
            finally:
                off()
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

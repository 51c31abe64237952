"""Fixtures and helpers for the integration tests (imported by name: a nested conftest.py would clash with
tests/conftest.py for mypy): an in-memory span sink, the mesh propagator, real loopback servers.

The instrumentors are pointed at a test TracerProvider explicitly (`tracer.use(provider)`), so these tests
never depend on the process-wide provider that other test modules (or configure()) may install.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from werkzeug.serving import BaseWSGIServer, make_server

from meshtrace.propagation import MeshPropagator


@dataclass
class Sink:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def wait(self, count: int, timeout: float = 5.0, kind: SpanKind | None = None) -> list[ReadableSpan]:
        """Spans once at least `count` (of `kind`) have ended; server spans end after the body is sent."""
        deadline = time.monotonic() + timeout
        while True:
            found = [span for span in self.spans() if kind is None or span.kind is kind]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.01)

    def clear(self) -> None:
        self.exporter.clear()


_SINK: Sink | None = None


def _sink() -> Sink:
    global _SINK  # noqa: PLW0603  (one provider for the whole session)
    if _SINK is None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _SINK = Sink(provider, exporter)
    return _SINK


@pytest.fixture
def sink() -> Iterator[Sink]:
    found = _sink()
    found.clear()
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(MeshPropagator())
    try:
        yield found
    finally:
        propagate.set_global_textmap(previous)
        found.clear()


@dataclass
class Server:
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Server]]:
    """Start a WSGI app on a free loopback port in a thread; stopped when the test ends."""
    started: list[Server] = []

    def start(app: Any) -> Server:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        found = Server(server, thread)
        started.append(found)
        return found

    yield start
    for server in started:
        server.close()


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """A plain WSGI app (not instrumented): answers /status/<code>, /redirect, else echoes the headers."""
    import json

    path = environ.get("PATH_INFO", "/")
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        start_response(f"{code} X", [("Content-Type", "text/plain")])
        return [b"status"]
    if path == "/redirect":
        start_response("302 Found", [("Location", "/echo")])
        return [b""]
    headers = {key[5:].lower().replace("_", "-"): value for key, value in environ.items()
               if key.startswith("HTTP_")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(headers).encode()]


@pytest.fixture
def echo(serve: Callable[[Any], Server]) -> Server:
    """A loopback server running `echo_app`."""
    return serve(echo_app)

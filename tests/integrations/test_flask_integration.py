"""Flask: server spans over a real loopback server, named by URL rule, continuing any header format."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import flask
import pytest
import requests
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from meshtrace.integrations import _base, threads
from meshtrace.integrations import flask as mt_flask
from meshtrace.integrations._wsgi import ServerTracer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"

if TYPE_CHECKING:
    from integration_support import Server, Sink

pytest_plugins = ["integration_support"]


def make_app(sink: Sink) -> flask.Flask:
    app = flask.Flask("flask_itest")
    tracer = sink.provider.get_tracer("user")
    release = threading.Event()
    app.config["release"] = release

    @app.get("/users/<int:uid>")
    def user(uid: int) -> dict[str, Any]:
        return {"uid": uid}

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("kaput")

    @app.get("/unavailable")
    def unavailable() -> tuple[str, int]:
        return "down", 503

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/nested")
    def nested() -> str:
        with tracer.start_as_current_span("user-work"):
            return "nested"

    @app.get("/stream")
    def stream() -> flask.Response:
        def body() -> Iterator[bytes]:
            yield b"first\n"
            release.wait(5)
            yield b"last\n"

        return flask.Response(body(), mimetype="text/plain")

    @app.get("/threads")
    def in_threads() -> str:
        def work(name: str) -> None:
            with tracer.start_as_current_span(name):
                pass

        thread = threading.Thread(target=work, args=("in-thread",))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(2) as pool:
            pool.submit(work, "in-pool").result()
        return "ok"

    return app


@pytest.fixture
def instrumented(sink: Sink) -> Iterator[None]:
    mt_flask.instrumentor.server.tracer.use(sink.provider)
    mt_flask.instrument(excluded_urls=["^/healthz$"])
    try:
        yield
    finally:
        mt_flask.uninstrument()


@pytest.fixture
def app_server(instrumented: None, sink: Sink, serve: Callable[[Any], Server]) -> tuple[flask.Flask, Server]:
    app = make_app(sink)
    return app, serve(app)


def server_spans(sink: Sink, count: int = 1) -> list[Any]:
    spans = sink.wait(count, kind=SpanKind.SERVER)
    assert len(spans) == count, [span.name for span in spans]
    return spans


def test_server_span_named_by_rule_with_semconv_attributes(app_server: tuple[flask.Flask, Server],
                                                          sink: Sink) -> None:
    _, server = app_server
    response = requests.get(f"{server.url}/users/42?x=1", headers={"User-Agent": "itest/1"}, timeout=5)
    assert response.json() == {"uid": 42}
    (span,) = server_spans(sink)
    assert span.name == "GET /users/<int:uid>"
    assert span.kind is SpanKind.SERVER
    attributes = dict(span.attributes or {})
    assert attributes == {
        "http.request.method": "GET",
        "url.path": "/users/42",
        "url.scheme": "http",
        "url.query": "x=1",
        "server.address": "127.0.0.1",
        "server.port": server.server.server_port,
        "client.address": "127.0.0.1",
        "user_agent.original": "itest/1",
        "network.protocol.version": "1.1",
        "http.route": "/users/<int:uid>",
        "http.response.status_code": 200,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None


@pytest.mark.parametrize(("headers", "sampled"), [
    ({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}, True),
    ({"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": PARENT_ID, "X-B3-Sampled": "1"}, True),
    ({"b3": f"{TRACE_ID}-{PARENT_ID}-1"}, True),
    ({"uber-trace-id": f"{TRACE_ID}:{PARENT_ID}:0:1"}, True),
    ({"ot-tracer-traceid": TRACE_ID, "ot-tracer-spanid": PARENT_ID, "ot-tracer-sampled": "true"}, True),
], ids=["w3c", "b3multi", "b3single", "jaeger", "ot"])
def test_continues_the_incoming_trace_in_any_format(app_server: tuple[flask.Flask, Server], sink: Sink,
                                                    headers: dict[str, str], sampled: bool) -> None:
    _, server = app_server
    requests.get(f"{server.url}/users/1", headers=headers, timeout=5).raise_for_status()
    (span,) = server_spans(sink)
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent is not None
    assert span.parent.span_id == int(PARENT_ID, 16)
    assert span.parent.is_remote


def test_unmatched_route_gets_the_method_alone(app_server: tuple[flask.Flask, Server], sink: Sink) -> None:
    _, server = app_server
    assert requests.get(f"{server.url}/no/such/page/123", timeout=5).status_code == 404
    (span,) = server_spans(sink)
    assert span.name == "GET"
    assert "http.route" not in (span.attributes or {})
    assert (span.attributes or {})["http.response.status_code"] == 404
    assert span.status.status_code is StatusCode.UNSET  # 4xx is the client's fault on a server span


def test_unhandled_exception_is_recorded_once_and_marks_error(app_server: tuple[flask.Flask, Server],
                                                             sink: Sink) -> None:
    _, server = app_server
    assert requests.get(f"{server.url}/boom", timeout=5).status_code == 500
    (span,) = server_spans(sink)
    assert span.name == "GET /boom"
    assert span.status.status_code is StatusCode.ERROR
    events = [event for event in span.events if event.name == "exception"]
    assert len(events) == 1
    assert (events[0].attributes or {})["exception.type"] == "RuntimeError"
    assert (span.attributes or {})["error.type"] == "RuntimeError"
    assert (span.attributes or {})["http.response.status_code"] == 500


def test_exception_propagating_out_of_the_app_is_recorded(instrumented: None, sink: Sink) -> None:
    app = make_app(sink)
    app.testing = True  # PROPAGATE_EXCEPTIONS: the error leaves wsgi_app
    with pytest.raises(RuntimeError):
        app.test_client().get("/boom")
    (span,) = server_spans(sink)
    assert span.status.status_code is StatusCode.ERROR
    assert len([event for event in span.events if event.name == "exception"]) == 1


def test_5xx_response_marks_error(app_server: tuple[flask.Flask, Server], sink: Sink) -> None:
    _, server = app_server
    assert requests.get(f"{server.url}/unavailable", timeout=5).status_code == 503
    (span,) = server_spans(sink)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "503"
    assert not span.events


def test_streaming_response_ends_span_after_the_body(app_server: tuple[flask.Flask, Server], sink: Sink) -> None:
    app, server = app_server
    with requests.get(f"{server.url}/stream", stream=True, timeout=5) as response:
        lines = response.iter_lines()
        assert next(lines) == b"first"
        time.sleep(0.2)
        assert not sink.spans(), "the span ended before the body was finished"
        started = time.time_ns()
        app.config["release"].set()
        assert next(lines) == b"last"
    (span,) = server_spans(sink)
    assert span.name == "GET /stream"
    assert span.end_time is not None
    assert span.end_time >= started
    assert span.end_time - (span.start_time or 0) >= 200_000_000


def test_excluded_urls_are_not_traced(app_server: tuple[flask.Flask, Server], sink: Sink) -> None:
    _, server = app_server
    assert requests.get(f"{server.url}/healthz", timeout=5).text == "ok"
    requests.get(f"{server.url}/users/7", timeout=5)
    spans = server_spans(sink)
    assert [span.name for span in spans] == ["GET /users/<int:uid>"]


def test_excluded_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch, sink: Sink) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "users/7,ping")
    instrumentor = mt_flask.FlaskInstrumentor()
    instrumentor.instrument()
    try:
        excluded = instrumentor.server.excluded
        assert excluded is not None
        assert excluded.search("/users/7")
        assert excluded.search("/api/ping")
        assert not excluded.search("/users/8")
    finally:
        instrumentor.uninstrument()


def test_user_spans_nest_under_the_server_span(app_server: tuple[flask.Flask, Server], sink: Sink) -> None:
    _, server = app_server
    requests.get(f"{server.url}/nested", timeout=5).raise_for_status()
    spans = sink.wait(2)
    by_name = {span.name: span for span in spans}
    root, child = by_name["GET /nested"], by_name["user-work"]
    assert child.parent is not None
    assert child.parent.span_id == root.context.span_id
    assert child.context.trace_id == root.context.trace_id


def test_context_follows_threads_and_executor_tasks(app_server: tuple[flask.Flask, Server], sink: Sink) -> None:
    _, server = app_server
    threads.instrument()
    try:
        requests.get(f"{server.url}/threads", timeout=5).raise_for_status()
    finally:
        threads.uninstrument()
    spans = sink.wait(3)
    by_name = {span.name: span for span in spans}
    root = by_name["GET /threads"]
    for name in ("in-thread", "in-pool"):
        parent = by_name[name].parent
        assert parent is not None, name
        assert parent.span_id == root.context.span_id, name


def test_instrument_is_idempotent_and_uninstrument_restores(sink: Sink, serve: Callable[[Any], Server]) -> None:
    original = flask.Flask.wsgi_app
    mt_flask.instrumentor.server.tracer.use(sink.provider)
    mt_flask.instrument()
    mt_flask.instrument()
    try:
        assert flask.Flask.wsgi_app is not original
        server = serve(make_app(sink))
        requests.get(f"{server.url}/users/1", timeout=5)
        server_spans(sink, 1)
    finally:
        mt_flask.uninstrument()
        mt_flask.uninstrument()
    assert flask.Flask.wsgi_app is original
    sink.clear()
    requests.get(f"{server.url}/users/2", timeout=5).raise_for_status()
    time.sleep(0.2)
    assert not sink.spans()


def test_instrument_app_alone_and_beside_the_global_patch(instrumented: None, sink: Sink,
                                                         serve: Callable[[Any], Server]) -> None:
    app = make_app(sink)
    mt_flask.instrument_app(app, tracer_provider=sink.provider)
    mt_flask.instrument_app(app)
    server = serve(app)
    requests.get(f"{server.url}/boom", timeout=5)
    (span,) = server_spans(sink)
    assert span.name == "GET /boom"
    assert len([event for event in span.events if event.name == "exception"]) == 1
    mt_flask.uninstrument_app(app)
    assert "wsgi_app" not in app.__dict__


def test_failure_inside_the_wrapper_falls_back_to_the_app(app_server: tuple[flask.Flask, Server], sink: Sink,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _, server = app_server

    def broken(self: ServerTracer, environ: Any, start_response: Any) -> None:
        raise ValueError("telemetry bug")

    before = _base.failures().get("flask.request", 0)
    monkeypatch.setattr(ServerTracer, "start", broken)
    response = requests.get(f"{server.url}/users/5", timeout=5)
    assert response.json() == {"uid": 5}
    assert _base.failures()["flask.request"] == before + 1
    assert not sink.spans()


def test_outer_active_server_span_is_not_doubled(instrumented: None, sink: Sink) -> None:
    app = make_app(sink)
    tracer = sink.provider.get_tracer("outer")
    with tracer.start_as_current_span("outer-server", kind=SpanKind.SERVER):
        assert app.test_client().get("/users/3").status_code == 200
    assert [span.name for span in sink.spans()] == ["outer-server"]


def test_coexists_with_opentelemetry_instrumentation_flask(instrumented: None, sink: Sink,
                                                           serve: Callable[[Any], Server]) -> None:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = make_app(sink)
    FlaskInstrumentor().instrument_app(app, tracer_provider=sink.provider)  # type: ignore[no-untyped-call]
    try:
        server = serve(app)
        requests.get(f"{server.url}/nested", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
                      timeout=5).raise_for_status()
        spans = sink.wait(2)
        time.sleep(0.1)
        spans = sink.spans()
        servers = [span for span in spans if span.kind in (SpanKind.SERVER, SpanKind.INTERNAL)
                   and span.name != "user-work"]
        assert len(servers) == 1, [(span.name, span.kind) for span in spans]
        user = next(span for span in spans if span.name == "user-work")
        assert user.parent is not None
        assert user.parent.span_id == servers[0].context.span_id
        assert servers[0].context.trace_id == int(TRACE_ID, 16)
    finally:
        FlaskInstrumentor().uninstrument_app(app)  # type: ignore[no-untyped-call]


def test_current_span_is_cleared_after_the_request(app_server: tuple[flask.Flask, Server], sink: Sink) -> None:
    app, _ = app_server
    app.test_client().get("/users/9")
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_baggage_alone_still_reaches_the_request_context(instrumented: None, sink: Sink) -> None:
    from opentelemetry import baggage

    from meshtrace.propagation import get_request_id

    app = flask.Flask("baggage_itest")
    seen: dict[str, object] = {}

    @app.get("/")
    def index() -> str:
        seen["tenant"] = baggage.get_baggage("tenant")
        seen["request_id"] = get_request_id()
        return "ok"

    client = app.test_client()
    assert client.get("/", headers={"uberctx-tenant": "acme"}).get_data() == b"ok"
    assert seen["tenant"] == "acme"
    assert client.get("/", headers={"x-request-id": "rid-only"}).get_data() == b"ok"
    assert seen["request_id"] == "rid-only"

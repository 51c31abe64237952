"""Django under ASGI: server spans named by URL pattern over a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests
import uvicorn
from django.http import HttpResponse, StreamingHttpResponse  # type: ignore[import-untyped]
from django.test.utils import override_settings  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]
from django_support import boom, configure, healthz, user
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from meshtrace.integrations import django as mt_django
from meshtrace.integrations._asgi import scope_environ

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"

if TYPE_CHECKING:
    from integration_support import Sink

pytest_plugins = ["integration_support"]


#: The tracer user code in the views below makes its own OTel spans with (the test's sink provider's).
USER_TRACER: list[trace.Tracer] = []


def nested(request: Any) -> Any:
    """A sync view (Django runs it in a worker thread under ASGI) making a user OTel span of its own."""
    with USER_TRACER[0].start_as_current_span("user-work"):
        return HttpResponse("sync")


async def nested_async(request: Any) -> Any:
    await asyncio.sleep(0)
    with USER_TRACER[0].start_as_current_span("user-work"):
        await asyncio.sleep(0)
    return HttpResponse("async")


STREAM_GATE: list[asyncio.Event] = []


async def stream(request: Any) -> Any:
    gate = asyncio.Event()
    STREAM_GATE[:] = [gate]

    async def body() -> AsyncIterator[bytes]:
        yield b"first\n"
        await asyncio.wait_for(gate.wait(), 5)
        yield b"last\n"

    return StreamingHttpResponse(body())


urlpatterns = [
    path("users/<int:uid>/", user),
    path("nested/", nested),
    path("nested-async/", nested_async),
    path("boom/", boom),
    path("healthz/", healthz),
    path("stream/", stream),
]

configure(__name__)


class AsgiServer:
    """uvicorn serving a Django ASGIHandler on a free loopback port, in a thread with its own event loop."""

    def __init__(self) -> None:
        from django.core.handlers.asgi import ASGIHandler  # type: ignore[import-untyped]

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(ASGIHandler(), lifespan="off", log_level="warning", loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.socket.close()


@pytest.fixture
def serve_asgi() -> Iterator[Callable[[], AsgiServer]]:
    started: list[AsgiServer] = []

    def start() -> AsgiServer:
        found = AsgiServer()
        started.append(found)
        return found

    with override_settings(ROOT_URLCONF=__name__):
        yield start
        for server in started:
            server.close()


@pytest.fixture
def server(sink: Sink, serve_asgi: Callable[[], AsgiServer]) -> Iterator[AsgiServer]:
    mt_django.instrument(excluded_urls="^/healthz/$", tracer_provider=sink.provider)
    USER_TRACER[:] = [sink.provider.get_tracer("user-code")]
    try:
        yield serve_asgi()
    finally:
        mt_django.uninstrument()


def server_spans(sink: Sink, count: int = 1) -> list[Any]:
    spans = sink.wait(count, kind=SpanKind.SERVER)
    assert len(spans) == count, [span.name for span in spans]
    return spans


def test_span_named_by_url_pattern_and_parented(server: AsgiServer, sink: Sink) -> None:
    response = requests.get(f"{server.url}/users/42/?a=b",
                            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "user-agent": "probe/1"},
                            timeout=5)
    assert response.json() == {"uid": 42}
    (span,) = server_spans(sink)
    assert span.name == "GET /users/<int:uid>/"
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/users/<int:uid>/"
    assert attributes["url.path"] == "/users/42/"
    assert attributes["url.query"] == "a=b"
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.port"] == server.port
    assert attributes["user_agent.original"] == "probe/1"
    assert attributes["client.address"] == "127.0.0.1"
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent is not None
    assert span.parent.span_id == int(PARENT_ID, 16)


@pytest.mark.parametrize("view", ["nested", "nested-async"])
def test_user_spans_nest_under_the_server_span(server: AsgiServer, sink: Sink, view: str) -> None:
    assert requests.get(f"{server.url}/{view}/", headers={"b3": f"{TRACE_ID}-{PARENT_ID}-1"}, timeout=5).ok
    (span,) = server_spans(sink)
    (user_span,) = [found for found in sink.spans() if found.name == "user-work"]
    assert user_span.parent is not None
    assert user_span.parent.span_id == span.context.span_id
    assert user_span.context.trace_id == span.context.trace_id == int(TRACE_ID, 16)


def test_not_found_is_named_by_method(server: AsgiServer, sink: Sink) -> None:
    assert requests.get(f"{server.url}/nope/1/", timeout=5).status_code == 404
    (span,) = server_spans(sink)
    assert span.name == "GET"
    assert (span.attributes or {})["http.response.status_code"] == 404
    assert span.status.status_code is StatusCode.UNSET


def test_view_exception_recorded_once_and_error(server: AsgiServer, sink: Sink) -> None:
    assert requests.get(f"{server.url}/boom/", timeout=5).status_code == 500
    (span,) = server_spans(sink)
    assert span.name == "GET /boom/"
    assert span.status.status_code is StatusCode.ERROR
    assert len([event for event in span.events if event.name == "exception"]) == 1
    assert (span.attributes or {})["error.type"] == "RuntimeError"
    assert (span.attributes or {})["http.response.status_code"] == 500


def test_streaming_ends_with_the_body(server: AsgiServer, sink: Sink) -> None:
    with requests.get(f"{server.url}/stream/", stream=True, timeout=5) as response:
        lines = response.iter_lines()
        assert next(lines) == b"first"
        time.sleep(0.2)
        assert not sink.spans()  # the view has returned, the body is still streaming
        gate = STREAM_GATE[0]
        gate._loop.call_soon_threadsafe(gate.set)  # type: ignore[attr-defined]  # the server thread's loop
        assert next(lines) == b"last"
    (span,) = server_spans(sink)
    assert span.name == "GET /stream/"
    assert (span.end_time or 0) - (span.start_time or 0) >= 200_000_000


def test_excluded_urls(server: AsgiServer, sink: Sink) -> None:
    assert requests.get(f"{server.url}/healthz/", timeout=5).text == "ok"
    requests.get(f"{server.url}/users/1/", timeout=5)
    assert [span.name for span in server_spans(sink)] == ["GET /users/<int:uid>/"]


def test_uninstrument_restores(sink: Sink, serve_asgi: Callable[[], AsgiServer]) -> None:
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.base import BaseHandler  # type: ignore[import-untyped]

    call, get_response_async = ASGIHandler.__call__, BaseHandler.get_response_async
    mt_django.instrument(tracer_provider=sink.provider)
    assert ASGIHandler.__call__ is not call
    mt_django.uninstrument()
    assert (ASGIHandler.__call__, BaseHandler.get_response_async) == (call, get_response_async)
    server = serve_asgi()
    assert requests.get(f"{server.url}/boom/", timeout=5).status_code == 500
    time.sleep(0.2)
    assert not sink.spans()


def test_scope_environ_is_what_a_wsgi_server_gives() -> None:
    scope = {
        "type": "http", "http_version": "1.1", "method": "post", "scheme": "https", "path": "/a b/",
        "query_string": b"x=1&y=%C3%A9", "server": ("example.test", 8443), "client": ("10.0.0.9", 5555),
        "headers": [(b"host", b"example.test:8443"), (b"content-type", b"text/plain"),
                    (b"content-length", b"3"), (b"x-b3-traceid", b"ab"), (b"accept", b"a"), (b"accept", b"b")],
    }
    assert scope_environ(scope) == {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/a b/", "QUERY_STRING": "x=1&y=%C3%A9",
        "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "https", "SERVER_NAME": "example.test",
        "SERVER_PORT": "8443", "REMOTE_ADDR": "10.0.0.9", "HTTP_HOST": "example.test:8443",
        "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "3", "HTTP_X_B3_TRACEID": "ab", "HTTP_ACCEPT": "a,b",
    }



@pytest.mark.parametrize("otel_traces_asgi", [True, False])
def test_coexists_with_opentelemetry_instrumentation_django(sink: Sink, serve_asgi: Callable[[], AsgiServer],
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            otel_traces_asgi: bool) -> None:
    """One SERVER span either way: OTel's when its middleware traces ASGI requests, else ours.

    Without opentelemetry-instrumentation-asgi, OTel's Django middleware passes ASGI requests through
    untraced (`_is_asgi_supported` False, simulated here); meshtrace must not step aside then.
    """
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.django.middleware import otel_middleware

    if not otel_traces_asgi:
        monkeypatch.setattr(otel_middleware, "_is_asgi_supported", False)
    mt_django.instrument(tracer_provider=sink.provider)
    DjangoInstrumentor().instrument(tracer_provider=sink.provider)
    try:
        server = serve_asgi()
        requests.get(f"{server.url}/users/5/", headers={"b3": f"{TRACE_ID}-{PARENT_ID}-1"}, timeout=5)
        sink.wait(1)
        time.sleep(0.2)
        spans = sink.spans()
        assert len(spans) == 1, [(span.name, span.kind) for span in spans]
        assert spans[0].kind is SpanKind.SERVER
        assert spans[0].context.trace_id == int(TRACE_ID, 16)
        scope = spans[0].instrumentation_scope
        assert scope is not None
        assert scope.name.startswith("meshtrace") is not otel_traces_asgi
    finally:
        DjangoInstrumentor().uninstrument()
        mt_django.uninstrument()


def test_websocket_and_lifespan_scopes_pass_through_untraced(sink: Sink) -> None:
    from meshtrace.integrations._asgi import asgi_wrapper
    from meshtrace.integrations._base import Switch

    seen: list[str] = []

    async def app(self: Any, scope: Any, receive: Any, send: Any) -> str:
        seen.append(scope["type"])
        return "done"

    tracer = mt_django.instrumentor.server
    tracer.tracer.use(sink.provider)
    entry = asgi_wrapper(tracer, "test", lambda handler: False)(app, Switch())
    for kind in ("websocket", "lifespan"):
        assert asyncio.run(entry(object(), {"type": kind}, None, None)) == "done"
    time.sleep(0.1)
    assert seen == ["websocket", "lifespan"]
    assert not sink.spans()


def test_a_scope_our_code_cannot_read_is_served_untraced(sink: Sink) -> None:
    """Telemetry never breaks the app: headers that are not bytes make our code fail, the app still runs."""
    from meshtrace.integrations._asgi import asgi_wrapper
    from meshtrace.integrations._base import Switch, failures

    served: list[Any] = []

    async def app(self: Any, scope: Any, receive: Any, send: Any) -> None:
        served.append(scope["path"])

    tracer = mt_django.instrumentor.server
    tracer.tracer.use(sink.provider)
    before = failures().get("bad-scope", 0)
    entry = asgi_wrapper(tracer, "bad-scope", lambda handler: False)(app, Switch())
    asyncio.run(entry(object(), {"type": "http", "path": "/x", "headers": [("host", "not-bytes")]}, None, None))
    assert served == ["/x"]
    assert failures().get("bad-scope", 0) == before + 1
    time.sleep(0.1)
    assert not sink.spans()

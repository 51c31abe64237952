"""Django (WSGI): server spans named by URL pattern over a real loopback server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests
from django.http import StreamingHttpResponse  # type: ignore[import-untyped]
from django.test.utils import override_settings  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]
from django_support import boom, configure, healthz, user
from opentelemetry.trace import SpanKind, StatusCode

from meshtrace.integrations import django as mt_django

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
RELEASE = threading.Event()

if TYPE_CHECKING:
    from integration_support import Server, Sink

pytest_plugins = ["integration_support"]


def stream(request: Any) -> Any:
    def body() -> Iterator[bytes]:
        yield b"first\n"
        RELEASE.wait(5)
        yield b"last\n"

    return StreamingHttpResponse(body())


urlpatterns = [
    path("users/<int:uid>/", user),
    path("boom/", boom),
    path("healthz/", healthz),
    path("stream/", stream),
]

configure(__name__)


@pytest.fixture(autouse=True)
def own_urls() -> Iterator[None]:
    """This module's URLs, whichever Django test module configured the settings first."""
    with override_settings(ROOT_URLCONF=__name__):
        yield


@pytest.fixture
def instrumented(sink: Sink) -> Iterator[None]:
    mt_django.instrument(excluded_urls="^/healthz/$", tracer_provider=sink.provider)
    try:
        yield
    finally:
        mt_django.uninstrument()


@pytest.fixture
def server(instrumented: None, serve: Callable[[Any], Server]) -> Server:
    from django.core.handlers.wsgi import WSGIHandler  # type: ignore[import-untyped]

    return serve(WSGIHandler())


def server_spans(sink: Sink, count: int = 1) -> list[Any]:
    spans = sink.wait(count, kind=SpanKind.SERVER)
    assert len(spans) == count, [span.name for span in spans]
    return spans


def test_span_named_by_url_pattern(server: Server, sink: Sink) -> None:
    response = requests.get(f"{server.url}/users/42/?a=b", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
                            timeout=5)
    assert response.json() == {"uid": 42}
    (span,) = server_spans(sink)
    assert span.name == "GET /users/<int:uid>/"
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/users/<int:uid>/"
    assert attributes["url.path"] == "/users/42/"
    assert attributes["url.query"] == "a=b"
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.port"] == server.server.server_port
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent is not None
    assert span.parent.span_id == int(PARENT_ID, 16)


def test_not_found_is_named_by_method(server: Server, sink: Sink) -> None:
    assert requests.get(f"{server.url}/nope/1/", timeout=5).status_code == 404
    (span,) = server_spans(sink)
    assert span.name == "GET"
    assert span.status.status_code is StatusCode.UNSET


def test_view_exception_recorded_and_error(server: Server, sink: Sink) -> None:
    assert requests.get(f"{server.url}/boom/", timeout=5).status_code == 500
    (span,) = server_spans(sink)
    assert span.name == "GET /boom/"
    assert span.status.status_code is StatusCode.ERROR
    events = [event for event in span.events if event.name == "exception"]
    assert len(events) == 1
    assert (span.attributes or {})["error.type"] == "RuntimeError"
    assert (span.attributes or {})["http.response.status_code"] == 500


def test_streaming_ends_with_the_body(server: Server, sink: Sink) -> None:
    RELEASE.clear()
    with requests.get(f"{server.url}/stream/", stream=True, timeout=5) as response:
        lines = response.iter_lines()
        assert next(lines) == b"first"
        time.sleep(0.2)
        assert not sink.spans()
        RELEASE.set()
        assert next(lines) == b"last"
    (span,) = server_spans(sink)
    assert span.name == "GET /stream/"
    assert (span.end_time or 0) - (span.start_time or 0) >= 200_000_000


def test_excluded_urls(server: Server, sink: Sink) -> None:
    assert requests.get(f"{server.url}/healthz/", timeout=5).text == "ok"
    requests.get(f"{server.url}/users/1/", timeout=5)
    assert [span.name for span in server_spans(sink)] == ["GET /users/<int:uid>/"]


def test_uninstrument_restores(sink: Sink, serve: Callable[[Any], Server]) -> None:
    from django.core.handlers.base import BaseHandler  # type: ignore[import-untyped]
    from django.core.handlers.wsgi import WSGIHandler

    call, get_response = WSGIHandler.__call__, BaseHandler.get_response
    mt_django.instrument(tracer_provider=sink.provider)
    assert WSGIHandler.__call__ is not call
    mt_django.uninstrument()
    assert (WSGIHandler.__call__, BaseHandler.get_response) == (call, get_response)
    server = serve(WSGIHandler())
    assert requests.get(f"{server.url}/boom/", timeout=5).status_code == 500
    time.sleep(0.2)
    assert not sink.spans()


def test_coexists_with_opentelemetry_instrumentation_django(sink: Sink, serve: Callable[[Any], Server]) -> None:
    from django.core.handlers.wsgi import WSGIHandler
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    mt_django.instrument(tracer_provider=sink.provider)
    DjangoInstrumentor().instrument(tracer_provider=sink.provider)
    try:
        server = serve(WSGIHandler())
        requests.get(f"{server.url}/users/5/", headers={"b3": f"{TRACE_ID}-{PARENT_ID}-1"}, timeout=5)
        spans = sink.wait(1)
        time.sleep(0.2)
        spans = sink.spans()
        assert len(spans) == 1, [(span.name, span.kind) for span in spans]
        assert spans[0].kind is SpanKind.SERVER
        assert spans[0].context.trace_id == int(TRACE_ID, 16)
    finally:
        DjangoInstrumentor().uninstrument()
        mt_django.uninstrument()

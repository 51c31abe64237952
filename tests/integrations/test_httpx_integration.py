"""httpx: CLIENT spans for sync and async clients, subclasses and custom transports included."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import SpanKind, StatusCode

from meshtrace.integrations import httpx as mt_httpx

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"

if TYPE_CHECKING:
    from integration_support import Server, Sink

pytest_plugins = ["integration_support"]


class CompanyClient(httpx.Client):
    """A subclass made before instrumentation, as a user's code would."""



@pytest.fixture
def early_client() -> Iterator[CompanyClient]:
    with CompanyClient() as client:
        yield client


@pytest.fixture
def instrumented(sink: Sink, early_client: CompanyClient) -> Iterator[None]:
    mt_httpx.instrument(tracer_provider=sink.provider)
    try:
        yield
    finally:
        mt_httpx.uninstrument()


def test_sync_client_span_and_injection(instrumented: None, echo: Server, sink: Sink) -> None:
    token = otel_context.attach(propagate.extract({"uber-trace-id": f"{TRACE_ID}:{PARENT_ID}:0:1",
                                                   "x-request-id": "rid-9"}))
    try:
        sent = httpx.get(f"{echo.url}/echo").json()
    finally:
        otel_context.detach(token)
    (span,) = sink.spans()
    assert span.kind is SpanKind.CLIENT
    assert span.name == "GET"
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.full": f"{echo.url}/echo",
        "server.address": "127.0.0.1",
        "server.port": echo.server.server_port,
        "http.response.status_code": 200,
    }
    assert sent["x-request-id"] == "rid-9"
    assert sent["x-b3-spanid"] == f"{span.context.span_id:016x}"
    assert sent["uber-trace-id"].startswith(f"{TRACE_ID}:{span.context.span_id:016x}:")


def test_subclass_created_before_instrumentation_is_covered(instrumented: None, echo: Server, sink: Sink,
                                                            early_client: CompanyClient) -> None:
    sent = early_client.get(f"{echo.url}/echo").json()
    (span,) = sink.spans()
    assert sent["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


def test_custom_transport_is_covered(instrumented: None, sink: Sink) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        assert client.post("http://svc.local:8080/api", content=b"x").status_code == 500
    (span,) = sink.spans()
    assert (span.attributes or {})["server.address"] == "svc.local"
    assert (span.attributes or {})["server.port"] == 8080
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "500"
    assert "traceparent" in seen[0].headers


def test_redirect_hops_and_errors(instrumented: None, echo: Server, sink: Sink) -> None:
    with sink.provider.get_tracer("app").start_as_current_span("handler"), httpx.Client(follow_redirects=True) as c:
        c.get(f"{echo.url}/redirect")
    hops = [span for span in sink.spans() if span.kind is SpanKind.CLIENT]
    assert [(span.attributes or {})["http.response.status_code"] for span in hops] == [302, 200]
    sink.clear()
    with pytest.raises(httpx.ConnectError):
        httpx.get("http://127.0.0.1:1/")
    (span,) = sink.spans()
    assert (span.attributes or {})["error.type"] == "ConnectError"
    assert span.status.status_code is StatusCode.ERROR


def test_async_client_keeps_context_across_await(instrumented: None, echo: Server, sink: Sink) -> None:
    tracer = sink.provider.get_tracer("app")

    async def main() -> list[dict[str, str]]:
        async with httpx.AsyncClient() as client:
            with tracer.start_as_current_span("handler"):
                return [response.json() for response in
                        await asyncio.gather(*(client.get(f"{echo.url}/echo") for _ in range(3)))]

    sent = asyncio.run(main())
    spans = sink.spans()
    handler = next(span for span in spans if span.name == "handler")
    clients = [span for span in spans if span.kind is SpanKind.CLIENT]
    assert len(clients) == 3
    assert all(span.parent is not None and span.parent.span_id == handler.context.span_id for span in clients)
    assert {item["traceparent"].split("-")[2] for item in sent} == {f"{s.context.span_id:016x}" for s in clients}


def test_suppressed_and_uninstrumented_calls_are_not_traced(echo: Server, sink: Sink) -> None:
    original = httpx.Client._send_single_request
    mt_httpx.instrument(tracer_provider=sink.provider)
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        httpx.get(f"{echo.url}/echo")
    finally:
        otel_context.detach(token)
    assert not sink.spans()
    mt_httpx.uninstrument()
    assert httpx.Client._send_single_request is original
    assert "traceparent" not in httpx.get(f"{echo.url}/echo").json()
    assert not sink.spans()


def test_coexists_with_opentelemetry_instrumentation_httpx(echo: Server, sink: Sink) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().instrument(tracer_provider=sink.provider)
    mt_httpx.instrument(tracer_provider=sink.provider)
    try:
        with sink.provider.get_tracer("user").start_as_current_span("user-span"):
            sent = httpx.get(f"{echo.url}/echo").json()

        async def call() -> None:
            async with httpx.AsyncClient() as client:
                await client.get(f"{echo.url}/echo")

        asyncio.run(call())
    finally:
        mt_httpx.uninstrument()
        HTTPXClientInstrumentor().uninstrument()
    clients = [span for span in sink.spans() if span.kind is SpanKind.CLIENT]
    assert len(clients) == 2, [(span.name, span.instrumentation_scope) for span in clients]
    assert sent["traceparent"].split("-")[2] == f"{clients[0].context.span_id:016x}"

"""Sibling outbound calls (several made while serving one request) send exactly what `MeshPropagator.inject`
writes for each call's own span, through requests and httpx (sync and async), with the user's own spelling of a
trace header replaced. The second and later siblings take the propagator's child template; the first renders."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
import requests
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context, set_value
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from meshtrace.integrations import httpx as mt_httpx
from meshtrace.integrations import requests as mt_requests
from meshtrace.propagation import MeshPropagator, set_request_id
from meshtrace.propagation._common import _REMOTE_PARENT

if TYPE_CHECKING:
    from integration_support import Server, Sink

pytest_plugins = ["integration_support"]


@pytest.fixture
def instrumented(sink: Sink) -> Iterator[None]:
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(MeshPropagator())
    mt_requests.instrument(tracer_provider=sink.provider)
    mt_httpx.instrument(tracer_provider=sink.provider)
    try:
        yield
    finally:
        mt_httpx.uninstrument()
        mt_requests.uninstrument()
        propagate.set_global_textmap(previous)


def _expected(span: ReadableSpan, request_id: str) -> dict[str, str]:
    """What a fresh propagator injects with `span`'s context current (its parent remembered the way extraction
    leaves a remote parent), in a request that arrived with `request_id`."""
    assert span.parent is not None
    context = trace.set_span_in_context(trace.NonRecordingSpan(span.context), Context())
    context = set_value(_REMOTE_PARENT, (span.context.span_id, span.parent.span_id), context)
    carrier: dict[str, str] = {}
    MeshPropagator().inject(carrier, set_request_id(request_id, context))
    return carrier


def _sent(echoed: dict[str, str], expected: dict[str, str]) -> dict[str, str]:
    return {name: echoed.get(name, "<missing>") for name in expected}


@pytest.mark.parametrize("client", ["requests", "httpx", "httpx-async"])
def test_siblings_send_what_inject_writes_for_their_own_span(instrumented: None, echo: Server, sink: Sink,
                                                             client: str) -> None:
    tracer = sink.provider.get_tracer("app")
    url = f"{echo.url}/echo"
    user_headers = {"X-B3-Sampled": "0", "Accept": "application/json"}  # the user's spelling, replaced
    with tracer.start_as_current_span("handler", kind=SpanKind.SERVER):
        token = otel_context.attach(set_request_id("rid-42"))
        try:
            if client == "requests":
                with requests.Session() as session:
                    echoed = [session.get(url, headers=user_headers, timeout=5).json() for _ in range(3)]
            elif client == "httpx":
                with httpx.Client() as sync_client:
                    echoed = [sync_client.get(url, headers=user_headers).json() for _ in range(3)]
            else:
                async def calls() -> list[dict[str, str]]:
                    async with httpx.AsyncClient() as async_client:
                        return [(await async_client.get(url, headers=user_headers)).json() for _ in range(3)]

                echoed = asyncio.run(calls())
        finally:
            otel_context.detach(token)
    clients = sorted((span for span in sink.spans() if span.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert len(clients) == 3
    assert len({span.context.span_id for span in clients}) == 3
    for span, headers in zip(clients, echoed, strict=True):
        expected = _expected(span, "rid-42")
        assert _sent(headers, expected) == expected
        assert headers["x-b3-sampled"] == "1"
        assert headers["accept"] == "application/json"

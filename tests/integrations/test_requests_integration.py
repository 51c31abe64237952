"""requests: a CLIENT span per hop, every header format injected, exporter calls never traced."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
import requests
import requests.adapters
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import SpanKind, StatusCode

from meshtrace.integrations import _base, threads
from meshtrace.integrations import requests as mt_requests
from meshtrace.integrations._client import ClientTracer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"

if TYPE_CHECKING:
    from integration_support import Server, Sink

pytest_plugins = ["integration_support"]


@pytest.fixture
def instrumented(sink: Sink) -> Iterator[None]:
    mt_requests.instrument(tracer_provider=sink.provider)
    try:
        yield
    finally:
        mt_requests.uninstrument()



def inbound(headers: dict[str, str]) -> object:
    """Attach the context an inbound request with these headers would have."""
    return otel_context.attach(propagate.extract(headers))


def test_client_span_with_semconv_attributes(instrumented: None, echo: Server, sink: Sink) -> None:
    response = requests.get(f"{echo.url}/echo?q=1", timeout=5)
    (span,) = sink.spans()
    assert span.kind is SpanKind.CLIENT
    assert span.name == "GET"
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.full": f"{echo.url}/echo?q=1",
        "server.address": "127.0.0.1",
        "server.port": echo.server.server_port,
        "http.response.status_code": 200,
    }
    _version, trace_id, span_id, flags = response.json()["traceparent"].split("-")
    assert (trace_id, span_id) == (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
    assert int(flags, 16) & 1


def test_injects_every_format_plus_request_id_and_baggage_from_the_inbound_request(
        instrumented: None, echo: Server, sink: Sink) -> None:
    token = inbound({"x-b3-traceid": TRACE_ID, "x-b3-spanid": PARENT_ID, "x-b3-sampled": "1",
                     "x-request-id": "req-123", "baggage": "tenant=acme"})
    try:
        sent = requests.get(f"{echo.url}/echo", timeout=5).json()
    finally:
        otel_context.detach(token)  # type: ignore[arg-type]
    (span,) = sink.spans()
    span_id = f"{span.context.span_id:016x}"
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent is not None
    assert span.parent.span_id == int(PARENT_ID, 16)
    assert sent["traceparent"] == f"00-{TRACE_ID}-{span_id}-01"
    assert sent["x-b3-traceid"] == TRACE_ID
    assert sent["x-b3-spanid"] == span_id
    assert sent["x-b3-sampled"] == "1"
    assert sent["b3"].startswith(f"{TRACE_ID}-{span_id}-1")
    assert sent["uber-trace-id"].startswith(f"{TRACE_ID}:{span_id}:")
    assert sent["ot-tracer-traceid"].endswith(TRACE_ID[-16:])
    assert sent["x-request-id"] == "req-123"
    assert "tenant=acme" in sent["baggage"]


def test_error_statuses_mark_the_client_span(instrumented: None, echo: Server, sink: Sink) -> None:
    assert requests.get(f"{echo.url}/status/404", timeout=5).status_code == 404
    assert requests.get(f"{echo.url}/status/503", timeout=5).status_code == 503
    spans = sink.spans()
    assert [(span.attributes or {}).get("error.type") for span in spans] == ["404", "503"]
    assert all(span.status.status_code is StatusCode.ERROR for span in spans)


def test_connection_failure_is_recorded(instrumented: None, sink: Sink) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)
    (span,) = sink.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ConnectionError"
    assert [event.name for event in span.events] == ["exception"]


def test_each_redirect_hop_gets_its_own_span(instrumented: None, echo: Server, sink: Sink) -> None:
    with sink.provider.get_tracer("app").start_as_current_span("handler"):
        sent = requests.get(f"{echo.url}/redirect", timeout=5).json()
    first, second, _ = sink.spans()
    assert (first.attributes or {})["http.response.status_code"] == 302
    assert (second.attributes or {})["url.full"] == f"{echo.url}/echo"
    assert first.context.trace_id == second.context.trace_id
    assert sent["traceparent"].split("-")[2] == f"{second.context.span_id:016x}"


def test_suppressed_context_is_not_traced(instrumented: None, echo: Server, sink: Sink) -> None:
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        sent = requests.get(f"{echo.url}/echo", timeout=5).json()
    finally:
        otel_context.detach(token)
    assert not sink.spans()
    assert "traceparent" not in sent


def test_exporter_uploads_are_never_traced(instrumented: None, serve: Callable[[Any], Server], sink: Sink) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    received: list[str] = []

    def collector(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        received.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "application/x-protobuf")])
        return [b""]

    server = serve(collector)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{server.url}/v1/traces")))
    with provider.get_tracer("app").start_as_current_span("work"):
        pass
    assert provider.force_flush(5000)
    provider.shutdown()
    assert received == ["/v1/traces"]
    assert not sink.spans(), [span.name for span in sink.spans()]


def test_spans_nest_under_the_current_span_across_executor_threads(instrumented: None, echo: Server,
                                                                   sink: Sink) -> None:
    threads.instrument()
    try:
        with sink.provider.get_tracer("app").start_as_current_span("handler") as parent, ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: requests.get(f"{echo.url}/echo", timeout=5), range(4)))
    finally:
        threads.uninstrument()
    clients = [span for span in sink.spans() if span.kind is SpanKind.CLIENT]
    assert len(clients) == 4
    assert all(span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
               for span in clients)


def test_uninstrument_restores_the_adapter(sink: Sink, echo: Server) -> None:
    original = requests.adapters.HTTPAdapter.send
    mt_requests.instrument(tracer_provider=sink.provider)
    mt_requests.instrument()
    assert requests.adapters.HTTPAdapter.send is not original
    requests.get(f"{echo.url}/echo", timeout=5)
    assert len(sink.spans()) == 1
    mt_requests.uninstrument()
    mt_requests.uninstrument()
    assert requests.adapters.HTTPAdapter.send is original
    sent = requests.get(f"{echo.url}/echo", timeout=5).json()
    assert len(sink.spans()) == 1
    assert "traceparent" not in sent


def test_failure_inside_the_wrapper_falls_back(instrumented: None, echo: Server, sink: Sink,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("telemetry bug")

    before = _base.failures().get("requests.request", 0)
    monkeypatch.setattr(ClientTracer, "begin", broken)  # what start() and the synchronous wrapper call
    assert requests.get(f"{echo.url}/echo", timeout=5).status_code == 200
    assert _base.failures()["requests.request"] == before + 1
    assert not sink.spans()


@pytest.mark.parametrize("otel_first", [True, False], ids=["otel-first", "meshtrace-first"])
def test_coexists_with_opentelemetry_instrumentation_requests(echo: Server, sink: Sink, otel_first: bool) -> None:
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    if otel_first:
        RequestsInstrumentor().instrument(tracer_provider=sink.provider)
        mt_requests.instrument(tracer_provider=sink.provider)
    else:
        mt_requests.instrument(tracer_provider=sink.provider)
        RequestsInstrumentor().instrument(tracer_provider=sink.provider)
    try:
        with sink.provider.get_tracer("user").start_as_current_span("user-span"):
            sent = requests.get(f"{echo.url}/echo", timeout=5).json()
    finally:
        RequestsInstrumentor().uninstrument()
        mt_requests.uninstrument()
    clients = [span for span in sink.spans() if span.kind is SpanKind.CLIENT]
    assert len(clients) == 1, [span.name for span in clients]
    user = next(span for span in sink.spans() if span.name == "user-span")
    assert clients[0].parent is not None
    assert clients[0].parent.span_id == user.context.span_id
    assert sent["traceparent"].split("-")[2] == f"{clients[0].context.span_id:016x}"
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_below_the_span_ours_is_current_and_http_instrumentation_is_suppressed(
        instrumented: None, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[trace.Span, object, object]] = []

    def urlopen(self: Any, method: str, url: str, **kwargs: Any) -> Any:
        import io

        import urllib3

        context = otel_context.get_current()
        seen.append((trace.get_current_span(context), context.get(otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY),
                     context.get("inbound-marker")))
        return urllib3.HTTPResponse(body=io.BytesIO(b"ok"), status=200, preload_content=False)

    monkeypatch.setattr("urllib3.connectionpool.HTTPConnectionPool.urlopen", urlopen)
    token = otel_context.attach(otel_context.set_value("inbound-marker", "kept"))
    try:
        requests.get("http://backend.invalid:8080/items", timeout=5).close()
    finally:
        otel_context.detach(token)
    (span,) = sink.spans()
    ((current, suppressed, marker),) = seen
    assert current.get_span_context() == span.context
    assert suppressed is True
    assert marker == "kept"  # the caller's context is carried, not replaced
    assert otel_context.get_current().get(otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY) is None

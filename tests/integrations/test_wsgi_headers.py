"""The WSGI server span reads the request's headers in one pass; the result is what EnvironGetter reads."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context, set_value
from opentelemetry.propagators.textmap import TextMapPropagator, default_getter, default_setter

from meshtrace.integrations._wsgi import ENVIRON_GETTER, extract_parent
from meshtrace.propagation import MeshPropagator
from meshtrace.propagation.environ import environ_headers

_KEYS = st.sampled_from([
    "HTTP_TRACEPARENT", "HTTP_B3", "HTTP_X_B3_TRACEID", "HTTP_X_B3_SPANID", "HTTP_X_B3_SAMPLED", "HTTP_UBER_TRACE_ID",
    "HTTP_OT_TRACER_TRACEID", "HTTP_OT_TRACER_SPANID", "HTTP_X_REQUEST_ID", "HTTP_BAGGAGE", "HTTP_UBERCTX_USER",
    "HTTP_OT_BAGGAGE_TENANT", "HTTP_HOST", "HTTP_x_b3_traceid", "HTTP_X-B3-SPANID", "PATH_INFO", "wsgi.input",
])
_VALUES = st.one_of(
    st.sampled_from(["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "1", "0", "d", "k=v",
                     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                     "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                     "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"]),
    st.text(max_size=20),
    st.just(b"bytes"),
)


def _normalised(context: Context) -> dict[str, Any]:
    return {key: value.get_span_context() if isinstance(value, trace.Span) else value for key, value in context.items()}


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_one_pass_snapshot_extracts_what_the_environ_getter_extracts(environ: dict[str, Any]) -> None:
    for propagator in (MeshPropagator(), Wrapped(MeshPropagator())):  # the fields-only path, the all-headers one
        fast = extract_parent(propagator, environ, Context())
        assert _normalised(fast) == _normalised(propagator.extract(environ, Context(), ENVIRON_GETTER))


class Wrapped(TextMapPropagator):
    """A propagator meshtrace does not know: it must be handed every header, not only its declared fields."""

    def __init__(self, inner: MeshPropagator) -> None:
        self.inner = inner

    def extract(self, carrier: Any, context: Context | None = None, getter: Any = default_getter) -> Context:
        return self.inner.extract(carrier, context, getter)

    def inject(self, carrier: Any, context: Context | None = None, setter: Any = default_setter) -> None:
        self.inner.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return self.inner.fields


class ReadsUndeclared(Wrapped):
    def extract(self, carrier: Any, context: Context | None = None, getter: Any = default_getter) -> Context:
        found = getter.get(carrier, "x-custom-trace")
        return set_value("custom", found[0] if found else None, super().extract(carrier, context, getter))


def test_a_foreign_propagator_reads_headers_it_did_not_declare() -> None:
    environ = {"HTTP_X_CUSTOM_TRACE": "t-1", "HTTP_X_B3_SAMPLED": "1"}
    assert extract_parent(ReadsUndeclared(MeshPropagator()), environ, Context()).get("custom") == "t-1"


def test_no_trace_header_means_no_extraction_at_all() -> None:
    current = Context({"kept": 1})
    environ = {"HTTP_HOST": "h", "HTTP_USER_AGENT": "u", "PATH_INFO": "/", "wsgi.input": object()}
    assert extract_parent(MeshPropagator(), environ, current) is current


def test_snapshot_keeps_only_header_strings_under_their_header_names() -> None:
    environ = {"HTTP_X_B3_TRACEID": "abc", "HTTP_HOST": "h", "HTTP_x_odd": "no", "PATH_INFO": "/", "HTTP_RAW": b"b"}
    assert environ_headers(environ) == {"x-b3-traceid": "abc", "host": "h"}


def test_a_value_outside_pep_3333_gets_the_sdks_treatment_not_the_unchecked_path() -> None:
    # The server span keeps its attribute dict unchecked only while every environ value it read is a str.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from meshtrace.integrations._wsgi import ServerTracer

    provider = TracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = ServerTracer("wsgi-test", lambda environ: None)
    server.tracer.use(provider)
    for query, exported in ((["a", "b"], ("a", "b")), ("a=1", "a=1")):
        request = server.start({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": query}, lambda *a: None)
        assert request is not None
        request.start_response("200 OK", [])
        request.finish([b"ok"])
        assert dict(exporter.get_finished_spans()[-1].attributes or {})["url.query"] == exported  # list: a tuple

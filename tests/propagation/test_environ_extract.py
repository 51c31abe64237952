"""MeshPropagator.extract_environ reads a WSGI environ in place and gives exactly what extract gives when it
asks the environ for each header by name (the general path, which no shortcut touches)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from meshtrace.propagation import MeshPropagator, get_request_id, is_sampling_deferred
from meshtrace.propagation.environ import environ_headers


class _EnvironByName(Getter[Mapping[str, Any]]):
    """Reads `X-B3-TraceId` as `HTTP_X_B3_TRACEID`, one name at a time, as a WSGI getter does."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [name[5:].lower().replace("_", "-") for name in carrier if name.startswith("HTTP_")]


def _general(environ: Mapping[str, Any], context: Context) -> Context:
    return MeshPropagator().extract(environ, context, _EnvironByName())


def _normalised(context: Context) -> dict[str, Any]:
    return {key: value.get_span_context() if isinstance(value, trace.Span) else value for key, value in context.items()}


def _hex(bits: int) -> st.SearchStrategy[str]:
    return st.integers(0, (1 << bits) - 1).map(lambda n: f"{n:0{bits // 4}x}")


_ID = st.one_of(_hex(128), _hex(64), _hex(64), _hex(64).map(str.upper), _hex(32), st.just("0" * 16),
                _hex(64).map(lambda value: f" {value}"), st.just(b"00f067aa0ba902b7"), st.just("0x" + "a" * 14))
_REQUEST_ID = st.sampled_from(["5f9c2a8e-0d1b-4c3e-9a51-7e2d4b6c8f10", "", " id\t", "bad\u00e9", "x" * 1025])
# Envoy's B3 headers, mostly well formed, with the odd part missing or broken.
_B3 = st.fixed_dictionaries(
    {"HTTP_X_B3_TRACEID": _ID, "HTTP_X_B3_SPANID": _ID},
    optional={
        "HTTP_X_B3_PARENTSPANID": _ID,
        "HTTP_X_B3_SAMPLED": st.sampled_from(["1", "0", "true", "False", " 1", "2", ""]),
        "HTTP_X_B3_FLAGS": st.sampled_from(["1", "0"]),
        "HTTP_X_REQUEST_ID": _REQUEST_ID,
    },
)
_OTHER_KEYS = st.sampled_from([
    "HTTP_TRACEPARENT", "HTTP_TRACESTATE", "HTTP_B3", "HTTP_UBER_TRACE_ID", "HTTP_OT_TRACER_TRACEID",
    "HTTP_OT_TRACER_SPANID", "HTTP_BAGGAGE", "HTTP_UBERCTX_USER", "HTTP_OT_BAGGAGE_TENANT", "HTTP_X_REQUEST_ID",
    "HTTP_x_b3_sampled", "HTTP_X-B3-FLAGS", "HTTP_HOST", "PATH_INFO", "wsgi.input",
])
_OTHER_VALUES = st.one_of(
    st.sampled_from(["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v", "1", "d",
                     "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "00f067aa0ba902b7",
                     "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"]),
    st.text(max_size=12),
    st.just(b"bytes"),
)
_SERVER = {"REQUEST_METHOD": "GET", "PATH_INFO": "/users/42", "HTTP_HOST": "svc:8080", "HTTP_USER_AGENT": "bench/1"}


@st.composite
def _environs(draw: st.DrawFn) -> dict[str, Any]:
    environ: dict[str, Any] = dict(_SERVER)
    environ.update(draw(_B3) if draw(st.integers(0, 3)) else {})
    environ.update(draw(st.dictionaries(_OTHER_KEYS, _OTHER_VALUES, max_size=3)) if draw(st.booleans()) else {})
    return environ


_CONTEXTS = st.sampled_from([
    Context(),
    Context({"unrelated": 1}),
    trace.set_span_in_context(NonRecordingSpan(SpanContext(7, 8, False, TraceFlags(1)))),
])


@settings(max_examples=2000, deadline=None)
@given(_environs(), _CONTEXTS)
def test_environ_extract_matches_the_general_path(environ: dict[str, Any], context: Context) -> None:
    assert _normalised(MeshPropagator().extract_environ(environ, context)) == _normalised(_general(environ, context))


def test_envoy_b3_headers_give_the_remote_parent_and_the_request_id() -> None:
    environ = {**_SERVER, "HTTP_X_B3_TRACEID": "4bf92f3577b34da6a3ce929d0e0e4736",
               "HTTP_X_B3_SPANID": "00f067aa0ba902b7", "HTTP_X_B3_PARENTSPANID": "0000000000000001",
               "HTTP_X_B3_SAMPLED": "1", "HTTP_X_REQUEST_ID": "5f9c2a8e-0d1b"}
    context = MeshPropagator().extract_environ(environ)
    parent = trace.get_current_span(context).get_span_context()
    assert (parent.trace_id, parent.span_id) == (0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7)
    assert parent.is_remote
    assert parent.trace_flags.sampled
    assert get_request_id(context) == "5f9c2a8e-0d1b"
    assert not is_sampling_deferred(context)


def test_b3_without_a_decision_leaves_it_to_the_receiver() -> None:
    environ = {"HTTP_X_B3_TRACEID": "00f067aa0ba902b7", "HTTP_X_B3_SPANID": "00f067aa0ba902b7"}
    context = MeshPropagator().extract_environ(environ)
    assert is_sampling_deferred(context)
    assert not trace.get_current_span(context).get_span_context().trace_flags.sampled


def test_no_trace_header_returns_the_context_itself() -> None:
    context = Context({"unrelated": 1})
    assert MeshPropagator().extract_environ(dict(_SERVER), context) is context


def test_environ_headers_keep_only_header_strings_under_their_header_names() -> None:
    environ: dict[Any, Any] = {"HTTP_X_B3_TRACEID": "abc", "HTTP_x_b3_spanid": "def", "HTTP_HOST": "h",
                               "HTTP_X_BIN": b"x", "PATH_INFO": "/", 7: "seven"}
    assert environ_headers(environ) == {"x-b3-traceid": "abc", "host": "h"}


def test_a_key_that_is_not_a_string_does_not_hide_the_headers() -> None:
    environ: dict[Any, Any] = {7: "seven", "HTTP_X_B3_TRACEID": "00f067aa0ba902b7",
                               "HTTP_X_B3_SPANID": "00f067aa0ba902b7", "HTTP_X_B3_SAMPLED": "1"}
    found = trace.get_current_span(MeshPropagator().extract_environ(environ)).get_span_context()
    assert found.span_id == 0x00f067aa0ba902b7

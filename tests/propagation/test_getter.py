"""CaseInsensitiveGetter and x-request-id."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import DefaultGetter, Getter

from meshtrace.propagation import CaseInsensitiveGetter, RequestIdPropagator, TraceContextPropagator, get_request_id

GETTER = CaseInsensitiveGetter()
TRACEPARENT = "00-12345678901234567890123456789012-1234567890123456-01"


@pytest.mark.parametrize(
    ("carrier", "expected"),
    [
        ({"traceparent": "a"}, ["a"]),
        ({"TraceParent": "a"}, ["a"]),
        ({"TRACEPARENT": ["a", "b"]}, ["a", "b"]),
        ({"TraceParent": "a", "traceparent": "b"}, ["b"]),  # an exact hit first
        ({"TraceParent": "a", "TRACEPARENT": "b"}, ["a"]),  # otherwise the first in iteration order
        ({"other": "a"}, None),
        ({"traceparent": 7}, None),  # not text: absent
        ({"traceparent": []}, None),
    ],
)
def test_getter(carrier: Mapping[str, object], expected: list[str] | None) -> None:
    assert GETTER.get(carrier, "traceparent") == expected  # type: ignore[arg-type]
    assert GETTER.keys(carrier) == list(carrier)  # type: ignore[arg-type]


def test_extract_uses_the_first_of_several_values() -> None:
    context = RequestIdPropagator().extract({"X-Request-Id": ["first", "second"]})
    assert get_request_id(context) == "first"


class WsgiGetter(Getter[Mapping[str, str]]):
    """A getter like OTel's WSGI one: asked with lowercase names, it looks up HTTP_ environ keys."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


class BrokenGetter(Getter[object]):
    def get(self, carrier: object, key: str) -> list[str] | None:
        raise RuntimeError("broken")

    def keys(self, carrier: object) -> list[str]:
        raise RuntimeError("broken")


def test_a_foreign_getter_is_asked_with_lowercase_names() -> None:
    context = TraceContextPropagator().extract({"HTTP_TRACEPARENT": TRACEPARENT}, getter=WsgiGetter())
    assert trace.get_current_span(context).get_span_context().is_valid


def test_a_failing_getter_does_not_break_extract() -> None:
    assert TraceContextPropagator().extract(object(), getter=BrokenGetter()) == Context()


def test_default_getter_passed_explicitly_is_case_insensitive() -> None:
    # opentelemetry.propagate.extract() always passes OTel's exact-key default getter.
    from opentelemetry.propagators.textmap import default_getter

    context = TraceContextPropagator().extract({"TraceParent": TRACEPARENT}, getter=default_getter)
    assert trace.get_current_span(context).get_span_context().is_valid
    assert isinstance(default_getter, DefaultGetter)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("b9d1f5f4-6c3a-4a1e-9a55-2c1f0e6a7b11", "b9d1f5f4-6c3a-4a1e-9a55-2c1f0e6a7b11"),
        ("  opaque id 42 ", "opaque id 42"),  # surrounding whitespace is not part of a field value
        ("", None),
        ("bad\r\nvalue", None),
        ("caf\u00e9", None),
        ("x" * 1025, None),
    ],
)
def test_request_id_extract(value: str, expected: str | None) -> None:
    propagator = RequestIdPropagator()
    context = propagator.extract({"X-Request-ID": value})
    assert get_request_id(context) == expected
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context)
    assert carrier == ({} if expected is None else {"x-request-id": expected})

"""LightSpan.add_plain_attribute: the client integrations' status-code write gives what set_attribute gives."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue
from tracing_support import CountingIds

import meshtrace
from meshtrace.lightspan import LightSpan

START: dict[str, AttributeValue] = {"http.request.method": "GET", "server.port": 8080}


def _ended(write: Any, key: str, value: Any, limits: SpanLimits | None = None) -> list[Any]:
    provider = TracerProvider(id_generator=CountingIds(), shutdown_on_exit=False,
                              span_limits=limits or SpanLimits())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = meshtrace.start_span(provider.get_tracer("t"), "GET", None, SpanKind.CLIENT, START, 1)
    write(span, key, value)
    span.end(2)
    (finished,) = exporter.get_finished_spans()
    return [type(span) is LightSpan, list((finished.attributes or {}).items()), finished.dropped_attributes]


def _light(span: Any, key: str, value: Any) -> None:
    if not span.add_plain_attribute(key, value):
        span.set_attribute(key, value)


def _sdk(span: Any, key: str, value: Any) -> None:
    span.set_attribute(key, value)


@pytest.mark.parametrize(("key", "value"), [("http.response.status_code", 200), ("server.port", 9090),
                                            ("tags", ["a"]), ("", 1), ("ok", True)])
def test_added_attributes_equal_set_attribute(key: str, value: Any) -> None:
    assert _ended(_light, key, value) == _ended(_sdk, key, value)


def test_it_declines_what_the_sdk_would_treat_otherwise() -> None:
    provider = TracerProvider(id_generator=CountingIds(), shutdown_on_exit=False)
    span: Any = meshtrace.start_span(provider.get_tracer("t"), "GET", None, SpanKind.CLIENT, START, 1)
    assert type(span) is LightSpan
    assert not span.add_plain_attribute("server.port", 1)  # re-set: the SDK moves it to the end
    assert not span.add_plain_attribute("tags", ["a"])  # a list: the SDK copies it
    assert span.add_plain_attribute("http.response.status_code", 200)
    span.end(2)
    assert not span.add_plain_attribute("late", 1)
    assert dict(span.attributes or {}) == {**START, "http.response.status_code": 200}

"""Ending spans under meshtrace's processor (what meshtrace.configure installs): light spans are queued without
`on_end`'s per-span checks, SDK spans without a span property read; what is queued, dropped and counted holds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, Sampler, StaticSampler
from opentelemetry.trace import SpanKind

from meshtrace import counters
from meshtrace.lightspan import LightSpan, start_light_span
from meshtrace.processor import DroppingBatchSpanProcessor

RECORD_ONLY = StaticSampler(Decision.RECORD_ONLY)   # recorded, not sampled: a processor sees it end


class Quiet(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Recording(DroppingBatchSpanProcessor):
    """A subclass with an on_end of its own: it must be called for every span, sampled or not."""

    def __init__(self) -> None:
        super().__init__(Quiet(), max_queue_size=64, schedule_delay_millis=3_600_000, max_export_batch_size=64)
        self.ended: list[str] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span.name)
        super().on_end(span)


@pytest.fixture(autouse=True)
def zero_counters() -> Iterator[None]:
    counters.reset()
    yield
    counters.reset()


def provider_with(processor: DroppingBatchSpanProcessor, sampler: Sampler = ALWAYS_ON) -> TracerProvider:
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return provider


def light(provider: TracerProvider, name: str) -> Any:
    span = start_light_span(provider.get_tracer("t"), name, None, SpanKind.CLIENT, {"k": 1}, None)
    assert type(span) is LightSpan
    return span


def queued(processor: DroppingBatchSpanProcessor) -> list[str]:
    queue: Any = processor._queue
    return [span.name for span in reversed(queue)]


@pytest.fixture
def no_context_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each read of a span's `context` property (what on_end used to read, twice, per span)."""
    reads: list[str] = []

    def context(span: ReadableSpan) -> Any:
        reads.append(span.name)
        return span._context

    monkeypatch.setattr(ReadableSpan, "context", property(context))
    return reads


def test_sampled_light_and_sdk_spans_are_queued_without_reading_a_span_property(no_context_reads: list[str]) -> None:
    processor = DroppingBatchSpanProcessor(Quiet(), max_queue_size=64, schedule_delay_millis=3_600_000,
                                           max_export_batch_size=64)
    provider = provider_with(processor)
    light(provider, "light").end()
    light(provider, "light-status").end_with_attribute("http.response.status_code", 200)
    provider.get_tracer("t").start_span("sdk").end()
    assert queued(processor) == ["light", "light-status", "sdk"]
    assert no_context_reads == []


def test_recorded_but_unsampled_light_and_sdk_spans_are_not_queued() -> None:
    processor = DroppingBatchSpanProcessor(Quiet(), max_queue_size=64, schedule_delay_millis=3_600_000,
                                           max_export_batch_size=64)
    provider = provider_with(processor, RECORD_ONLY)
    light(provider, "light").end()
    light(provider, "light-status").end_with_attribute("http.response.status_code", 200)
    provider.get_tracer("t").start_span("sdk").end()
    assert queued(processor) == []
    assert counters.snapshot().get("spans_dropped", 0) == 0


def test_a_full_queue_still_drops_and_counts_light_spans() -> None:
    processor = DroppingBatchSpanProcessor(Quiet(), max_queue_size=2, schedule_delay_millis=3_600_000,
                                           max_export_batch_size=2)
    processor._batch_processor._worker_awaken.set = lambda: None  # type: ignore[method-assign]
    provider = provider_with(processor)
    for name in ("a", "b", "c", "d"):
        light(provider, name).end_with_attribute("http.response.status_code", 200)
    assert queued(processor) == ["a", "b"]
    assert counters.snapshot()["spans_dropped"] == 2


def test_a_subclass_on_end_is_called_for_every_light_span_sampled_or_not() -> None:
    sampled, unsampled = Recording(), Recording()
    light(provider_with(sampled), "s").end()
    light(provider_with(unsampled, RECORD_ONLY), "u").end_with_attribute("http.response.status_code", 200)
    assert sampled.ended == ["s"]
    assert queued(sampled) == ["s"]
    assert unsampled.ended == ["u"]
    assert queued(unsampled) == []

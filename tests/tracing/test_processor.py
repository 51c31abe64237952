"""The dropping batch processor: a blocked exporter never blocks span.end(); a full queue drops and counts."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from meshtrace import counters
from meshtrace.processor import DroppingBatchSpanProcessor


class BlockingExporter(SpanExporter):
    """Blocks every export until `release` is set; records batches and the suppress flag seen."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []
        self.suppressed: list[object] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.suppressed.append(get_value(_SUPPRESS_INSTRUMENTATION_KEY))
        self.release.wait(30)
        self.batches.append([span.name for span in spans])
        return SpanExportResult.SUCCESS

    def exported(self) -> list[str]:
        return [name for batch in self.batches for name in batch]


@pytest.fixture(autouse=True)
def zero_counters() -> Iterator[None]:
    counters.reset()
    yield
    counters.reset()


def make(exporter: SpanExporter, queue: int, batch: int) -> tuple[TracerProvider, DroppingBatchSpanProcessor]:
    processor = DroppingBatchSpanProcessor(exporter, max_queue_size=queue, schedule_delay_millis=10,
                                           max_export_batch_size=batch)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return provider, processor


def test_full_queue_drops_new_spans_counts_them_and_never_blocks_the_caller() -> None:
    exporter = BlockingExporter()
    provider, processor = make(exporter, queue=8, batch=2)
    tracer = provider.get_tracer("t")
    try:
        tracer.start_span("first").end()
        assert exporter.entered.wait(10), "the worker never started exporting"
        # The worker is now stuck inside export() with 'first'; the queue takes 8 more, the rest is dropped.
        for index in range(20):
            tracer.start_span(f"s{index}").end()  # returns although the exporter is blocked
        assert counters.snapshot()["spans_dropped"] == 12
    finally:
        exporter.release.set()
        processor.shutdown(10_000)
    assert exporter.exported() == ["first", *[f"s{index}" for index in range(8)]]
    assert counters.snapshot()["spans_dropped"] == 12


def test_span_end_from_many_threads_never_overfills_the_queue() -> None:
    exporter = BlockingExporter()
    provider, processor = make(exporter, queue=50, batch=50)
    tracer = provider.get_tracer("t")

    def produce() -> None:
        for _ in range(100):
            tracer.start_span("s").end()

    threads = [threading.Thread(target=produce) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    exporter.release.set()
    processor.shutdown(10_000)
    exported = len(exporter.exported())
    assert exported + counters.snapshot()["spans_dropped"] == 800
    assert exported <= 50 + 50  # never more than the queue plus the batch the worker already held


def test_unsampled_spans_are_neither_queued_nor_counted() -> None:
    exporter = BlockingExporter()
    exporter.release.set()
    processor = DroppingBatchSpanProcessor(exporter, max_queue_size=1, max_export_batch_size=1)
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    for _ in range(10):
        provider.get_tracer("t").start_span("s").end()
    processor.shutdown(10_000)
    assert exporter.batches == []
    assert counters.snapshot()["spans_dropped"] == 0


def test_export_runs_with_instrumentation_suppressed() -> None:
    """The SDK worker attaches the suppress key, so our requests/httpx integrations skip export calls."""
    exporter = BlockingExporter()
    exporter.release.set()
    provider, processor = make(exporter, queue=10, batch=1)
    provider.get_tracer("t").start_span("s").end()
    processor.force_flush()
    processor.shutdown(10_000)
    assert exporter.suppressed
    assert all(flag is True for flag in exporter.suppressed)


def test_shutdown_honours_its_timeout_with_a_stuck_exporter() -> None:
    exporter = BlockingExporter()
    provider, processor = make(exporter, queue=10, batch=1)
    provider.get_tracer("t").start_span("s").end()
    assert exporter.entered.wait(10)
    done = threading.Event()

    def stop() -> None:
        processor.shutdown(100)
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    # Generous bound: the point is that shutdown returns while export() is still stuck (the SDK default is 30 s).
    assert done.wait(10), "shutdown waited for the stuck exporter"
    exporter.release.set()


def test_the_export_thread_wakes_for_a_whole_batch_not_for_each_span() -> None:
    exporter = BlockingExporter()
    exporter.release.set()
    processor = DroppingBatchSpanProcessor(exporter, max_queue_size=100, schedule_delay_millis=3_600_000,
                                           max_export_batch_size=4)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    try:
        for index in range(3):
            tracer.start_span(f"s{index}").end()
        assert not exporter.entered.wait(0.3), "woken before a batch was full"
        tracer.start_span("s3").end()
        assert exporter.entered.wait(10), "a full batch did not wake the export thread"
    finally:
        processor.shutdown(10_000)
    assert exporter.batches[0] == ["s0", "s1", "s2", "s3"]


def test_spans_ended_after_shutdown_are_not_queued() -> None:
    exporter = BlockingExporter()
    exporter.release.set()
    provider, processor = make(exporter, queue=10, batch=1)
    processor.shutdown(10_000)
    provider.get_tracer("t").start_span("late").end()
    assert exporter.batches == []
    assert len(processor._queue or ()) == 0

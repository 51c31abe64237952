"""GuardedExporter: failures counted and logged once per outage, never raised; export traffic never traced."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY, _SUPPRESS_INSTRUMENTATION_KEY, get_value
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshtrace import counters
from meshtrace.exporters.guard import GuardedExporter

NOISY = "tests.noisy.exporter"


class Scripted(SpanExporter):
    """Returns (or raises) the scripted outcomes in order, logging each failure like the OTLP exporter does."""

    def __init__(self, *outcomes: SpanExportResult | Exception) -> None:
        self.outcomes = list(outcomes)
        self.seen_flags: list[tuple[object, object]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.seen_flags.append((get_value(_SUPPRESS_INSTRUMENTATION_KEY),
                                get_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY)))
        outcome = self.outcomes.pop(0) if self.outcomes else SpanExportResult.SUCCESS
        if isinstance(outcome, Exception):
            raise outcome
        if outcome is SpanExportResult.FAILURE:
            logging.getLogger(NOISY).error("Failed to export spans batch code: None, reason: refused")
        return outcome


@pytest.fixture(autouse=True)
def zero_counters() -> Iterator[None]:
    counters.reset()
    yield
    counters.reset()


def some_spans(count: int = 3) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for index in range(count):
        provider.get_tracer("t").start_span(f"s{index}").end()
    return list(memory.get_finished_spans())


def guard(inner: SpanExporter) -> GuardedExporter:
    return GuardedExporter(lambda: inner, "test http://backend", quiet_loggers=[NOISY])


def warnings_from_meshtrace(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "meshtrace.export" and r.levelno >= logging.WARNING]


def test_an_outage_is_logged_once_counted_per_batch_and_recovery_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    F, S = SpanExportResult.FAILURE, SpanExportResult.SUCCESS
    exporter = guard(Scripted(F, F, F, S, F))
    results = [exporter.export(some_spans()) for _ in range(5)]
    assert results == [F, F, F, S, F]
    assert counters.snapshot() == {"spans_exported": 3, "spans_dropped": 0, "export_failures": 4,
                                   "spans_failed_export": 12}
    warnings = warnings_from_meshtrace(caplog)
    assert len(warnings) == 2  # the first outage, and the second one after recovery
    assert "cannot export spans to test http://backend" in warnings[0]
    assert "reason: refused" in warnings[0]  # the held-back exporter message becomes the reason
    assert any("works again (3 batches failed meanwhile)" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.name == NOISY]  # the per-batch noise never reached handlers


def test_exceptions_become_failures(caplog: pytest.LogCaptureFixture) -> None:
    exporter = guard(Scripted(RuntimeError("encoder exploded")))
    assert exporter.export(some_spans(2)) is SpanExportResult.FAILURE
    assert counters.snapshot()["export_failures"] == 1
    assert "RuntimeError: encoder exploded" in warnings_from_meshtrace(caplog)[0]


def test_other_users_of_the_noisy_logger_are_not_silenced(caplog: pytest.LogCaptureFixture) -> None:
    guard(Scripted(SpanExportResult.FAILURE)).export(some_spans(1))
    logging.getLogger(NOISY).error("someone else's exporter failed")
    assert [r.getMessage() for r in caplog.records if r.name == NOISY] == ["someone else's exporter failed"]


def test_export_runs_with_both_suppress_keys_and_restores_the_context() -> None:
    inner = Scripted(SpanExportResult.SUCCESS)
    guard(inner).export(some_spans(1))
    assert inner.seen_flags == [(True, True)]
    assert get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None


def test_empty_batches_are_not_sent() -> None:
    inner = Scripted(SpanExportResult.FAILURE)
    assert guard(inner).export([]) is SpanExportResult.SUCCESS
    assert inner.seen_flags == []


def test_a_forked_child_builds_its_own_exporter() -> None:
    built: list[Scripted] = []

    def factory() -> Scripted:
        built.append(Scripted())
        return built[-1]

    exporter = GuardedExporter(factory, "test")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            exporter.export(some_spans(1))
            os.write(write_end, f"{len(built)} {exporter.inner is built[-1]} {len(built[0].seen_flags)}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        assert pipe.read() == "2 True 0"  # a second exporter, used instead of the parent's
    assert len(built) == 1

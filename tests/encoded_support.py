"""A tracer provider wired like the sidecar's OTLP pipeline, whose processor queue tests can read."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Sampler

from meshtrace.exporters import GuardedExporter
from meshtrace.exporters.encoded import EncodedSpan
from meshtrace.exporters.otlp import QUIET_LOGGERS, build_otlp_exporter
from meshtrace.processor import DroppingBatchSpanProcessor


def otlp_processor(endpoint: str = "http://127.0.0.1:9/v1/traces") -> DroppingBatchSpanProcessor:
    """meshtrace's batch processor over a guarded OTLP exporter (what `meshtrace.configure` builds)."""
    exporter = GuardedExporter(lambda: build_otlp_exporter(endpoint, 1.0), f"otlp {endpoint}",
                               quiet_loggers=QUIET_LOGGERS)
    return DroppingBatchSpanProcessor(exporter, schedule_delay_millis=3_600_000)


def queued_provider(sampler: Sampler | None = None, ids: IdGenerator | None = None,
                    ) -> tuple[TracerProvider, list[ReadableSpan | EncodedSpan]]:
    """A provider on meshtrace's OTLP pipeline, and the list every span it queues for export lands in (the
    processor's `enqueue` is the queue's one entrance; nothing is ever sent)."""
    processor = otlp_processor()
    queued: list[ReadableSpan | EncodedSpan] = []
    processor.enqueue = queued.append  # type: ignore[method-assign,assignment]
    provider = TracerProvider(sampler=sampler, id_generator=ids)
    provider.add_span_processor(processor)
    return provider, queued

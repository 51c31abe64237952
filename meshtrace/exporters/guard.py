"""GuardedExporter: the boundary between an exporter and the host app — count, log once, never raise.

Theory of operation. Every exporter meshtrace builds is wrapped in a GuardedExporter, which
- runs the wrapped `export()` with OpenTelemetry's suppress-instrumentation keys set, so our own
  requests/httpx integrations never trace the export traffic (whatever thread or processor calls it);
- turns an exception into a FAILURE result (telemetry never breaks the host);
- counts `spans_exported`, `export_failures` and `spans_failed_export`;
- logs an outage ONCE: a warning at the first failed batch, then debug only, then one info line when an
  export succeeds again. The wrapped exporter's own per-batch log lines (the OTLP exporter logs every retry
  and every failure) are held back while it runs under the guard, and the first one becomes the reason in
  our warning;
- after fork() builds a fresh wrapped exporter in the child from its factory, so parent and child never share
  a pooled keep-alive connection to the backend;
- accepts pre-encoded spans (meshtrace.exporters.encoded) exactly when the wrapped exporter does.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from opentelemetry.context import (
    _SUPPRESS_HTTP_INSTRUMENTATION_KEY,
    _SUPPRESS_INSTRUMENTATION_KEY,
    attach,
    detach,
    set_value,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from meshtrace import counters
from meshtrace.exporters.encoded import EncodedFields, EncodedSpan, accepts_encoded

__all__ = ["GuardedExporter"]

logger = logging.getLogger("meshtrace.export")

_capture = threading.local()


class _HoldBack(logging.Filter):
    """Swallow records logged on this thread while a GuardedExporter runs, keeping their text."""

    def filter(self, record: logging.LogRecord) -> bool:
        held: list[str] | None = getattr(_capture, "held", None)
        if held is None:
            return True
        held.append(record.getMessage())
        return False


_HOLD_BACK = _HoldBack()


@contextmanager
def _held_logs(logger_names: Sequence[str]) -> Iterator[list[str]]:
    for name in logger_names:
        target = logging.getLogger(name)
        if _HOLD_BACK not in target.filters:
            target.addFilter(_HOLD_BACK)
    held: list[str] = []
    previous = getattr(_capture, "held", None)
    _capture.held = held
    try:
        yield held
    finally:
        _capture.held = previous


class GuardedExporter(SpanExporter):
    """Wrap the exporter `factory()` builds; `description` (e.g. "otlp http://…") names it in log lines."""

    def __init__(self, factory: Callable[[], SpanExporter], description: str,
                 quiet_loggers: Sequence[str] = ()) -> None:
        self._factory = factory
        self.description = description
        self._quiet_loggers = tuple(quiet_loggers)
        self._lock = threading.Lock()
        self._inner = factory()
        self._pid = os.getpid()
        self._failing = False
        self._failed_batches = 0

    @property
    def inner(self) -> SpanExporter:
        return self._inner

    def _current(self) -> SpanExporter:
        if self._pid != os.getpid():
            # The child of a fork(): never reuse the parent's connections or state.
            self._inner = self._factory()
            self._pid = os.getpid()
            self._failing = False
            self._failed_batches = 0
        return self._inner

    def accepts_encoded(self) -> bool:
        return accepts_encoded(self._current())

    def export(self, spans: Sequence[ReadableSpan | EncodedSpan | EncodedFields]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        context = set_value(_SUPPRESS_INSTRUMENTATION_KEY, True)
        token = attach(set_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY, True, context))
        reason: str | None = None
        try:
            with _held_logs(self._quiet_loggers) as held:
                try:
                    result = self._current().export(spans)  # type: ignore[arg-type]
                except Exception as exc:
                    result = SpanExportResult.FAILURE
                    reason = f"{type(exc).__name__}: {exc}"
            if result is not SpanExportResult.SUCCESS and reason is None:
                reason = getattr(self._inner, "last_error", None) or (held[-1] if held else "export failed")
        finally:
            detach(token)
        self._record(result, len(spans), reason)
        return result

    def _record(self, result: SpanExportResult, count: int, reason: str | None) -> None:
        if result is SpanExportResult.SUCCESS:
            counters.increment("spans_exported", count)
            with self._lock:
                recovered, failed = self._failing, self._failed_batches
                self._failing, self._failed_batches = False, 0
            if recovered:
                logger.info("meshtrace: exporting spans to %s works again (%d batches failed meanwhile)",
                            self.description, failed)
            return
        counters.increment("export_failures")
        counters.increment("spans_failed_export", count)
        with self._lock:
            first = not self._failing
            self._failing = True
            self._failed_batches += 1
        if first:
            logger.warning("meshtrace: cannot export spans to %s (%s); they are dropped and counted in "
                           "meshtrace.stats(), and export keeps retrying; logged once until it recovers",
                           self.description, reason)
        else:
            logger.debug("meshtrace: export to %s failed again: %s", self.description, reason)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self._current().force_flush(timeout_millis))
        except Exception:
            logger.debug("meshtrace: force_flush of %s failed", self.description, exc_info=True)
            return False

    def shutdown(self) -> None:
        try:
            self._inner.shutdown()
        except Exception:
            logger.debug("meshtrace: shutdown of %s failed", self.description, exc_info=True)

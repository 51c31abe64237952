"""The batch span processor: never blocks the caller, drops and counts when full, survives fork().

Theory of operation. Ending a span only appends it to the SDK BatchSpanProcessor's bounded deque (no lock is
held across I/O, so a slow or dead backend never reaches the request path); a daemon worker thread exports
from the deque in batches. Two things are added to the SDK processor:

- A full queue refuses the *new* span and counts it in `spans_dropped` (the SDK deque would silently push
  out the oldest and log a warning per span). The length check and the append are done under one small
  lock so concurrent producers cannot overfill the deque behind our back; the worker only ever shrinks it.
- `shutdown(timeout_millis)` honours its deadline (the SDK's span processor waits up to 30 s).

`on_end` runs for every span ended, so it reads as little as it can: an SDK span's context off `_context` (the
span `_Span.end()` hands over is an exact ReadableSpan, whose `context` property returns just that) and the
sampled bit by one `&` (`TraceFlags.sampled` is another property call). meshtrace's light spans
(meshtrace.lightspan) know whether they are sampled when they start: their tracer's plan asks
`light_end_call(sampled)` once and calls `enqueue` directly for a sampled span, nothing for another.

Pre-encoded spans (meshtrace.exporters.encoded) take the same queue through `enqueue`, when
`accepts_encoded()` says the exporter behind it takes them too.

`enqueue` is on the request path, so it does the SDK queue's `emit` steps itself when the SDK keeps its state
where this version does (checked once): append, and wake the export thread only when the queue has just reached
a whole batch and the thread is not awake already; between batches the thread sleeps until its schedule. It skips
the SDK's per-span `os.getpid()` (a system call) that re-initialises the queue in a forked child: the SDK's and
our own at-fork hooks do that. After `shutdown()` and with any other SDK state, the SDK's `emit` is called.

fork(): the SDK BatchProcessor registers `os.register_at_fork(after_in_child=...)`, which gives the child a
new worker thread, a new lock and an empty queue (spans queued in the parent are the parent's to export).
Our own lock is replaced in the child the same way, in case another parent thread held it at fork time.
"""

from __future__ import annotations

import collections
import os
import threading
import weakref
from collections.abc import Callable, Sized
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import TraceFlags

from meshtrace import counters
from meshtrace.exporters.encoded import EncodedFields, EncodedSpan, accepts_encoded

__all__ = ["DroppingBatchSpanProcessor"]

_SAMPLED = int(TraceFlags.SAMPLED)


class DroppingBatchSpanProcessor(BatchSpanProcessor):
    """BatchSpanProcessor that drops (and counts) new spans when its queue is full."""

    def __init__(
        self,
        span_exporter: SpanExporter,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
    ) -> None:
        super().__init__(span_exporter, max_queue_size, schedule_delay_millis, max_export_batch_size)
        self._enqueue_lock = threading.Lock()
        inner: Any = getattr(self, "_batch_processor", None)
        # Private SDK state, read defensively: without it we fall back to the SDK's own drop-oldest policy.
        self._queue: Sized | None = getattr(inner, "_queue", None)
        self._max_queue_size: int = int(getattr(inner, "_max_queue_size", 0))
        # The SDK's enqueue, bound once (on_end re-checking `sampled` through super() costs a third of ours).
        # Fork-safe: the SDK re-initialises that same object in the child (its queue is cleared, not replaced).
        self._emit: Any = getattr(inner, "emit", None)
        self._inner: Any = inner
        batch = getattr(inner, "_max_export_batch_size", None)
        self._batch_size: int = batch if isinstance(batch, int) and batch > 0 else 1
        # The queue length before an append that makes a whole batch (`enqueue` wakes the export thread then).
        self._wake_at = self._batch_size - 1
        # Whether `enqueue` may do `emit`'s steps itself (see the module docstring).
        self._own_emit = (type(self._queue) is collections.deque and isinstance(batch, int) and batch > 0
                          and isinstance(getattr(inner, "_worker_awaken", None), threading.Event)
                          and getattr(inner, "_shutdown", None) is False)
        if hasattr(os, "register_at_fork"):
            weak_self = weakref.ref(self)

            def _reinit_lock() -> None:
                if (processor := weak_self()) is not None:
                    processor._enqueue_lock = threading.Lock()

            os.register_at_fork(after_in_child=_reinit_lock)

    @property
    def exporter(self) -> SpanExporter:
        exporter: SpanExporter = self.span_exporter
        return exporter

    def accepts_encoded(self) -> bool:
        """True when `enqueue` may be handed EncodedSpans: our own queueing, and an exporter that takes them."""
        return (type(self) is DroppingBatchSpanProcessor and self._queue is not None and self._emit is not None
                and self._max_queue_size > 0 and accepts_encoded(self.span_exporter))

    def on_end(self, span: ReadableSpan) -> None:
        context = span._context if type(span) is ReadableSpan else span.context
        if context is None or not context.trace_flags & _SAMPLED:
            return
        if self._queue is None or self._emit is None or self._max_queue_size <= 0:
            super().on_end(span)
            return
        self.enqueue(span)

    def light_end_call(self, sampled: bool) -> Callable[[ReadableSpan], None] | None:
        """What `on_end` comes to for a span known to be sampled or not, for a caller that knows which before the
        span ends (a light span's plan, made once per tracer): None for a span that is not sampled (`on_end`
        ignores it), `enqueue` for one that is when `on_end` would call just that, else `on_end` itself (also
        whatever the span, where a subclass overrides `on_end`)."""
        if type(self).on_end is not DroppingBatchSpanProcessor.on_end:
            return self.on_end
        if not sampled:
            return None
        if self._queue is None or self._emit is None or self._max_queue_size <= 0:
            return self.on_end
        return self.enqueue

    def enqueue(self, span: ReadableSpan | EncodedSpan | EncodedFields) -> None:
        """Queue a finished, sampled span for export, or drop and count it when the queue is full.

        An EncodedSpan (or its fields as a plain tuple) only when `accepts_encoded()` said so."""
        queue: Any = self._queue
        lock = self._enqueue_lock
        # acquire/release rather than `with`: a `with` looks up and binds __enter__ and __exit__ on every span.
        lock.acquire()
        try:
            size = len(queue)
            # The usual span first, in as few steps as it takes (each costs about 100 instructions per span).
            if size < self._max_queue_size and self._own_emit and not (inner := self._inner)._shutdown:
                queue.appendleft(span)
                # A whole batch waits: wake the export thread, once. The event is read each time (the SDK replaces
                # it in a forked child).
                if size >= self._wake_at and not (awaken := inner._worker_awaken).is_set():
                    awaken.set()
            elif size >= self._max_queue_size:
                counters.increment("spans_dropped")
            else:
                self._emit(span)
        finally:
            lock.release()

    def shutdown(self, timeout_millis: int = 30000) -> None:
        inner: Any = self._batch_processor
        inner.shutdown(timeout_millis)

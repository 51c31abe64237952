"""A lighter OpenTelemetry SDK span for meshtrace's own spans: the same span, built and ended with less work.

Theory of operation. `Tracer.start_span` spends most of its time on generality meshtrace's spans do not need:
keyword plumbing, `_Span.__init__` (a ReadableSpan init, a BoundedAttributes that validates each value, two
BoundedLists with their deques and locks, a links walk), a start lock, an `on_start` fan-out to processors that
ignore it, and at `end()` a full copy of the span into a new ReadableSpan for `on_end`. `start_light_span`
builds the very same `_Span` subclass instance directly when the tracer is configured in the usual way:

- an SDK `Tracer` (exact type) that is enabled, with the default span limits (any other limit: SDK path);
- a sampler known not to read start attributes nor return any (`meshtrace.sampling.is_attribute_blind`);
  it is still asked for every span, with the span's context, trace id, name and kind, exactly as the SDK does,
  except that the SDK's samplers and HintedSampler are evaluated by `meshtrace.sampling.known_decision`
  (their logic, without a SamplingResult and the three context look-ups per span), a root span on an empty
  context by the sampler's `root_rule` (one comparison on the trace id), and a child of a local, sampled parent
  (an HTTP client's span under the server span) by `sampled_local_rule`, read once per plan: RECORD_AND_SAMPLE
  with the parent's trace id and state, unless the context holds a deny hint (then `known_decision` decides);
  the parent's span context is read off its `_context` for the SDK's and the API's span types, whose
  `get_span_context()` returns just that;
- a `SynchronousMultiSpanProcessor` (the SDK's default) holding any processors: each one's `on_start` is
  called with the span (attributes already in place, as at SDK start), except those known to ignore it;
  `_on_ending` only where a processor overrides it; `on_end` with the span itself. That is safe because the
  span is immutable once ended, like the SDK's ReadableSpan copy: every mutator checks `_end_time` under the
  span's lock. The SDK's own Batch/SimpleSpanProcessor are skipped at end for a span that is not sampled (their
  `on_end` returns at once), and a sampled span goes straight to the BatchSpanProcessor's queue (`emit`, what
  its `on_end` calls after the sampled check); when that processor is the only one, `emit`'s own steps are
  done in place (append, wake the export thread at a whole batch) without its per-span `os.getpid()` system
  call, which only re-initialises the queue in a forked child, as the SDK's at-fork hook already does; a full
  queue or a shut-down processor still gets `emit` itself. meshtrace's DroppingBatchSpanProcessor (what
  `meshtrace.configure` installs) says what its `on_end` comes to (`light_end_call`): its `enqueue` for a
  sampled span, nothing for another, so its per-span sampled check is not made either.

`LightSpan.end_with_attribute(key, value)` is `set_attribute` and `end()` in one call and under one lock for the
usual last write (an HTTP client's response status code), the general calls for anything else.

With the SDK's RandomIdGenerator and a sampler whose decision is known without `should_sample`, a root span's
trace id and span id come from one `random.getrandbits(192)`: the low 128 bits are exactly what
`getrandbits(128)` would return and the high 64 what the following `getrandbits(64)` would (CPython fills the
bits from its 32-bit words low word first), so the ids equal the SDK's draw for draw.

Storage is kept lean, because a finished span waits in the export queue and every GC-tracked object it holds
is scanned by each collection meanwhile:

- fields that are the same for every span (no events, no links, UNSET status, the exception flags) are class
  attributes until a span sets its own, and the rest are set one by one on the instance, whose values CPython
  then keeps inline without a separate `__dict__` object;
- the attributes are a plain dict (holding only str/int/float/bool values, it is not even tracked by the GC)
  for as long as every value written is plain, under the count limit and not re-set; anything else turns it
  into the SDK's BoundedAttributes (`_bounded()`) and goes through the SDK's code. A dict exports exactly as a
  BoundedAttributes that dropped nothing (`dropped_attributes` is 0 for both);
- events and links start as an empty tuple and become the SDK's BoundedList on the first `add_event`/`add_link`
  (an empty tuple exports as an empty BoundedList does: nothing, nothing dropped);
- at `end()` the span's lock is swapped, under itself, for one lock shared by ended spans: every later mutator
  takes that lock, finds `_end_time` set and refuses, so no per-span lock needs to outlive the span's life.

Start attributes go straight into the dict when they are plain, non-empty-keyed `str`/`int`/`float`/`bool`
values and fit the count limit; anything else goes through BoundedAttributes as in the SDK. The SDK's internal
tracer metrics hook (`Tracer._tracer_metrics`, off unless OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED) is called
the same way when it is on. The per-tracer facts are cached in a `_Plan`, checked on every call (the sampler,
id generator, processors, limits, tracer config or metrics object replaced, or the enabled flag or a limit the
SDK reads at span start changed in place, means a new plan); the tracer's resource is read on every call, so the
resource the SDK updates after fork() is the one spans carry.

tests/tracing/test_light_span.py holds the exported spans equal to the SDK's field by field.
"""

from __future__ import annotations

import os
import random
import threading
from collections import deque
from collections.abc import Callable, Mapping
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import (
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    _Span,
    logger,
)
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler, TraceIdRatioBased
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util.types import AttributeValue

from meshtrace.sampling import (
    HintedSampler,
    RootRule,
    is_attribute_blind,
    known_decision,
    root_rule,
    sampled_local_rule,
)

try:  # private, and only in recent SDKs (pyproject allows older ones: their tracers simply take the SDK path)
    from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
except ImportError:  # pragma: no cover - depends on the installed SDK
    NoOpTracerMetrics = None  # type: ignore[assignment,misc]
try:  # private too: without it a sampled span goes through the batch processor's `emit` (see `_batch_of`)
    from opentelemetry.sdk._shared_internal import BatchProcessor as _SdkBatchProcessor
except ImportError:  # pragma: no cover - depends on the installed SDK
    _SdkBatchProcessor = None  # type: ignore[assignment,misc]

__all__ = ["QUIET_ON_START", "LightSpan", "plain_attributes", "start_light_span"]

_PLAIN = frozenset({str, int, bool, float})
_STR = frozenset({str})
_UNSET = Status(StatusCode.UNSET)
#: `on_start` implementations known to ignore the span (the SDK's own processors and the base class).
QUIET_ON_START = frozenset({SpanProcessor.on_start, BatchSpanProcessor.on_start, SimpleSpanProcessor.on_start})
#: `_on_ending` implementations that do nothing (the SDK's own processors and the base class).
_QUIET_ON_ENDING = frozenset({SpanProcessor._on_ending, BatchSpanProcessor._on_ending,
                             SimpleSpanProcessor._on_ending})
#: The SDK's default span limits, as (span attributes, attribute length, span attribute length, events, links,
#: event attributes, link attributes): with any other value the SDK path applies them.
_DEFAULT_LIMITS = (128, None, None, 128, 128, 128, 128)
#: The attribute count limit every light span has (the default limits are a condition of the light path), and
#: the event and link count limits the SDK reads at start.
_MAX_ATTRIBUTES, _MAX_EVENTS, _MAX_LINKS = _DEFAULT_LIMITS[0], _DEFAULT_LIMITS[3], _DEFAULT_LIMITS[4]
#: Trace flags by (sampled, random trace id): the four TraceFlags values a span can get.
_FLAGS = {(sampled, random): TraceFlags((TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
                                        | (TraceFlags.RANDOM_TRACE_ID if random else 0))
          for sampled in (False, True) for random in (False, True)}
_SAMPLE = Decision.RECORD_AND_SAMPLE
_RECORD_ONLY = Decision.RECORD_ONLY
_TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_MAX_TRACE_ID = (1 << 128) - 1
_MAX_SPAN_ID = (1 << 64) - 1
_new_object = object.__new__
_new_tuple = tuple.__new__
_new_lock = threading.Lock
_get_current = otel_context.get_current
_ApiSpan = trace.Span
# SpanContext is a tuple (trace id, span id, remote, flags, state, valid) built by a Python-level __new__ that
# fills defaults and checks the ids: a light span's ids are already known valid, so where the installed API lays
# the tuple out so (checked here, once), it is built directly.
_DIRECT = tuple(SpanContext(1, 1, False, _FLAGS[True, True], None)) == (1, 1, False, _FLAGS[True, True],
                                                                          DEFAULT_TRACE_STATE, True)
#: A sampled child's trace flags by its parent's (a sampled one's: any flags value with the SAMPLED bit), as the
#: SDK sets them: SAMPLED, and RANDOM_TRACE_ID when the parent has it.
_SAMPLED_CHILD_FLAGS = {value: _FLAGS[True, bool(value & TraceFlags.RANDOM_TRACE_ID)]
                        for value in range(256) if value & TraceFlags.SAMPLED}
_getrandbits = random.getrandbits
#: What every ended light span locks instead of its own lock (see `LightSpan.end`).
_ENDED_LOCK = threading.Lock()


class LightSpan(_Span):
    """An SDK span (`opentelemetry.sdk.trace.Span`, `ReadableSpan`) started by `start_light_span`.

    Behaves as the SDK's span in every public respect; storage details differ, all invisible through the
    ReadableSpan API: attributes are a plain dict until a write needs the SDK's BoundedAttributes, events and
    links are allocated on first use, constant fields live on the class, the lock is shared once the span has
    ended, and `on_end` receives the ended span itself rather than a copy (it refuses every change once ended,
    as the copy would).
    """

    _attributes: Any
    _events: Any
    _links: Any
    _span_processor: Any
    _plan: _Plan
    _ends: tuple[Callable[[Any], object], ...]

    # The per-call mutators below (set_attribute(s), rename_and_add, end,
    # end_with_attribute) take the lock by acquire() and release() in try/finally: a `with` looks up and binds
    # __enter__ and __exit__ on every call, about 1k instructions each time.

    # The same for every span until one sets its own (an instance attribute then hides these).
    _events = ()
    _links = ()
    _status = _UNSET
    _trace_config = None
    _record_exception = False
    _set_status_on_exception = False
    _record_end_metrics: Callable[[], None] | None = None

    def _bounded(self) -> None:
        """From here on the attributes are the SDK's BoundedAttributes, for a write only the SDK's code gets right.

        Built as the SDK built it at start (the default limits are a condition of the light path)."""
        with self._lock:
            attributes = self._attributes
            if type(attributes) is dict and self._end_time is None:
                bounded = BoundedAttributes(_MAX_ATTRIBUTES, None, False, None)
                bounded._dict = attributes  # every value in it is plain: nothing to clean or copy
                self._attributes = bounded

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if type(value) in _PLAIN and type(key) is str and key:
            lock = self._lock
            lock.acquire()
            try:
                attributes = self._attributes
                if (self._end_time is None and type(attributes) is dict
                        and (key in attributes or len(attributes) < _MAX_ATTRIBUTES)):
                    if key in attributes:
                        del attributes[key]  # as BoundedAttributes: a re-set key moves to the end
                    attributes[key] = value
                    return
            finally:
                lock.release()
        self._bounded()
        super().set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if plain_attributes(attributes):
            lock = self._lock
            lock.acquire()
            try:
                own = self._attributes
                if (self._end_time is None and type(own) is dict
                        and len(own) + len(attributes) <= _MAX_ATTRIBUTES):
                    if own.keys().isdisjoint(attributes):
                        own.update(attributes)
                    else:
                        for key, value in attributes.items():
                            if key in own:
                                del own[key]
                            own[key] = value
                    return
            finally:
                lock.release()
        self._bounded()
        super().set_attributes(attributes)

    def rename_and_add(self, name: str, attributes: Mapping[str, AttributeValue]) -> bool:
        """`update_name(name)` and `set_attributes(attributes)` under one lock, for attributes the span does not
        have yet with plain values; False, having changed nothing, where that could differ from the SDK (a key
        not a non-empty `str`, a value not plain, a key already set, the count limit, or the span ended)."""
        for key, value in attributes.items():  # a loop: cheaper than set-based checks on a handful of items
            if type(key) is not str or not key or type(value) not in _PLAIN:
                return False
        lock = self._lock
        lock.acquire()
        try:
            own = self._attributes
            if (self._end_time is not None or type(own) is not dict or len(own) + len(attributes) > _MAX_ATTRIBUTES
                    or not own.keys().isdisjoint(attributes)):
                return False
            self._name = name
            own.update(attributes)
            return True
        finally:
            lock.release()

    def update_name(self, name: str) -> None:
        with self._lock:
            if self._end_time is None:
                self._name = name
                return
        logger.warning("Tried calling %s on an ended span.", "update_name")

    def _add_event(self, event: Any) -> None:
        with self._lock:
            if self._end_time is None:
                events = self._events
                if type(events) is tuple:
                    events = self._events = BoundedList(self._limits.max_events)
                events.append(event)
                return
        logger.warning("Tried calling %s on an ended span.", "_add_event")

    def _add_link(self, link: trace.Link) -> None:
        with self._lock:
            if self._end_time is None:
                links = self._links
                if type(links) is tuple:
                    links = self._links = BoundedList(self._limits.max_links)
                links.append(link)
                return
        logger.warning("Tried calling %s on an ended span.", "_add_link")

    def end(self, end_time: int | None = None) -> None:
        lock = self._lock
        lock.acquire()
        try:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            ended = self._end_time is not None
            if not ended:
                self._end_time = end_time if end_time is not None else time_ns()
                attributes = self._attributes
                if type(attributes) is not dict:
                    attributes._immutable = True
                # Every mutator checks _end_time under the lock it reads now, so from here on the shared lock
                # does for this one: a thread already waiting on this span's own lock finds the span ended too.
                self._lock = _ENDED_LOCK
        finally:
            lock.release()
        if ended:
            logger.warning("Calling end() on an ended span.")
            return
        self._ended()

    def end_with_attribute(self, key: str, value: AttributeValue) -> None:
        """`set_attribute(key, value)` then `end()`, under one lock when the key is new to the span and the value
        plain (an HTTP client's response status code): what the two calls give, in every case.

        On an ended span, only `end()`'s warning is logged, as a caller checking `is_recording()` first gets."""
        lock = self._lock
        lock.acquire()
        try:
            attributes = self._attributes
            done = (self._end_time is None and self._start_time is not None and type(attributes) is dict
                    and type(value) in _PLAIN and type(key) is str and key != "" and key not in attributes
                    and len(attributes) < _MAX_ATTRIBUTES)
            if done:
                attributes[key] = value
                self._end_time = time_ns()
                self._lock = _ENDED_LOCK  # as in end()
        finally:
            lock.release()
        if done:
            plan = self._plan
            batch = plan.batch
            # _ended()'s usual case inline: no end metrics, the batch queue all there is at end, with room.
            if (batch is not None and self._ends is plan.ends_sampled and self._record_end_metrics is None
                    and self._span_processor._span_processors is plan.processors and not batch._shutdown
                    and len(queue := batch._queue) < queue.maxlen):
                queue.appendleft(self)
                if len(queue) >= batch._max_export_batch_size and not batch._worker_awaken.is_set():
                    batch._worker_awaken.set()
                return
            self._ended()
            return
        if self._end_time is None:
            self.set_attribute(key, value)
        self.end()

    def _ended(self) -> None:
        """What `end()` does once the span is marked ended: the end metrics and the processors' end calls."""
        if self._record_end_metrics is not None:
            self._record_end_metrics()
        plan = self._plan
        multi = self._span_processor
        if multi._span_processors is plan.processors:
            for on_ending in plan.on_ending:
                on_ending(self)
            batch = plan.batch
            if batch is not None and self._ends is plan.ends_sampled:
                # The batch processor's emit() steps for a sampled span and a queue with room, without its
                # per-span os.getpid() (a system call: the SDK's at-fork hook re-initialises the queue in a child).
                queue = batch._queue
                if not batch._shutdown and len(queue) < queue.maxlen:
                    queue.appendleft(self)
                    if len(queue) >= batch._max_export_batch_size and not batch._worker_awaken.is_set():
                        batch._worker_awaken.set()
                    return
            for on_end in self._ends:
                on_end(self)
        else:  # a processor was added since the span started: the SDK would call it, so do we
            multi._on_ending(self)
            multi.on_end(self)


# Set here, LightSpan being defined: the span types whose get_span_context() is the SDK's/API's `self._context`.
_CONTEXT_FIELD_SPANS = frozenset(kind for kind in (_Span, LightSpan, NonRecordingSpan)
                                 if kind.get_span_context in (_Span.get_span_context, ReadableSpan.get_span_context,
                                                              NonRecordingSpan.get_span_context))


def _always_known(sampler: object, depth: int = 0) -> bool:
    """True when `known_decision` decides for `sampler` whatever the context (and draws no random number):
    the SDK's samplers and HintedSampler over them."""
    kind = type(sampler)
    known: Any = sampler
    if depth > 8:
        return False
    if kind is StaticSampler or kind is TraceIdRatioBased:
        return True
    if kind is ParentBased:
        return all(_always_known(getattr(known, child, None), depth + 1) for child in (
            "_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled",
            "_local_parent_not_sampled"))
    if kind is HintedSampler:
        return _always_known(known.delegate, depth + 1)
    return False


def _end_calls(processors: tuple[SpanProcessor, ...], sampled: bool) -> tuple[Callable[[Any], object], ...]:
    """The `on_end` call per processor for a sampled or a recorded-only span, the SDK's own processors' checks
    done once here: they ignore a span that is not sampled, and the batch one queues a sampled one; meshtrace's
    processor tells its own (`light_end_call`)."""
    calls: list[Callable[[Any], object]] = []
    for processor in processors:
        kind = type(processor)
        own = "on_end" in getattr(processor, "__dict__", ())  # a patched instance: call what it has
        if kind is BatchSpanProcessor and not own:
            emit = getattr(getattr(processor, "_batch_processor", None), "emit", None)
            if sampled:
                calls.append(emit if callable(emit) else processor.on_end)
        elif kind is SimpleSpanProcessor and not own:
            if sampled:
                calls.append(processor.on_end)
        else:
            # meshtrace's DroppingBatchSpanProcessor says what its on_end comes to for a span sampled or not
            # (its enqueue, or nothing): the per-span sampled check is done here, once per plan.
            light = None if own else getattr(type(processor), "light_end_call", None)
            if not callable(light):
                calls.append(processor.on_end)
            elif (call := light(processor, sampled)) is not None:
                calls.append(call)
    return tuple(calls)


def _batch_of(processors: tuple[SpanProcessor, ...]) -> Any:
    """The SDK BatchProcessor behind `processors` when they are one BatchSpanProcessor (exact types, methods
    unpatched) whose state is laid out as this SDK version's `emit` uses it, and the SDK re-initialises it after
    fork() through an at-fork hook (so `emit`'s per-span pid check can be skipped); else None."""
    if (len(processors) != 1 or type(processors[0]) is not BatchSpanProcessor or _SdkBatchProcessor is None
            or not hasattr(os, "register_at_fork")):
        return None
    processor: Any = processors[0]
    inner = getattr(processor, "_batch_processor", None)
    if type(inner) is not _SdkBatchProcessor or "on_end" in vars(processor) or "emit" in vars(inner):
        return None
    if _BATCH_FIELDS - set(vars(inner)):
        return None
    queue = inner._queue
    if type(queue) is not deque or queue.maxlen is None or type(inner._max_export_batch_size) is not int:
        return None
    if type(inner._worker_awaken) is not threading.Event or inner._shutdown is not False:
        return None
    return inner


#: What `LightSpan._ended` reads of the SDK's BatchProcessor (its `emit`'s state).
_BATCH_FIELDS = frozenset({"_queue", "_shutdown", "_max_export_batch_size", "_worker_awaken"})


class _Plan:
    """What a tracer's configuration means for its light spans, valid while its parts stay the same objects."""

    __slots__ = ("batch", "child_hint", "config", "draw_once", "ends_recorded", "ends_sampled", "ids", "info", "limits",
                 "local_child", "metrics", "metrics_hook", "multi", "on_ending", "on_start", "processors",
                 "random_span_ids", "root", "sampler", "scope", "tracer")

    def __init__(self, tracer: SdkTracer, multi: Any, processors: tuple[SpanProcessor, ...]) -> None:
        self.tracer = tracer
        self.sampler = tracer.sampler
        self.ids = tracer.id_generator
        self.multi = multi
        self.processors = processors
        self.limits = tracer._span_limits
        self.config = tracer._tracer_config
        self.metrics_hook = tracer._tracer_metrics
        # The hook is called per span only when it is the real one (internal metrics enabled).
        self.metrics = None if type(self.metrics_hook) is NoOpTracerMetrics else self.metrics_hook
        self.info = tracer.instrumentation_info
        self.scope = tracer._instrumentation_scope
        self.on_start = tuple(p.on_start for p in processors if type(p).on_start not in QUIET_ON_START)
        self.on_ending = tuple(p._on_ending for p in processors if type(p)._on_ending not in _QUIET_ON_ENDING)
        self.ends_sampled = _end_calls(processors, True)
        #: The SDK's batch queue a sampled span goes to, when that queue is all there is at end (see `_batch_of`).
        self.batch = _batch_of(processors) if not self.on_ending else None
        self.ends_recorded = _end_calls(processors, False)
        #: A root span's ids in one draw: only where that is the SDK's very draw (see the module docstring).
        self.draw_once = type(self.ids) is RandomIdGenerator and _always_known(self.sampler)
        #: The sampler's decision for a root span on an empty context, as one comparison (None: ask per span).
        self.root: RootRule | None = root_rule(self.sampler)
        #: A span id is `random.getrandbits(64)` (redrawn by the generator when 0), as RandomIdGenerator draws it.
        self.random_span_ids = type(self.ids) is RandomIdGenerator
        # A child of a local sampled parent is sampled without asking (see `start_light_span`) unless the context
        # holds False under `child_hint` (None: no key to look at); only without the internal metrics hook, and
        # with a sampler rule of at most one key (HintedSampler's hint).
        rule = sampled_local_rule(self.sampler)
        self.local_child = rule is not None and len(rule) <= 1 and self.metrics is None and _DIRECT
        self.child_hint: str | None = rule[0] if rule else None


def _limit_values(limits: SpanLimits) -> tuple[int | None, ...]:
    return (limits.max_span_attributes, limits.max_attribute_length, limits.max_span_attribute_length,
            limits.max_events, limits.max_links, limits.max_event_attributes, limits.max_link_attributes)


#: id(tracer) -> its plan (None: the tracer does not qualify, for as long as the plan's parts stay the same).
_plans: dict[int, _Plan] = {}
_refusals: dict[int, tuple[tuple[object, ...], object]] = {}
_MAX_PLANS = 256


def _refusal_key(tracer: SdkTracer, multi: object) -> tuple[tuple[object, ...], object]:
    """What a refusal depended on: objects (compared by identity) and the mutable values read from them."""
    limits = getattr(tracer, "_span_limits", None)
    config = getattr(tracer, "_tracer_config", None)
    try:
        values: object = (_limit_values(limits), getattr(config, "is_enabled", None))  # type: ignore[arg-type]
    except AttributeError:
        values = None
    return (tracer, tracer.sampler, multi, getattr(multi, "_span_processors", None), limits, config), values


def _same_refusal(refused: tuple[tuple[object, ...], object], now: tuple[tuple[object, ...], object]) -> bool:
    return refused[1] == now[1] and all(a is b for a, b in zip(refused[0], now[0], strict=True))


def _plan_for(tracer: trace.Tracer) -> _Plan | None:
    """The tracer's plan, made anew (the cached one did not match the tracer any more), or None."""
    if type(tracer) is not SdkTracer:
        return None
    multi = tracer.span_processor
    refused = _refusals.get(id(tracer))
    if refused is not None and _same_refusal(refused, _refusal_key(tracer, multi)):
        return None
    plan = _new_plan(tracer, multi)
    if len(_plans) + len(_refusals) >= _MAX_PLANS:
        _plans.clear()
        _refusals.clear()
    if plan is None:
        _plans.pop(id(tracer), None)
        _refusals[id(tracer)] = _refusal_key(tracer, multi)
    else:
        _refusals.pop(id(tracer), None)
        _plans[id(tracer)] = plan
    return plan


def _new_plan(tracer: SdkTracer, multi: object) -> _Plan | None:
    # Private SDK fields, read defensively: a renamed one means the SDK path, never a failed request.
    try:
        limits: SpanLimits = tracer._span_limits
        config = tracer._tracer_config
        processors = multi._span_processors  # type: ignore[attr-defined]
        tracer._tracer_metrics  # noqa: B018  (its presence is checked here, its use is per span)
        tracer._instrumentation_scope  # noqa: B018
        limit_values = _limit_values(limits)
    except AttributeError:
        return None
    if type(multi) is not SynchronousMultiSpanProcessor or type(processors) is not tuple:
        return None
    if limit_values != _DEFAULT_LIMITS or config is None or config.is_enabled is not True:
        return None
    if not is_attribute_blind(tracer.sampler):
        return None
    if not all(isinstance(processor, SpanProcessor) for processor in processors):
        return None
    return _Plan(tracer, multi, processors)


def start_light_span(  # noqa: PLR0917  (Tracer.start_span's own parameters)
    tracer: trace.Tracer,
    name: str,
    context: Context | None,
    kind: SpanKind,
    attributes: Mapping[str, AttributeValue] | None,
    start_time: int | None,
    owned: bool = False,
) -> trace.Span | None:
    """`tracer.start_span(name, context, kind, attributes, (), start_time, False, False)` done lighter,
    or None when `tracer` is not configured in a way this path reproduces exactly (the caller uses the SDK).

    `owned`: `attributes` is a dict made for this span alone, its keys non-empty `str`s and its values plain
    (the caller checked): the span keeps it as its attribute dict, unchecked and uncopied."""
    sdk: Any = tracer
    plan = _plans.get(id(tracer))
    # The plan's parts, and the mutable values it relies on, checked inline: this runs per span. The SDK reads the
    # tracer config's flag per span, and of the limits, at start, the span attribute count and length limits and
    # the event and link count limits (the rest where a light span's SDK code reads them too): one of those
    # changed in place ends the plan.
    if (plan is None or plan.tracer is not tracer or plan.sampler is not sdk.sampler or plan.ids is not sdk.id_generator
            or plan.multi is not sdk.span_processor or plan.processors is not plan.multi._span_processors
            or plan.limits is not sdk._span_limits or plan.config is not sdk._tracer_config
            or plan.metrics_hook is not sdk._tracer_metrics or plan.config.is_enabled is not True
            or (limits := plan.limits).max_span_attributes != _MAX_ATTRIBUTES
            or limits.max_span_attribute_length is not None or limits.max_events != _MAX_EVENTS
            or limits.max_links != _MAX_LINKS):
        plan = _plan_for(tracer)
        if plan is None:
            return None

    # The parent, as trace.get_current_span(context).get_span_context() and the SDK's validity rule give it.
    ctx = context if context is not None else _get_current()
    parent: SpanContext | None = None
    flags: TraceFlags | None = None  # set below for a child whose sampling decision the plan knows
    if ctx:
        current: Any = ctx.get(_SPAN_KEY)
        if type(current) in _CONTEXT_FIELD_SPANS:
            parent = current._context
        elif current is not None and isinstance(current, _ApiSpan):
            parent = current.get_span_context()
        if parent is not None:
            if type(parent) is SpanContext and _DIRECT:
                if not parent[5]:  # is_valid, read off the tuple
                    parent = None
                elif plan.local_child and not parent[2]:
                    # A local parent (our server span): a sampled one's child is RECORD_AND_SAMPLE with the
                    # parent's trace id and state unless the context holds False under the plan's hint key
                    # (meshtrace.sampling.sampled_local_rule). flags stays None for any other parent.
                    flags = _SAMPLED_CHILD_FLAGS.get(parent[3])
                    hint = plan.child_hint
                    if hint is not None and flags is not None and ctx.get(hint) is False:
                        flags = None
            elif not isinstance(parent, SpanContext):
                raise TypeError("parent_span_context must be a SpanContext or None.")
            elif not parent.is_valid:
                parent = None

    ids: Any = plan.ids
    from_sampler: Mapping[str, Any] | None = None
    record_end = None
    if flags is not None:
        # parent is valid here; only the span id is drawn (as the SDK draws it, redrawn by the generator if 0).
        span_id = _getrandbits(64) if plan.random_span_ids else ids.generate_span_id()
        if not span_id:  # pragma: no cover - one chance in 2**64
            span_id = ids.generate_span_id()
        span_context = _new_tuple(SpanContext, (parent[0], span_id, False, flags, parent[4],  # type: ignore[index]
                                                span_id <= _MAX_SPAN_ID))
        sampled = True
    else:
        span_id = 0
        trace_state = None
        if parent is None:
            if plan.draw_once:
                bits = random.getrandbits(192)
                trace_id = bits & _MAX_TRACE_ID
                span_id = bits >> 128
                if not trace_id or not span_id:  # pragma: no cover - one chance in 2**64
                    trace_id = trace_id or ids.generate_trace_id()
                    span_id = span_id or ids.generate_span_id()
                random_id = True
            else:
                trace_id = ids.generate_trace_id()
                random_id = ids.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_id = parent.trace_flags.random_trace_id
        rule = plan.root
        if rule is not None and not ctx:  # a root span on an empty context (no parent can be in it)
            decision = rule[1] if trace_id & _TRACE_ID_LIMIT < rule[0] else rule[2]
        else:
            known = known_decision(plan.sampler, context, parent, trace_id)
            if known is None:
                result = plan.sampler.should_sample(context, trace_id, name, kind, None, ())
                decision, trace_state, from_sampler = result.decision, result.trace_state, result.attributes
            else:
                decision, trace_state = known
        if not span_id:
            span_id = ids.generate_span_id()

        sampled = decision is _SAMPLE
        if _DIRECT:
            span_context = _new_tuple(SpanContext, (
                trace_id, span_id, False, _FLAGS[sampled, bool(random_id)],
                DEFAULT_TRACE_STATE if trace_state is None else trace_state,
                0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID))
        else:  # pragma: no cover - an API whose SpanContext is laid out differently
            span_context = SpanContext(trace_id, span_id, False, _FLAGS[sampled, bool(random_id)], trace_state)
        record_end = plan.metrics.start_span(parent, decision) if plan.metrics is not None else None
        if not sampled and decision is not _RECORD_ONLY:
            return NonRecordingSpan(span_context)

    span: LightSpan = _new_object(LightSpan)
    span._name = name
    span._context = span_context
    span._parent = parent
    span._kind = kind
    span._resource = sdk.resource
    span._instrumentation_info = plan.info
    span._instrumentation_scope = plan.scope
    span._sampler = plan.sampler
    span._span_processor = plan.multi
    span._limits = plan.limits
    span._lock = _new_lock()
    if from_sampler:
        # Outside the blind-sampler contract, but honoured as the SDK would: the sampler's attributes win.
        span._attributes = _bounded_attributes({**(attributes or {}), **from_sampler})
    elif owned and len(attributes) <= _MAX_ATTRIBUTES:  # type: ignore[arg-type]
        span._attributes = attributes
    elif not attributes:
        span._attributes = {}
    else:
        span._attributes = _bounded_attributes(attributes)
    span._start_time = start_time if start_time is not None else time_ns()
    span._end_time = None
    span._plan = plan
    span._ends = plan.ends_sampled if sampled else plan.ends_recorded
    if record_end is not None:
        span._record_end_metrics = record_end
    for on_start in plan.on_start:
        on_start(span, parent_context=context)
    return span


def plain_attributes(attributes: Mapping[str, Any]) -> bool:
    """Every key a non-empty `str`, every value a plain `str`/`int`/`bool`/`float`: nothing the SDK would copy.

    Type checks as C loops over map(type, ...): a third of a Python loop's cost on a 20-attribute hop span.
    """
    return "" not in attributes and _STR.issuperset(map(type, attributes)) and _PLAIN.issuperset(
        map(type, attributes.values()))


def _bounded_attributes(attributes: Mapping[str, AttributeValue]) -> Any:
    """Start attributes the plain dict cannot hold as the SDK would (a value to copy, a key to drop, too many),
    in the SDK's own BoundedAttributes; plain ones that fit are kept as a dict."""
    if len(attributes) <= _MAX_ATTRIBUTES and plain_attributes(attributes):
        return dict(attributes)
    bounded = BoundedAttributes(_MAX_ATTRIBUTES, None, False, None)
    bounded._set_items(attributes)
    return bounded

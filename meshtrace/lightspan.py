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
  (their logic, without a SamplingResult and the three context look-ups per span);
- a `SynchronousMultiSpanProcessor` (the SDK's default) holding any processors: each one's `on_start` is
  called with the span (attributes already in place, as at SDK start), except those known to ignore it;
  `_on_ending` only where a processor overrides it; `on_end` with the span itself. That is safe because the
  span is immutable once ended, like the SDK's ReadableSpan copy: every mutator checks `_end_time` under the
  span's lock and the attribute mapping is frozen at end.

Events and links start as an empty tuple and become the SDK's BoundedList on the first `add_event`/`add_link`
(an empty tuple exports as an empty BoundedList does: nothing, nothing dropped). Start attributes go straight
into the BoundedAttributes' dict when they are plain, non-empty-keyed `str`/`int`/`float`/`bool` values and
fit the count limit; anything else goes through BoundedAttributes as in the SDK. The SDK's internal tracer
metrics hook (`Tracer._tracer_metrics`, off unless OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED) is called the
same way when it is on. The per-tracer facts are cached in a `_Plan`, checked on every call (the sampler,
processors, limits, tracer config or metrics object replaced, or a limit or the enabled flag changed in place,
means a new plan); the tracer's resource is read on every call, so the resource the SDK updates after fork()
is the one spans carry.

tests/tracing/test_light_span.py holds the exported spans equal to the SDK's field by field.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import (
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    _Span,
    logger,
)
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from meshtrace.sampling import is_attribute_blind, known_decision, trace_id_for

try:  # private, and only in recent SDKs (pyproject allows older ones: their tracers simply take the SDK path)
    from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
except ImportError:  # pragma: no cover - depends on the installed SDK
    NoOpTracerMetrics = None  # type: ignore[assignment,misc]

__all__ = ["QUIET_ON_START", "LightSpan", "plain_attributes", "start_light_span"]

_PLAIN = frozenset({str, int, bool, float})
_STR = frozenset({str})
_UNSET = Status(StatusCode.UNSET)
_NO_ATTRIBUTES: Mapping[str, Any] = {}
#: `on_start` implementations known to ignore the span (the SDK's own processors and the base class).
QUIET_ON_START = frozenset({SpanProcessor.on_start, BatchSpanProcessor.on_start, SimpleSpanProcessor.on_start})
#: `_on_ending` implementations that do nothing (the SDK's own processors and the base class).
_QUIET_ON_ENDING = frozenset({SpanProcessor._on_ending, BatchSpanProcessor._on_ending,
                             SimpleSpanProcessor._on_ending})
#: The SDK's default span limits, as (span attributes, attribute length, span attribute length, events, links,
#: event attributes, link attributes): with any other value the SDK path applies them.
_DEFAULT_LIMITS = (128, None, None, 128, 128, 128, 128)
#: Trace flags by (sampled, random trace id): the four TraceFlags values a span can get.
_FLAGS = {(sampled, random): TraceFlags((TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
                                        | (TraceFlags.RANDOM_TRACE_ID if random else 0))
          for sampled in (False, True) for random in (False, True)}
_get_current_span = trace.get_current_span
_new_object = object.__new__


class LightSpan(_Span):
    """An SDK span (`opentelemetry.sdk.trace.Span`, `ReadableSpan`) started by `start_light_span`.

    Behaves as the SDK's span in every public respect; two storage details differ, both invisible through
    the ReadableSpan API: events and links are allocated on first use, and `on_end` receives the ended span
    itself rather than a copy (it refuses every change once ended, as the copy would).
    """

    _attributes: Any
    _events: Any
    _links: Any
    _span_processor: Any
    _plan: _Plan

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

    def add_plain_attribute(self, key: str, value: AttributeValue) -> bool:
        """`set_attribute(key, value)` for a key the span does not have yet and a plain value, without the
        SDK's validation and copy; False, having changed nothing, where that could differ from the SDK (not a
        plain value or non-empty key, the key already set, the count limit reached, or the span ended)."""
        if type(value) not in _PLAIN or type(key) is not str or not key:
            return False
        with self._lock:
            attributes = self._attributes
            raw = attributes._dict
            maxlen = attributes.maxlen
            if (self._end_time is not None or attributes._immutable or attributes.max_value_len is not None
                    or key in raw or (maxlen is not None and len(raw) >= maxlen)):
                return False
            raw[key] = value
            return True

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                logger.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            self._attributes._immutable = True
        if self._record_end_metrics is not None:
            self._record_end_metrics()
        multi = self._span_processor
        plan: _Plan = self._plan
        if multi._span_processors is plan.processors:
            for on_ending in plan.on_ending:
                on_ending(self)
            for on_end in plan.on_end:
                on_end(self)
        else:  # a processor was added since the span started: the SDK would call it, so do we
            multi._on_ending(self)
            multi.on_end(self)


class _Plan:
    """What a tracer's configuration means for its light spans, valid while its parts stay the same objects."""

    __slots__ = ("config", "limits", "metrics", "metrics_hook", "on_end", "on_ending", "on_start", "processors",
                 "sampler", "template", "tracer")

    def __init__(self, tracer: SdkTracer, processors: tuple[SpanProcessor, ...]) -> None:
        self.tracer = tracer
        self.sampler = tracer.sampler
        self.processors = processors
        self.limits = tracer._span_limits
        self.config = tracer._tracer_config
        self.metrics_hook = tracer._tracer_metrics
        # The hook is called per span only when it is the real one (internal metrics enabled).
        self.metrics = None if type(self.metrics_hook) is NoOpTracerMetrics else self.metrics_hook
        self.on_start = tuple(p.on_start for p in processors if type(p).on_start not in QUIET_ON_START)
        self.on_ending = tuple(p._on_ending for p in processors if type(p)._on_ending not in _QUIET_ON_ENDING)
        self.on_end = tuple(p.on_end for p in processors)
        # Every field _Span.__init__ sets that is the same for all of this tracer's spans.
        self.template: dict[str, Any] = {
            "_instrumentation_info": tracer.instrumentation_info,
            "_instrumentation_scope": tracer._instrumentation_scope,
            "_end_time": None,
            "_events": (),
            "_links": (),
            "_status": _UNSET,
            "_sampler": self.sampler,
            "_trace_config": None,
            "_record_exception": False,
            "_set_status_on_exception": False,
            "_span_processor": tracer.span_processor,
            "_limits": self.limits,
            "_record_end_metrics": None,
            "_plan": self,
        }

    def current(self, tracer: SdkTracer, multi: Any) -> bool:
        # Identities, plus the two mutable values a plan relies on: the SDK reads the tracer config's flag
        # and the limits per span, so a flag or limit changed in place must end the plan too.
        limits = self.limits
        return (self.tracer is tracer and self.sampler is tracer.sampler and limits is tracer._span_limits
                and self.processors is multi._span_processors and self.config is tracer._tracer_config
                and self.metrics_hook is tracer._tracer_metrics and self.config.is_enabled is True
                and _limit_values(limits) == _DEFAULT_LIMITS)


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
    if type(tracer) is not SdkTracer:
        return None
    multi = tracer.span_processor
    plan = _plans.get(id(tracer))
    if plan is not None and plan.current(tracer, multi):
        return plan
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
    return _Plan(tracer, processors)


def start_light_span(  # noqa: PLR0917  (Tracer.start_span's own parameters)
    tracer: trace.Tracer,
    name: str,
    context: Context | None,
    kind: SpanKind,
    attributes: Mapping[str, AttributeValue] | None,
    start_time: int | None,
) -> trace.Span | None:
    """`tracer.start_span(name, context, kind, attributes, (), start_time, False, False)` done lighter,
    or None when `tracer` is not configured in a way this path reproduces exactly (the caller uses the SDK)."""
    plan = _plan_for(tracer)
    if plan is None:
        return None
    sdk: SdkTracer = plan.tracer
    parent: SpanContext | None = _get_current_span(context).get_span_context()
    if parent is not None and not isinstance(parent, SpanContext):
        raise TypeError("parent_span_context must be a SpanContext or None.")
    ids = sdk.id_generator
    parent, trace_id, random_trace_id = trace_id_for(ids, parent)
    known = known_decision(plan.sampler, context, parent, trace_id)
    from_sampler: Mapping[str, Any]
    if known is None:
        result = plan.sampler.should_sample(context, trace_id, name, kind, None, ())
        decision, trace_state, from_sampler = result.decision, result.trace_state, result.attributes
    else:
        (decision, trace_state), from_sampler = known, _NO_ATTRIBUTES
    sampled = decision is Decision.RECORD_AND_SAMPLE
    span_context = SpanContext(trace_id, ids.generate_span_id(), False, _FLAGS[sampled, bool(random_trace_id)],
                               trace_state)
    record_end = plan.metrics.start_span(parent, decision) if plan.metrics is not None else None
    if not sampled and decision is not Decision.RECORD_ONLY:
        return NonRecordingSpan(span_context)

    span: LightSpan = _new_object(LightSpan)
    fields = plan.template.copy()
    fields["_name"] = name
    fields["_context"] = span_context
    fields["_parent"] = parent
    fields["_kind"] = kind
    fields["_resource"] = sdk.resource
    fields["_lock"] = threading.Lock()
    fields["_attributes"] = _start_attributes(plan.limits, attributes, from_sampler)
    fields["_start_time"] = start_time if start_time is not None else time_ns()
    if record_end is not None:
        fields["_record_end_metrics"] = record_end
    span.__dict__ = fields
    for on_start in plan.on_start:
        on_start(span, parent_context=context)
    return span


def plain_attributes(attributes: Mapping[str, Any]) -> bool:
    """Every key a non-empty `str`, every value a plain `str`/`int`/`bool`/`float`: nothing the SDK would copy.

    Type checks as C loops over map(type, ...): a third of a Python loop's cost on a 20-attribute hop span.
    """
    return "" not in attributes and _STR.issuperset(map(type, attributes)) and _PLAIN.issuperset(
        map(type, attributes.values()))


def _start_attributes(limits: SpanLimits, attributes: Mapping[str, AttributeValue] | None,
                      from_sampler: Mapping[str, Any]) -> BoundedAttributes:
    maxlen = limits.max_span_attributes
    if from_sampler:
        # Outside the blind-sampler contract, but honoured as the SDK would: the sampler's attributes win.
        attributes = {**(attributes or {}), **from_sampler}
    bounded = BoundedAttributes(maxlen, None, False, None)
    if attributes:
        if (maxlen is None or len(attributes) <= maxlen) and plain_attributes(attributes):
            bounded._dict = dict(attributes)
        else:
            bounded._set_items(attributes)
    return bounded


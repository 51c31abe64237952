"""The encoded lane: when a tracer's spans may skip the SDK span object and reach the exporter as OTLP bytes.

Theory of operation. A caller that writes its finished span's OTLP bytes itself (meshtrace.exporters.encoded)
must produce what the SDK would have exported, and hand it to a pipeline that takes bytes. `encoded_lane(tracer)`
returns an `EncodedLane` only when both hold:

- an SDK `Tracer` (exact type), enabled, without the SDK's internal tracer metrics (their per-span hook is the
  SDK span's), with span limits that cannot change a span of a few dozen plain attributes (no value length
  limit, room for at least `MIN_ATTRIBUTES`);
- an attribute-blind sampler (meshtrace.sampling.is_attribute_blind): the lane never has start attributes to
  show it; `start` asks it through `known_decision` exactly as meshtrace.lightspan does, and says None (use
  the SDK span then) for the rare sampler whose decision only `should_sample` knows;
- the SDK's default `SynchronousMultiSpanProcessor` holding exactly one processor, and that one accepting
  pre-encoded spans (`accepts_encoded()`: meshtrace's DroppingBatchSpanProcessor over a GuardedExporter over
  FastOTLPSpanExporter). Any other processor, or a second one (an InMemorySpanExporter in a test, a user's
  own), would expect SDK spans.

Like meshtrace.lightspan's plan, a lane is cached per tracer and `current(tracer)` re-checks that the objects it
was built from are still the tracer's (sampler, processors, limits, config, metrics) and that the limits and
enabled flag read in place have not changed: `encoded_lane` does so whenever it hands out a cached lane. A caller
that keeps a lane for many spans (the sidecar's hop tracer) may instead check `unchanged(tracer)` per span: only
what the SDK's own API changes on a live tracer (`add_span_processor` replaces the processor tuple, a tracer
configurator replaces the tracer's config), the rest being set once in the Tracer's constructor. The tracer's
resource is read per span (the SDK may replace it after fork()).

`start` makes the span's context as the SDK would: the parent's trace id or a new one from the tracer's id
generator, the sampler's decision and trace state, a new span id, the sampled and random-trace-id flags. A root
span on an empty context (no trace header arrived: most requests at the edge) takes a shorter way when the
sampler's decision there is a known rule on the trace id (meshtrace.sampling.root_rule, read once per lane), and
with the SDK's RandomIdGenerator both ids come from one `random.getrandbits(192)`: the low 128 bits are what
its `getrandbits(128)` for the trace id returns and the high 64 what the following `getrandbits(64)` for the span
id would, so the ids equal the SDK's draw for draw, in one call instead of three.
"""

from __future__ import annotations

import random
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from meshtrace.exporters.encoded import accepts_encoded
from meshtrace.sampling import RootRule, is_attribute_blind, known_decision, root_rule, trace_id_for

try:  # private, and only in recent SDKs (older ones have no per-span metrics hook to honour)
    from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
except ImportError:  # pragma: no cover - depends on the installed SDK
    NoOpTracerMetrics = None  # type: ignore[assignment,misc]

__all__ = ["MIN_ATTRIBUTES", "EncodedLane", "Started", "encoded_lane"]

#: The attribute-count limit must leave room for this many (a hop span has fewer than 30).
MIN_ATTRIBUTES = 64
_FLAGS = {(sampled, random): TraceFlags((TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
                                        | (TraceFlags.RANDOM_TRACE_ID if random else 0))
          for sampled in (False, True) for random in (False, True)}
_SAMPLE = Decision.RECORD_AND_SAMPLE
_RECORD = Decision.RECORD_ONLY
_get_current_span = trace.get_current_span
_new_tuple = tuple.__new__
_NO_STATE = DEFAULT_TRACE_STATE
_TRACE_ID_MAX, _SPAN_ID_MAX = (1 << 128) - 1, (1 << 64) - 1
_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_getrandbits = random.getrandbits
# SpanContext is a tuple (trace id, span id, remote, flags, trace state, valid) made by its __new__: when so,
# `start` makes it the same way directly.
_TUPLE_CONTEXT = SpanContext.__bases__ == (tuple,) and tuple(SpanContext(1, 2, True, TraceFlags(1), None)) == (
    1, 2, True, TraceFlags(1), DEFAULT_TRACE_STATE, True)
#: (span context, parent span context or None, recording, sampled) for a span `EncodedLane.start` began.
Started = tuple[SpanContext, "SpanContext | None", bool, bool]


def _limits_fit(limits: Any) -> bool:
    count = limits.max_span_attributes
    return (limits.max_attribute_length is None and limits.max_span_attribute_length is None
            and (count is None or count >= MIN_ATTRIBUTES))


def _outcome(decision: Decision) -> tuple[TraceFlags, bool, bool]:
    """(trace flags with a random trace id, recording, sampled) of a span the sampler gave `decision`."""
    sampled = decision is _SAMPLE
    return _FLAGS[sampled, True], sampled or decision is _RECORD, sampled


class EncodedLane:
    """One tracer's way to pre-encoded export, valid while `current(tracer)` says so."""

    __slots__ = ("config", "enqueue", "ids", "limits", "metrics", "multi", "processors", "root", "root_random",
                 "sampler", "scope", "tracer")

    def __init__(self, tracer: SdkTracer) -> None:
        self.tracer = tracer
        self.sampler = tracer.sampler
        self.ids = tracer.id_generator
        self.multi: Any = tracer.span_processor
        # Read here, not handed over by `_new_lane`: there it is known to be a 1-tuple, which the compiled module
        # passes on unboxed and so as a new tuple, and `current` compares it by identity.
        processors: Any = self.multi._span_processors
        self.processors = processors
        self.limits = tracer._span_limits
        self.config = tracer._tracer_config
        self.metrics = tracer._tracer_metrics
        self.scope: InstrumentationScope | None = tracer._instrumentation_scope
        self.enqueue = processors[0].enqueue
        # The sampler's decision for a root span on an empty context, when it is a rule on the trace id.
        self.root = root_rule(self.sampler)
        # With the SDK's RandomIdGenerator and a SpanContext made as a tuple: the rule's bound, and (flags,
        # recording, sampled) below it and above it.
        self.root_random: tuple[int, tuple[TraceFlags, bool, bool], tuple[TraceFlags, bool, bool]] | None = None
        if self.root is not None and type(self.ids) is RandomIdGenerator and _TUPLE_CONTEXT:
            bound, below, above = self.root
            low, high = _outcome(below), _outcome(above)
            # The same outcome both sides when every trace id gets the same (an always-on/off sampler, a ratio of 1
            # or 0). The rule compares the id's low 64 bits with the bound.
            if high == low or bound > _ID_LIMIT:
                high = low
            elif bound <= 0:
                low = high
            self.root_random = bound, low, high

    def current(self, tracer: trace.Tracer) -> bool:
        t: Any = tracer
        return (self.tracer is t and self.sampler is t.sampler and self.multi is t.span_processor
                and self.processors is t.span_processor._span_processors and self.limits is t._span_limits
                and self.config is t._tracer_config and self.metrics is t._tracer_metrics
                and self.config.is_enabled is True and _limits_fit(self.limits))

    def unchanged(self, tracer: trace.Tracer) -> bool:
        """`current(tracer)` as far as the SDK's API can change a live tracer: its processors and its config
        (replaced, or turned off in place)."""
        t: Any = tracer
        return (self.processors is self.multi._span_processors and self.config is t._tracer_config
                and self.tracer is t and self.config.is_enabled is True)

    @property
    def resource(self) -> Resource:
        return self.tracer.resource

    def start(self, context: Context) -> Started | None:
        """The new span's context, its parent's (None for a root) and whether it records and is sampled; None
        when the sampler's decision needs `should_sample` (start an SDK span instead)."""
        if not context:
            # An empty context (a request without trace headers, most of them at the edge) holds no parent.
            fast = self.root_random
            if fast is not None:    # both ids in one draw (a zero one, once in 2**64: the generator's way)
                bits = _getrandbits(192)
                # Split as meshtrace.lightspan does: the very ids RandomIdGenerator would draw, trace id first.
                trace_id, span_id = bits & _TRACE_ID_MAX, bits >> 128
                if trace_id and span_id:
                    # (No identity shortcut for an always-on/off sampler: compiled, `fast[1]` comes back as a new
                    # tuple each time, so `is` never held; both sides being equal, the comparison decides alike.)
                    flags, recording, sampled = fast[1] if trace_id & _ID_LIMIT < fast[0] else fast[2]
                    return (_new_tuple(SpanContext, (trace_id, span_id, False, flags, _NO_STATE, True)), None,
                            recording, sampled)
            rule = self.root
            if rule is not None:
                return self._start_root(rule)
            parent: SpanContext | None = None
        else:
            parent = _get_current_span(context).get_span_context()
        ids = self.ids
        parent, trace_id, random_trace_id = trace_id_for(ids, parent)
        known = known_decision(self.sampler, context, parent, trace_id)
        if known is None:
            return None
        decision, trace_state = known
        sampled = decision is _SAMPLE
        span_id = ids.generate_span_id()
        flags = _FLAGS[sampled, bool(random_trace_id)]
        if _TUPLE_CONTEXT:  # SpanContext's own __new__, without its Python-level argument handling
            span_context = _new_tuple(SpanContext, (trace_id, span_id, False, flags,
                                                    _NO_STATE if trace_state is None else trace_state,
                                                    0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX))
        else:  # pragma: no cover - an API whose SpanContext is laid out differently
            span_context = SpanContext(trace_id, span_id, False, flags, trace_state)
        return span_context, parent, sampled or decision is _RECORD, sampled

    def _start_root(self, rule: RootRule) -> Started:
        """`start` for a root span on an empty context, the sampler's decision there being `rule`; the ids from
        the generator in the SDK's order (the trace id, then, after the sampler, the span id)."""
        ids = self.ids
        trace_id = ids.generate_trace_id()
        random_trace_id = ids.is_trace_id_random()
        span_id = ids.generate_span_id()
        bound, below, above = rule
        decision = below if trace_id & _ID_LIMIT < bound else above
        sampled = decision is _SAMPLE
        flags = _FLAGS[sampled, bool(random_trace_id)]
        if _TUPLE_CONTEXT:
            span_context = _new_tuple(SpanContext, (trace_id, span_id, False, flags, _NO_STATE,
                                                    0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX))
        else:  # pragma: no cover - an API whose SpanContext is laid out differently
            span_context = SpanContext(trace_id, span_id, False, flags, None)
        return span_context, None, sampled or decision is _RECORD, sampled

    def export(self, context: SpanContext, data: bytes) -> None:
        """Queue one finished, sampled span's `ScopeSpans.spans` field (see meshtrace.exporters.encoded): an
        EncodedSpan's fields as a plain tuple, which the pipeline reads the same."""
        self.enqueue((self.tracer.resource, self.scope, context, data))


#: id(tracer) -> (tracer, its lane or None, what a refusal depended on: `_refusal_key`)
_lanes: dict[int, tuple[object, EncodedLane | None, object]] = {}
_MAX_LANES = 256


def _refusal_key(tracer: Any) -> object:
    """The objects a refusal depended on (compared by identity) and the values it read from them in place."""
    limits = getattr(tracer, "_span_limits", None)
    config = getattr(tracer, "_tracer_config", None)
    multi = getattr(tracer, "span_processor", None)
    values = (getattr(config, "is_enabled", None), getattr(limits, "max_span_attributes", None),
              getattr(limits, "max_attribute_length", None), getattr(limits, "max_span_attribute_length", None))
    return (tracer.sampler, multi, getattr(multi, "_span_processors", None), limits, config,
            getattr(tracer, "_tracer_metrics", None)), values


def _same_refusal(refused: Any, now: Any) -> bool:
    return bool(refused[1] == now[1]) and all(a is b for a, b in zip(refused[0], now[0], strict=True))


def encoded_lane(tracer: trace.Tracer) -> EncodedLane | None:
    """The tracer's encoded lane, or None when its spans must be SDK spans (see the module docstring)."""
    if type(tracer) is not SdkTracer:
        return None
    cached = _lanes.get(id(tracer))
    if cached is not None and cached[0] is tracer:
        lane = cached[1]
        if lane is not None:
            if lane.current(tracer):
                return lane
        elif _same_refusal(cached[2], _refusal_key(tracer)):
            return None
    lane = _new_lane(tracer)
    if len(_lanes) >= _MAX_LANES:
        _lanes.clear()
    _lanes[id(tracer)] = (tracer, lane, None if lane is not None else _refusal_key(tracer))
    return lane


def _new_lane(tracer: SdkTracer) -> EncodedLane | None:
    # Private SDK fields, read defensively: a renamed one means the SDK span, never a failed request.
    try:
        multi: Any = tracer.span_processor
        processors = multi._span_processors
        limits = tracer._span_limits
        config = tracer._tracer_config
        metrics = tracer._tracer_metrics
        tracer._instrumentation_scope  # noqa: B018
        fits = _limits_fit(limits)
    except AttributeError:
        return None
    if type(multi) is not SynchronousMultiSpanProcessor or type(processors) is not tuple or len(processors) != 1:
        return None
    if not fits or config is None or config.is_enabled is not True:
        return None
    if NoOpTracerMetrics is None or type(metrics) is not NoOpTracerMetrics:
        return None
    if not is_attribute_blind(tracer.sampler) or not accepts_encoded(processors[0]):
        return None
    return EncodedLane(tracer)

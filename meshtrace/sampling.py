"""Samplers: the OpenTelemetry ones by name, wrapped so an upstream decision in any header format wins.

An OpenTelemetry SpanContext cannot carry a decision without trace ids, yet `b3: 0` is exactly that: "do not
sample, whatever you are". The propagation formats record such decisions (and debug forces) as a sampling
hint in the context; HintedSampler reads it before asking the configured sampler:

- hint False (a bare deny)                 -> DROP, even without a valid parent;
- hint True, or a debug trace              -> RECORD_AND_SAMPLE, even when the sampler would drop;
- ids without a decision (B3 or OT with no sampled header, "deferred"), on the remote parent itself
                                           -> the configured sampler decides as for a root span (the span
                                              still joins the incoming trace; its trace state is kept);
- otherwise                                -> the configured sampler (parent-based ones follow the parent's flag).

Attribute-blind samplers. meshtrace starts its own spans on a lighter path (meshtrace.lightspan) that asks the
sampler without the start attributes. That is only right for a sampler that neither reads the attributes nor
returns any: the SDK's StaticSampler/TraceIdRatioBased/ParentBased, HintedSampler, and any sampler class
declared with `declare_attribute_blind(cls, delegates)`, whose instances are blind when every sampler
`delegates(instance)` returns is blind too (a wrapper is only as blind as what it wraps). Types are matched
exactly: a subclass may read attributes, so it must be declared itself. A sampler nobody declared keeps
seeing the attributes at start, as the SDK documents. `known_decision` goes one step further for the samplers
whose logic it knows (and for declared ones that pass a `decide` function): meshtrace's spans get the very
decision `should_sample` would give without the call, and `root_rule` gives the same decision for a root span on
an empty context (a request without any trace header) as one comparison on the new trace id, read from the
samplers once: that is the commonest span at the edge. Inside a service the commonest is a client call's span
under the server span: `sampled_local_rule` says, read once too, when a child of a local sampled parent is
sampled whatever its trace id and context (save a deny hint, which `known_decision` then handles).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import INVALID_SPAN, Link, SpanKind, get_current_span, set_span_in_context
from opentelemetry.trace.span import SpanContext, TraceState
from opentelemetry.util.types import Attributes

from meshtrace.propagation._context import SAMPLING_HINT_KEY, get_sampling_hint, is_debug, is_sampling_deferred

__all__ = [
    "HintedSampler",
    "RootRule",
    "build_sampler",
    "declare_attribute_blind",
    "is_attribute_blind",
    "known_decision",
    "parent_trace_state",
    "root_rule",
    "sampled_local_rule",
    "trace_id_for",
]


def build_sampler(name: str, ratio: float = 1.0) -> Sampler:
    """The OpenTelemetry sampler called `name` (OTEL_TRACES_SAMPLER spelling); ratio for the ratio ones."""
    if name == "always_on":
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "traceidratio":
        return TraceIdRatioBased(ratio)
    if name == "parentbased_always_on":
        return ParentBased(ALWAYS_ON)
    if name == "parentbased_always_off":
        return ParentBased(ALWAYS_OFF)
    if name == "parentbased_traceidratio":
        return ParentBased(TraceIdRatioBased(ratio))
    raise ValueError(f"unknown sampler {name!r}")


class HintedSampler(Sampler):
    """Honour a sampling hint or debug flag from the incoming headers, else defer to `delegate`."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(  # noqa: PLR0917  (the SDK Sampler signature)
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        hint = get_sampling_hint(parent_context)
        if hint is True or is_debug(parent_context):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent_trace_state(parent_context))
        if hint is False:
            return SamplingResult(Decision.DROP, None, parent_trace_state(parent_context))
        parent = get_current_span(parent_context).get_span_context()
        if parent.is_valid and parent.is_remote and is_sampling_deferred(parent_context):
            # Hide the undecided parent so a parent-based sampler uses its root sampler on this trace id.
            as_root = set_span_in_context(INVALID_SPAN, parent_context)
            result = self.delegate.should_sample(as_root, trace_id, name, kind, attributes, links, trace_state)
            return SamplingResult(result.decision, result.attributes, parent.trace_state)
        return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"HintedSampler{{{self.delegate.get_description()}}}"


def parent_trace_state(parent_context: Context | None) -> TraceState | None:
    span_context = get_current_span(parent_context).get_span_context()
    return span_context.trace_state if span_context.is_valid else None


Delegates = Callable[[Any], Iterable[object]]

_PARENT_BASED_CHILDREN = ("_root", "_remote_parent_sampled", "_remote_parent_not_sampled",
                          "_local_parent_sampled", "_local_parent_not_sampled")


def _no_delegates(sampler: object) -> Iterable[object]:
    return ()


def _parent_based_children(sampler: object) -> Iterable[object]:
    # Read defensively: a renamed SDK field yields None, which is not blind, so the span takes the SDK path.
    return [getattr(sampler, child, None) for child in _PARENT_BASED_CHILDREN]


def _delegate(sampler: object) -> Iterable[object]:
    return (getattr(sampler, "delegate", None),)


#: Exact sampler type -> the samplers an instance defers to (all of which must be blind as well).
_blind: dict[type, Delegates] = {
    StaticSampler: _no_delegates,
    TraceIdRatioBased: _no_delegates,
    ParentBased: _parent_based_children,
    HintedSampler: _delegate,
}


#: (decision, trace state) as `should_sample` would return them; see `known_decision`.
Known = tuple[Decision, TraceState | None]
#: A declared sampler's own `known_decision`: (sampler, parent context, parent span context or None, trace id)
#: -> its decision, or None to have `should_sample` asked. `known_decision` is passed in for delegating.
Decide = Callable[[Any, Context | None, SpanContext | None, int], "Known | None"]

_deciders: dict[type, Decide] = {}
#: Exact sampler type -> the sampler an instance defers to on an empty context (see `root_rule`).
_on_empty: dict[type, Callable[[Any], object]] = {}


def declare_attribute_blind(cls: type[Sampler], delegates: Delegates = _no_delegates,
                            decide: Decide | None = None, on_empty: Callable[[Any], object] | None = None) -> None:
    """Declare that `cls.should_sample` neither reads `attributes` nor returns any (it passes them through).

    `delegates(sampler)` lists the samplers an instance may defer to, e.g. `lambda s: (s.delegate,)` for a
    wrapper; the instance counts as blind only when they all are. Only `cls` itself is declared, not its
    subclasses. meshtrace's own spans then skip handing the sampler their start attributes (see
    meshtrace.lightspan); spans are otherwise unchanged.

    `decide`, optional, lets meshtrace's spans skip `should_sample` too: given (sampler, parent context,
    parent span context or None for a root, trace id) it returns exactly the (decision, trace state) that
    `should_sample` would, or None to have `should_sample` asked. A wrapper delegates with
    `known_decision(sampler.delegate, parent_context, parent, trace_id)`.

    `on_empty`, optional, only with `decide`: given an instance, the sampler whose decision `decide` returns
    unchanged when the parent context is empty (a wrapper that only reacts to something in the context), so that
    `root_rule` can see through the wrapper.
    """
    _blind[cls] = delegates
    if decide is None:
        _deciders.pop(cls, None)
    else:
        _deciders[cls] = decide
    if decide is None or on_empty is None:
        _on_empty.pop(cls, None)
    else:
        _on_empty[cls] = on_empty


def is_attribute_blind(sampler: object, _depth: int = 0) -> bool:
    """True when `sampler` (and every sampler it defers to) was declared attribute-blind."""
    delegates = _blind.get(type(sampler))
    if delegates is None or _depth > 8:
        return False
    return all(is_attribute_blind(inner, _depth + 1) for inner in delegates(sampler))


_SAMPLE = Decision.RECORD_AND_SAMPLE
_DROP = Decision.DROP


def trace_id_for(ids: IdGenerator, parent: SpanContext | None) -> tuple[SpanContext | None, int, bool]:
    """(the parent, None when it is not valid; the trace id; whether that id is random) as the SDK's start_span
    picks them before it asks the sampler: a new id from `ids` for a root, else the parent's."""
    if parent is None or not parent.is_valid:
        return None, ids.generate_trace_id(), ids.is_trace_id_random()
    return parent, parent.trace_id, parent.trace_flags.random_trace_id


def known_decision(sampler: object, parent_context: Context | None, parent: SpanContext | None,
                   trace_id: int) -> Known | None:
    """(decision, trace state) that `sampler.should_sample(parent_context, trace_id, ...)` returns, worked
    out without SamplingResult objects or repeated context look-ups; None for a sampler not known here.

    `parent` is the span context of `parent_context`'s current span, None when that is not valid (a root).
    Known, by exact type: the SDK's StaticSampler (ALWAYS_ON/OFF), TraceIdRatioBased and ParentBased,
    HintedSampler, and samplers declared with a `decide` function, over known samplers. This mirrors their
    `should_sample` line for line (none of them reads the name, kind, attributes or links);
    tests/tracing/test_light_span.py holds the two equal.
    """
    kind = type(sampler)
    known: Any = sampler
    if kind is StaticSampler:
        return known._decision, None if parent is None else parent.trace_state
    if kind is TraceIdRatioBased:
        sampled = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < known.bound
        return _SAMPLE if sampled else _DROP, None if parent is None else parent.trace_state
    if kind is ParentBased:
        if parent is None:
            inner = known._root
        elif parent.is_remote:
            inner = known._remote_parent_sampled if parent.trace_flags.sampled else known._remote_parent_not_sampled
        else:
            inner = known._local_parent_sampled if parent.trace_flags.sampled else known._local_parent_not_sampled
        return known_decision(inner, parent_context, parent, trace_id)
    if kind is HintedSampler:
        if parent_context is not None and not parent_context:
            # An empty context (a request without trace headers) holds no hint, no debug flag and no parent, so
            # the delegate decides as for a root: skip two context look-ups on the commonest request at the edge.
            return known_decision(known.delegate, parent_context, parent, trace_id)
        hint = get_sampling_hint(parent_context)
        if hint is True or is_debug(parent_context):
            return _SAMPLE, None if parent is None else parent.trace_state
        if hint is False:
            return _DROP, None if parent is None else parent.trace_state
        delegate = known.delegate
        if parent is not None and parent.is_remote and is_sampling_deferred(parent_context):
            # As should_sample: the delegate decides as for a root span; the parent's trace state is kept.
            as_root = known_decision(delegate, set_span_in_context(INVALID_SPAN, parent_context), None, trace_id)
            return None if as_root is None else (as_root[0], parent.trace_state)
        return known_decision(delegate, parent_context, parent, trace_id)
    decide = _deciders.get(kind)
    return None if decide is None else decide(sampler, parent_context, parent, trace_id)


#: How `known_decision` decides for a root span on an empty context: (bound, below, above) means `below` when
#: `trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < bound`, else `above`; the trace state is None either way.
RootRule = tuple[int, Decision, Decision]


def root_rule(sampler: object, _depth: int = 0) -> RootRule | None:
    """`known_decision(sampler, Context(), None, trace_id)` for every trace id, as one comparison; None when that
    is not known here (ask `known_decision` per span then).

    Read from the samplers once (a caller keeps it for as long as it keeps the sampler): the SDK's samplers are
    not changed in place, and neither may a declared sampler's `on_empty` delegate be. Followed: HintedSampler
    (an empty context holds no hint or debug flag), ParentBased (no parent: its root sampler), declared samplers
    with `on_empty`, down to a StaticSampler or TraceIdRatioBased; tests/tracing/test_sampling.py holds the rule
    equal to `known_decision`.
    """
    kind = type(sampler)
    known: Any = sampler
    if _depth > 8:
        return None
    if kind is StaticSampler:
        return 0, known._decision, known._decision
    if kind is TraceIdRatioBased:
        return known.bound, _SAMPLE, _DROP
    if kind is ParentBased:
        return root_rule(known._root, _depth + 1)
    if kind is HintedSampler:
        return root_rule(known.delegate, _depth + 1)
    on_empty = _on_empty.get(kind)
    return None if on_empty is None else root_rule(on_empty(sampler), _depth + 1)


def sampled_local_rule(sampler: object, _depth: int = 0) -> tuple[str, ...] | None:
    """When `known_decision` is sure to sample a child of a local, valid, sampled parent, whatever its trace id,
    read from the samplers once: the context keys that must not hold `False` (then the decision is
    RECORD_AND_SAMPLE with the parent's trace state, for any context); None when no such rule is known here.
    A context with `False` under one of the keys is left to `known_decision`.

    That is the client span under an instrumented server span. Followed: ParentBased (its local-parent-sampled
    sampler), HintedSampler (only a hint False can change its delegate's decision for such a parent: a hint True
    or a debug flag samples, as the delegate does, and the deferred rule is for remote parents only), down to a
    StaticSampler that samples. The SDK's samplers are not changed in place; tests/tracing/test_sampling.py holds
    the rule equal to `known_decision`.
    """
    kind = type(sampler)
    known: Any = sampler
    if _depth > 8:
        return None
    if kind is StaticSampler:
        return () if known._decision is _SAMPLE else None
    if kind is ParentBased:
        return sampled_local_rule(known._local_parent_sampled, _depth + 1)
    if kind is HintedSampler:
        inner = sampled_local_rule(known.delegate, _depth + 1)
        return None if inner is None else tuple(dict.fromkeys((SAMPLING_HINT_KEY, *inner)))
    return None

"""The sidecar's sampler: forced requests (`x-envoy-force-trace`, `x-client-trace-id`) are sampled, the rest
left to the sampler it wraps.

Not compiled with the request path (meshtrace/compiled.py): its base class is the SDK's `Sampler`, which the
build's type check cannot see (no runtime dependencies there), and mypyc would then lay out a native class
without the instance dictionary the base class gives it.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context, create_key, get_value
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from meshtrace.sampling import Known, known_decision, parent_trace_state
from meshtrace.spans import declare_attribute_blind

__all__ = ["FORCE", "ProxySampler"]

#: The context key under which the hop tracer marks a forced trace.
FORCE = create_key("meshtrace-proxy-force-trace")


class ProxySampler(Sampler):
    """Sample forced requests; otherwise defer (meshtrace.configure wraps this to honour incoming hints)."""

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
        if parent_context is not None and get_value(FORCE, parent_context) is True:
            # A forced trace still continues the incoming one: its trace state goes on, as the SDK samplers do.
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent_trace_state(parent_context))
        return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"ProxySampler{{{self.delegate.get_description()}}}"

    @staticmethod
    def decide(sampler: ProxySampler, parent_context: Context | None, parent: SpanContext | None,
               trace_id: int) -> Known | None:
        """`should_sample`'s (decision, trace state) without a SamplingResult: meshtrace's span fast path."""
        # An empty context (no trace headers at all: most requests at the edge) cannot hold the force mark.
        if parent_context and get_value(FORCE, parent_context) is True:
            return Decision.RECORD_AND_SAMPLE, None if parent is None else parent.trace_state
        return known_decision(sampler.delegate, parent_context, parent, trace_id)


# Neither reads the start attributes nor returns any of its own, and can say its decision without a
# SamplingResult: meshtrace's lighter span path may skip both.
# On an empty context (no trace header, so no force mark either) it is its delegate: meshtrace.sampling's root rule
# sees through it.
declare_attribute_blind(ProxySampler, lambda sampler: (sampler.delegate,), ProxySampler.decide,
                        on_empty=lambda sampler: sampler.delegate)

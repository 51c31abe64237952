"""Samplers by OTel name, and the hint wrapper: a bare `b3: 0` deny drops, debug forces, else the sampler."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from meshtrace.propagation._context import set_debug, set_sampling_deferred, set_sampling_hint
from meshtrace.sampling import HintedSampler, build_sampler, declare_attribute_blind, known_decision, root_rule
from meshtrace.settings import SAMPLERS

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
LOW_TRACE_ID = 0x1  # below every ratio bound: sampled by any ratio > 0
HIGH_TRACE_ID = 0xFFFFFFFFFFFFFFFF  # above every ratio bound < 1: dropped by any ratio < 1


def remote_parent(sampled: bool, context: Context | None = None) -> Context:
    span_context = SpanContext(TRACE_ID, 0xB7AD6B7169203331, is_remote=True,
                               trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
                               trace_state=TraceState([("vendor", "v1")]))
    return trace.set_span_in_context(NonRecordingSpan(span_context), context)


def decide(sampler: Sampler, context: Context | None, trace_id: int = TRACE_ID) -> Decision:
    return sampler.should_sample(context, trace_id, "op").decision


SAMPLE, DROP = Decision.RECORD_AND_SAMPLE, Decision.DROP


@pytest.mark.parametrize(("name", "root", "sampled_parent", "unsampled_parent"), [
    ("parentbased_always_on", SAMPLE, SAMPLE, DROP),
    ("parentbased_always_off", DROP, SAMPLE, DROP),
    ("always_on", SAMPLE, SAMPLE, SAMPLE),
    ("always_off", DROP, DROP, DROP),
])
def test_named_samplers(name: str, root: Decision, sampled_parent: Decision, unsampled_parent: Decision) -> None:
    sampler = HintedSampler(build_sampler(name))
    assert decide(sampler, None) is root
    assert decide(sampler, remote_parent(True)) is sampled_parent
    assert decide(sampler, remote_parent(False)) is unsampled_parent


def test_every_settings_name_builds() -> None:
    for name in SAMPLERS:
        assert isinstance(build_sampler(name, 0.5), Sampler)
    with pytest.raises(ValueError, match="unknown sampler 'x'"):
        build_sampler("x")


def test_ratio_samplers_use_the_ratio_and_parent_based_one_follows_parent() -> None:
    ratio = HintedSampler(build_sampler("traceidratio", 0.5))
    assert decide(ratio, None, LOW_TRACE_ID) is SAMPLE
    assert decide(ratio, None, HIGH_TRACE_ID) is DROP
    assert decide(ratio, remote_parent(True), HIGH_TRACE_ID) is DROP  # plain ratio ignores the parent
    parent_based = HintedSampler(build_sampler("parentbased_traceidratio", 0.5))
    assert decide(parent_based, None, HIGH_TRACE_ID) is DROP
    assert decide(parent_based, remote_parent(True), HIGH_TRACE_ID) is SAMPLE
    assert decide(parent_based, remote_parent(False), LOW_TRACE_ID) is DROP
    assert decide(HintedSampler(build_sampler("traceidratio", 0.0)), None, LOW_TRACE_ID) is DROP


@pytest.mark.parametrize("name", SAMPLERS)
def test_bare_deny_drops_without_a_parent(name: str) -> None:
    """`b3: 0` carries no ids: the context holds no valid span, only the hint."""
    context = set_sampling_hint(False)
    assert not trace.get_current_span(context).get_span_context().is_valid
    assert decide(HintedSampler(build_sampler(name)), context, LOW_TRACE_ID) is DROP


@pytest.mark.parametrize("name", SAMPLERS)
def test_debug_hint_forces_sampling(name: str) -> None:
    sampler = HintedSampler(build_sampler(name, 0.0))
    assert decide(sampler, set_sampling_hint(True), HIGH_TRACE_ID) is SAMPLE
    assert decide(sampler, set_debug(True, remote_parent(False)), HIGH_TRACE_ID) is SAMPLE


def test_hint_decisions_keep_the_parent_trace_state() -> None:
    sampler = HintedSampler(ALWAYS_OFF)
    result = sampler.should_sample(set_sampling_hint(True, remote_parent(True)), TRACE_ID, "op",
                                   attributes={"a": 1})
    assert result.decision is SAMPLE
    assert result.trace_state == TraceState([("vendor", "v1")])
    assert dict(result.attributes) == {"a": 1}
    dropped = HintedSampler(ALWAYS_ON).should_sample(set_sampling_hint(False, remote_parent(True)), TRACE_ID, "op")
    assert dropped.decision is DROP
    assert dropped.trace_state == TraceState([("vendor", "v1")])


def test_no_hint_defers_to_the_delegate_unchanged() -> None:
    assert decide(HintedSampler(ALWAYS_ON), Context()) is SAMPLE
    assert decide(HintedSampler(ALWAYS_OFF), Context()) is DROP
    assert decide(HintedSampler(ALWAYS_ON), set_debug(False)) is SAMPLE
    assert HintedSampler(ALWAYS_ON).get_description() == "HintedSampler{AlwaysOnSampler}"


def test_in_a_provider_a_deny_makes_an_unsampled_span_and_its_children_follow() -> None:
    provider = TracerProvider(sampler=HintedSampler(build_sampler("parentbased_always_on")), shutdown_on_exit=False)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("server", context=set_sampling_hint(False)) as server:
        assert not server.is_recording()
        assert server.get_span_context().is_valid  # downstream still gets ids, with sampled=0
        assert not server.get_span_context().trace_flags.sampled
        with tracer.start_as_current_span("client") as client:
            assert not client.is_recording()
    with tracer.start_as_current_span("server", context=set_sampling_hint(True)) as forced:
        assert forced.get_span_context().trace_flags.sampled


def test_deferred_decision_is_taken_by_the_root_sampler_on_the_incoming_trace() -> None:
    """B3 ids without X-B3-Sampled: the receiver decides (the propagator marks the context deferred)."""
    deferred = set_sampling_deferred(True, remote_parent(False))
    assert decide(HintedSampler(build_sampler("parentbased_always_on")), deferred) is SAMPLE
    assert decide(HintedSampler(build_sampler("parentbased_always_off")), deferred) is DROP
    ratio = HintedSampler(build_sampler("parentbased_traceidratio", 0.5))
    assert decide(ratio, deferred, LOW_TRACE_ID) is SAMPLE
    assert decide(ratio, deferred, HIGH_TRACE_ID) is DROP
    result = HintedSampler(build_sampler("parentbased_always_on")).should_sample(deferred, TRACE_ID, "op")
    assert result.trace_state == TraceState([("vendor", "v1")])

    provider = TracerProvider(sampler=HintedSampler(build_sampler("parentbased_always_on")), shutdown_on_exit=False)
    with provider.get_tracer("t").start_as_current_span("server", context=deferred) as server:
        assert server.get_span_context().trace_id == TRACE_ID  # joined the incoming trace
        assert server.get_span_context().trace_flags.sampled


def test_an_undecided_flag_on_a_local_parent_changes_nothing() -> None:
    local = SpanContext(TRACE_ID, 0xB7AD6B7169203331, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    context = set_sampling_deferred(True, trace.set_span_in_context(NonRecordingSpan(local)))
    assert decide(HintedSampler(build_sampler("parentbased_always_on")), context) is DROP


RATIO_TRACE_IDS = st.one_of(st.integers(1, (1 << 128) - 1), st.sampled_from([1, (1 << 64) - 1, 1 << 64, 1 << 127]))


def _root_samplers() -> list[Sampler]:
    from opentelemetry.sdk.trace.sampling import StaticSampler

    from meshtrace.proxy.tracing import ProxySampler  # the sidecar's wrapper, declared with `on_empty`

    leaves: list[Sampler] = [ALWAYS_ON, ALWAYS_OFF, StaticSampler(Decision.RECORD_ONLY), TraceIdRatioBased(0.0),
                             TraceIdRatioBased(0.25), TraceIdRatioBased(1.0)]
    return [wrap(leaf) for leaf in leaves for wrap in (
        lambda s: s, ParentBased, HintedSampler, lambda s: HintedSampler(ParentBased(s)),
        lambda s: HintedSampler(ProxySampler(ParentBased(s))),  # the sidecar's
        lambda s: ParentBased(ParentBased(HintedSampler(s))))]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_root_samplers()), RATIO_TRACE_IDS)
def test_the_root_rule_is_the_known_decision_on_an_empty_context(sampler: Sampler, trace_id: int) -> None:
    """What a root span on an empty context (a request without trace headers) is decided by, read once."""
    rule = root_rule(sampler)
    assert rule is not None
    bound, below, above = rule
    decision = below if trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < bound else above
    assert (decision, None) == known_decision(sampler, Context(), None, trace_id)
    assert decision is decide(sampler, Context(), trace_id)


def test_no_root_rule_where_the_decision_is_not_known_here() -> None:
    class Own(Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            return SamplingResult(Decision.RECORD_AND_SAMPLE)

        def get_description(self) -> str:
            return "Own"

    assert root_rule(Own()) is None
    assert root_rule(HintedSampler(ParentBased(Own()))) is None
    # A declared wrapper without `on_empty` is not seen through, though its decide function is known.
    declare_attribute_blind(Own, decide=lambda sampler, *_: (Decision.DROP, None))
    try:
        assert root_rule(Own()) is None
        assert known_decision(Own(), Context(), None, 1) == (Decision.DROP, None)
    finally:
        declare_attribute_blind(Own)

"""Root spans made ahead of time (`HopTracer.prepare`, run when the loop is idle): a request without trace headers
that gets one must be indistinguishable from one whose span was made on the spot - the same OTLP bytes, the same
headers upstream, the same hop ids - and none may be handed out where it no longer fits (a request carrying a trace,
a changed pipeline, a forked child)."""

from __future__ import annotations

from typing import Any

import pytest
from encoded_support import queued_provider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan
from tracing_support import CountingIds

from meshtrace.exporters.otlp_wire import encode_spans
from meshtrace.propagation import MeshPropagator
from meshtrace.proxy import tracing
from meshtrace.proxy.headers import Headers
from meshtrace.proxy.hop import Hop
from meshtrace.proxy.hop_span import HopSpan
from meshtrace.proxy.tracing import READY, HopTracer, ProxySampler
from meshtrace.sampling import HintedSampler

FORMATS = ["tracecontext", "baggage", "b3multi", "b3", "jaeger", "ottrace"]
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _tracer(percent: float, ids: CountingIds) -> tuple[HopTracer, list[Any]]:
    tracer, queued, _ = _with_provider(percent, ids)
    return tracer, queued


def _with_provider(percent: float, ids: CountingIds) -> tuple[HopTracer, list[Any], TracerProvider]:
    provider, queued = queued_provider(HintedSampler(ProxySampler(ParentBased(TraceIdRatioBased(percent / 100)))),
                                       ids)
    return (HopTracer(provider.get_tracer("meshtrace.proxy"), MeshPropagator(FORMATS), inbound=True), queued,
            provider)


def _ids(span: Any) -> tuple[int, int]:
    context = span.get_span_context()
    return context.trace_id, context.span_id


def _hop(tracer: HopTracer, incoming: dict[bytes, bytes], name: str, start: int, end: int,
         ) -> tuple[Any, Headers, tuple[str, str], tuple[bytes, str, str] | None]:
    """One hop as the exchange makes it: start, the rendered block (else injected pairs), the ids, finish."""
    span, context = tracer.start(incoming, name, start)
    rendered = tracer.render(span, context)
    out: Headers = []
    tracer.inject(span, context, out)
    tracer.finish(span, Hop("inbound", start / 1e9, status=200, authority="reviews:9080", path="/r"), end)
    return span, out, tracer.ids(span), rendered


@pytest.mark.parametrize("incoming", [{b"accept": b"*/*"}, {b"traceparent": b"00-not-a-trace-01"}])
@pytest.mark.parametrize("percent", [100, 0])
def test_a_span_made_ahead_of_time_is_what_the_spot_would_have_made(percent: float, incoming: dict[bytes, bytes],
                                                                   ) -> None:
    ahead_ids, spot_ids = CountingIds(), CountingIds()
    ahead, ahead_queued = _tracer(percent, ahead_ids)
    spot, spot_queued = _tracer(percent, spot_ids)
    _hop(ahead, {}, "warm-up", 1, 2)              # the first span sets up the lane
    ahead_queued.clear()
    ahead_ids.next = spot_ids.next = 100
    ahead.prepare()                              # draws READY spans' ids, in order, from 100 on
    for n in range(READY):
        name, start = f"reviews:9080/{n}", 1_700_000_000_000_000_000 + n
        span, out, ids, rendered = _hop(ahead, incoming, name, start, start + 5)
        expected_span, expected_out, expected_ids, expected_rendered = _hop(spot, incoming, name, start, start + 5)
        assert type(span) is (HopSpan if percent else NonRecordingSpan)
        assert span.get_span_context() == expected_span.get_span_context()
        assert (out, ids, rendered) == (expected_out, expected_ids, expected_rendered)
    assert encode_spans(ahead_queued) == encode_spans(spot_queued)   # names and times are each request's own
    assert len(ahead_queued) == (READY if percent else 0)
    assert ahead._ready == []                   # every one of them was handed out


def test_a_request_carrying_a_trace_continues_it_and_leaves_the_made_spans() -> None:
    tracer, _ = _tracer(100, CountingIds())
    _hop(tracer, {}, "warm-up", 1, 2)
    tracer.prepare()
    made = [span.get_span_context() for span, _ in tracer._ready]
    span, _, _, _ = _hop(tracer, {b"traceparent": TRACEPARENT}, "child", 3, 4)
    assert f"{span.get_span_context().trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent.span_id == 0xB7AD6B7169203331
    assert [s.get_span_context() for s, _ in tracer._ready] == made
    assert span.get_span_context() not in made


def test_a_changed_pipeline_drops_the_made_spans() -> None:
    tracer, _, provider = _with_provider(100, CountingIds())
    _hop(tracer, {}, "warm-up", 1, 2)
    tracer.prepare()
    made = {_ids(span) for span, _ in tracer._ready}
    # A second processor: the lane no longer fits (spans must be SDK spans for it), nor do spans made for it.
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span, _, _, _ = _hop(tracer, {}, "after", 3, 4)
    assert _ids(span) not in made
    assert type(span) is not HopSpan
    assert [s.name for s in exporter.get_finished_spans()] == ["after"]
    tracer.prepare()
    assert tracer._ready == []                   # nothing made while there is no lane


def test_a_forked_child_does_not_hand_out_the_parents_spans() -> None:
    tracer, _ = _tracer(100, CountingIds())
    _hop(tracer, {}, "warm-up", 1, 2)
    tracer.prepare()
    made = {_ids(span) for span, _ in tracer._ready}
    tracing._forked()                            # what os.register_at_fork runs in the child
    span, _, _, _ = _hop(tracer, {}, "in the child", 3, 4)
    assert _ids(span) not in made
    tracer.prepare()                             # the child makes its own
    assert not made & {_ids(s) for s, _ in tracer._ready}



def test_a_turn_that_runs_out_makes_one_span_and_asks_for_another_turn() -> None:
    """The loop's idle work goes in turns (proxy.reports): a turn already over still makes progress, one span."""
    tracer, _ = _tracer(100, CountingIds())
    _hop(tracer, {}, "warm-up", 1, 2)
    assert tracer.prepare(until=0) is True       # `until` long past
    assert len(tracer._ready) == 1
    assert tracer.prepare() is False             # no end: all of them, and nothing more wanted
    assert len(tracer._ready) == READY
    assert tracer.prepare(until=0) is False      # full: nothing made
    assert len(tracer._ready) == READY

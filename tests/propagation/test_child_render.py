"""Every kind of span context's compiled render writes what the propagator's general plain render writes."""

from __future__ import annotations

import itertools

import pytest
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

from meshtrace.propagation._plain_inject import PlainInjector
from meshtrace.propagation.render import block, factory

_FORMAT_SETS = [
    ("tracecontext", "baggage", "b3multi", "b3", "jaeger", "ottrace"),
    ("ottrace", "jaeger", "b3", "b3multi", "tracecontext"),
    ("b3",),
    (),
]
_STATE = TraceState([("vendor", "x1"), ("other", "y2")])


@pytest.mark.parametrize("formats", _FORMAT_SETS)
@pytest.mark.parametrize("kind", list(itertools.product(range(4), *[(False, True)] * 4)))
def test_each_kind_renders_what_the_plain_render_does(formats: tuple[str, ...],
                                                      kind: tuple[int, bool, bool, bool, bool]) -> None:
    flags, parent, state, short, request_id = kind
    injector = PlainInjector(formats)
    trace_id = 0x00000000000000000E457B5A2E4D86BD if short else 0x4BF92F3577B34DA6A3CE929D0E0E4736
    parent_id = 0x00F067AA0BA902B7 if parent else None
    rid = "5f9c2a8e-0d1b" if request_id else None
    trace_state = _STATE if state else None
    make = factory(injector._codes, kind)
    render = make(trace_id, parent_id or 0, _STATE.to_header() if state else "", rid or "")
    for span_id in (0x1, 0xA3CE929D0E0E4736, (1 << 64) - 1):  # siblings: one render, several span ids
        sc = SpanContext(trace_id, span_id, False, TraceFlags(flags), trace_state)
        expected = injector._render(sc, parent_id, rid, f"{span_id:016x}")
        assert render(span_id) == tuple((name, (name, value)) for name, value in expected)


@pytest.mark.parametrize("formats", _FORMAT_SETS)
@pytest.mark.parametrize("kind", list(itertools.product(range(4), *[(False, True)] * 3)))
def test_each_kinds_block_holds_the_plain_renders_headers_as_lines(formats: tuple[str, ...],
                                                                   kind: tuple[int, bool, bool, bool]) -> None:
    flags, parent, state, short = kind
    injector = PlainInjector(formats)
    trace_id = 0x00000000000000000E457B5A2E4D86BD if short else 0x4BF92F3577B34DA6A3CE929D0E0E4736
    parent_id = 0x00F067AA0BA902B7 if parent else None
    render = block(injector._codes, kind)
    for span_id in (0x1, 0xA3CE929D0E0E4736, (1 << 64) - 1):
        sc = SpanContext(trace_id, span_id, False, TraceFlags(flags), _STATE if state else None)
        expected = injector._render(sc, parent_id, None, f"{span_id:016x}")
        assert render(trace_id, span_id, parent_id, _STATE.to_header() if state else "") == (
            "".join(f"{name}: {value}\r\n" for name, value in expected).encode(), f"{trace_id:032x}",
            f"{span_id:016x}")


def test_an_unknown_format_code_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format codes"):
        factory((7,), (1, False, False, False, False))

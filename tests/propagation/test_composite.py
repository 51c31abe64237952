"""MeshPropagator: precedence, configuration, the convenience API and the OTEL_PROPAGATORS entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from meshtrace import propagation
from meshtrace.errors import ConfigError
from meshtrace.propagation import (
    DEFAULT_FORMATS,
    FORMATS,
    MeshPropagator,
    get_request_id,
    get_sampling_hint,
    is_debug,
    set_request_id,
)

W3C_TRACE = "11111111111111111111111111111111"
B3_TRACE = "22222222222222222222222222222222"
B3M_TRACE = "33333333333333333333333333333333"
UBER_TRACE = "44444444444444444444444444444444"
OT_TRACE = "55555555555555555555555555555555"
SPAN = "aaaaaaaaaaaaaaaa"
ALL = {
    "traceparent": f"00-{W3C_TRACE}-{SPAN}-01",
    "b3": f"{B3_TRACE}-{SPAN}-1",
    "x-b3-traceid": B3M_TRACE,
    "x-b3-spanid": SPAN,
    "uber-trace-id": f"{UBER_TRACE}:{SPAN}:0:1",
    "ot-tracer-traceid": OT_TRACE,
    "ot-tracer-spanid": SPAN,
}
ORDER = [("traceparent",), ("b3",), ("x-b3-traceid", "x-b3-spanid"), ("uber-trace-id",),
         ("ot-tracer-traceid", "ot-tracer-spanid")]
EXPECTED = [W3C_TRACE, B3_TRACE, B3M_TRACE, UBER_TRACE, OT_TRACE]


def trace_hex(context: Context) -> str | None:
    sc = trace.get_current_span(context).get_span_context()
    return f"{sc.trace_id:032x}" if sc.is_valid else None


@pytest.mark.parametrize("level", range(5))
def test_first_valid_context_wins(level: int) -> None:
    headers = dict(ALL)
    for names in ORDER[:level]:
        for name in names:
            headers.pop(name)
    assert trace_hex(MeshPropagator().extract(headers)) == EXPECTED[level]


@pytest.mark.parametrize("level", range(5))
def test_invalid_higher_formats_are_skipped(level: int) -> None:
    headers = dict(ALL)
    for names in ORDER[:level]:
        for name in names:
            headers[name] = "garbage"
    assert trace_hex(MeshPropagator().extract(headers)) == EXPECTED[level]


def test_extraction_reads_every_format_whatever_is_configured() -> None:
    only_jaeger = MeshPropagator(["jaeger"])
    assert trace_hex(only_jaeger.extract({"X-B3-TraceId": B3M_TRACE, "X-B3-SpanId": SPAN})) == B3M_TRACE


def test_bare_b3_deny_stops_the_search() -> None:
    # `b3: 0` is a valid B3 header: it wins over the formats after it, and the deny is kept.
    context = MeshPropagator().extract({"b3": "0", "uber-trace-id": f"{UBER_TRACE}:{SPAN}:0:1"})
    assert trace_hex(context) is None
    assert get_sampling_hint(context) is False
    context = MeshPropagator().extract({"b3": "0", "traceparent": ALL["traceparent"]})
    assert trace_hex(context) == W3C_TRACE
    assert get_sampling_hint(context) is None


def test_baggage_from_every_format_with_w3c_winning() -> None:
    context = MeshPropagator().extract(
        {"baggage": "shared=w3c,w=1", "uberctx-shared": "jaeger", "uberctx-j": "2", "ot-baggage-shared": "ot",
         "ot-baggage-o": "3", "x-request-id": "rid"}
    )
    assert dict(baggage.get_all(context)) == {"shared": "w3c", "o": "3", "j": "2", "w": "1"}
    assert get_request_id(context) == "rid"


def test_inject_every_configured_format_from_one_context() -> None:
    context = MeshPropagator().extract(
        {"uber-trace-id": f"{UBER_TRACE}:{SPAN}:bbbbbbbbbbbbbbbb:3", "uberctx-k": "v", "x-request-id": "rid"}
    )
    carrier: dict[str, str] = {}
    MeshPropagator().inject(carrier, context)
    assert carrier == {
        "traceparent": f"00-{UBER_TRACE}-{SPAN}-01",
        "baggage": "k=v",
        "x-b3-traceid": UBER_TRACE,
        "x-b3-spanid": SPAN,
        "x-b3-parentspanid": "bbbbbbbbbbbbbbbb",
        "x-b3-flags": "1",
        "b3": f"{UBER_TRACE}-{SPAN}-d-bbbbbbbbbbbbbbbb",
        "uber-trace-id": f"{UBER_TRACE}:{SPAN}:bbbbbbbbbbbbbbbb:03",
        "uberctx-k": "v",
        "ot-tracer-traceid": UBER_TRACE,
        "ot-tracer-spanid": SPAN,
        "ot-tracer-sampled": "true",
        "ot-baggage-k": "v",
        "x-request-id": "rid",
    }
    assert set(carrier) - {"uberctx-k", "ot-baggage-k"} <= MeshPropagator().fields


@pytest.mark.parametrize(
    ("formats", "expected"),
    [
        (None, DEFAULT_FORMATS),
        ([], ()),
        (["none"], ()),
        (["w3c"], ("tracecontext", "baggage")),
        (["B3Single", " b3multi "], ("b3", "b3multi")),
        ("jaeger,ottrace", ("jaeger", "ottrace")),
        (["b3", "b3single", "b3"], ("b3",)),
    ],
)
def test_configured_formats(formats: list[str] | str | None, expected: tuple[str, ...],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHTRACE_PROPAGATORS", raising=False)
    assert MeshPropagator(formats).formats == expected


def test_only_configured_formats_are_injected() -> None:
    sc = SpanContext(int(W3C_TRACE, 16), int(SPAN, 16), True, TraceFlags(1))
    context = set_request_id("rid", trace.set_span_in_context(NonRecordingSpan(sc)))
    carrier: dict[str, str] = {}
    MeshPropagator(["b3"]).inject(carrier, context)
    assert carrier == {"b3": f"{W3C_TRACE}-{SPAN}-1", "x-request-id": "rid"}


def test_environment_variable_chooses_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHTRACE_PROPAGATORS", "tracecontext, jaeger")
    assert MeshPropagator().formats == ("tracecontext", "jaeger")
    monkeypatch.setenv("MESHTRACE_PROPAGATORS", "  ")
    assert MeshPropagator().formats == DEFAULT_FORMATS


def test_unknown_format_names_the_value_and_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHTRACE_PROPAGATORS", "tracecontext,zipkin")
    with pytest.raises(ConfigError, match=r"MESHTRACE_PROPAGATORS.*'zipkin'"):
        MeshPropagator()
    with pytest.raises(ConfigError, match=r"argument formats.*'xray'"):
        MeshPropagator(["b3", "xray"])


def test_formats_table_matches_default_set() -> None:
    assert set(FORMATS) == set(DEFAULT_FORMATS)
    for cls in FORMATS.values():
        assert cls().fields <= MeshPropagator().fields


def test_convenience_api_is_case_insensitive_and_replaces_other_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHTRACE_PROPAGATORS", raising=False)
    monkeypatch.setattr(propagation, "_default", None)
    context = propagation.extract({"X-B3-TraceId": B3M_TRACE, "X-B3-SpanId": SPAN, "X-B3-Flags": "1"})
    assert trace_hex(context) == B3M_TRACE
    assert is_debug(context)
    headers = {"X-B3-TraceId": "stale", "Content-Type": "text/plain"}
    propagation.inject(headers, context)
    assert headers["x-b3-traceid"] == B3M_TRACE
    assert "X-B3-TraceId" not in headers
    assert headers["Content-Type"] == "text/plain"
    assert headers["traceparent"] == f"00-{B3M_TRACE}-{SPAN}-01"


def test_convenience_inject_uses_the_current_context(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.context import attach, detach

    monkeypatch.setattr(propagation, "_default", MeshPropagator(["tracecontext"]))
    token = attach(propagation.extract({"traceparent": ALL["traceparent"]}))
    try:
        headers: dict[str, str] = {}
        propagation.inject(headers)
    finally:
        detach(token)
    assert headers == {"traceparent": ALL["traceparent"]}


ENTRY_POINT_PROBE = textwrap.dedent(
    """
    import json
    from opentelemetry import propagate, trace
    from opentelemetry.propagate import get_global_textmap

    composite = get_global_textmap()
    names = [type(p).__name__ for p in composite._propagators]
    context = propagate.extract({"X-B3-TraceId": "%s", "X-B3-SpanId": "%s", "X-B3-Sampled": "1"})
    carrier = {}
    propagate.inject(carrier, context)
    print(json.dumps({"names": names, "carrier": carrier}))
    """
) % (B3M_TRACE, SPAN)


def test_otel_propagators_env_loads_meshtrace(tmp_path: Path) -> None:
    # Run outside the repository: its meshtrace/ folder would shadow the installed mapped subpackages.
    env = {"OTEL_PROPAGATORS": "meshtrace", "MESHTRACE_PROPAGATORS": "b3,tracecontext", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", ENTRY_POINT_PROBE], capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["names"] == ["MeshPropagator"]
    assert report["carrier"] == {"b3": f"{B3M_TRACE}-{SPAN}-1", "traceparent": f"00-{B3M_TRACE}-{SPAN}-01"}


def test_debug_and_parent_from_lower_formats_describing_the_same_span() -> None:
    # A neighbour that injects every format: traceparent wins but cannot say debug nor the parent.
    headers = {"traceparent": f"00-{W3C_TRACE}-{SPAN}-00", "b3": f"{W3C_TRACE}-{SPAN}-d-bbbbbbbbbbbbbbbb"}
    context = MeshPropagator().extract(headers)
    assert is_debug(context)
    assert trace.get_current_span(context).get_span_context().trace_flags.sampled
    carrier: dict[str, str] = {}
    MeshPropagator(["b3multi"]).inject(carrier, context)
    assert carrier["x-b3-parentspanid"] == "bbbbbbbbbbbbbbbb"


def test_lower_formats_about_another_span_add_nothing() -> None:
    headers = {"traceparent": f"00-{W3C_TRACE}-{SPAN}-00", "b3": f"{W3C_TRACE}-bbbbbbbbbbbbbbbb-d"}
    context = MeshPropagator().extract(headers)
    assert not is_debug(context)
    assert not trace.get_current_span(context).get_span_context().trace_flags.sampled

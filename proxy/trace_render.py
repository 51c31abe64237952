"""The trace headers the proxy sends upstream, rendered by a function made for one kind of span context.

Theory of operation. For a decided span context without debug or baggage, what `MeshPropagator.inject` writes
depends on the configured formats and on a few facts about the context (trace flags, whether there is a parent,
a trace state, a 64-bit trace id); everything else is the ids in hex. `renderer()` turns one such combination
into the source of a small function (every literal folded in, the constant headers as constant tuples, one list
display for the lot) and compiles it once; `HopTracer.inject` keeps one per combination it meets (at most 32),
so a hop's headers cost two hex formats, a few concatenations and one list extension instead of a loop over the
formats. Only bytes literals of this module's own making and `repr()`s of them enter the source; the function
writes exactly what the propagator writes, and tests/proxy/test_proxy_tracing_record.py and
tests/proxy/test_hop_wire.py hold the two equal.
"""

from __future__ import annotations

from collections.abc import Callable

from .headers import Headers

__all__ = ["RENDERED", "Renderer", "renderer"]

#: Formats `renderer` knows (baggage among them: the proxy never injects it, incoming baggage passes through).
RENDERED = frozenset({"tracecontext", "baggage", "b3multi", "b3", "jaeger", "ottrace"})
#: (trace id, span id, parent span id or None, rendered trace state or None, the headers to extend) ->
#: the hex trace and span ids.
Renderer = Callable[[int, int, "int | None", "bytes | None", Headers], tuple[bytes, bytes]]


def _headers(name: str, flags: int, root: bool, state: bool, short: bool) -> list[str]:
    """Python expressions of one format's (name, value) pairs over `ts` (hex trace id, "-", hex span id), `t`,
    `s`, `p` (hex ids) and `state` (the rendered trace state)."""
    sampled = flags & 0x01
    if name == "tracecontext":
        pairs = [f"(b'traceparent', b'00-' + ts + {b'-%02x' % flags!r})"]
        return [*pairs, "(b'tracestate', state)"] if state else pairs
    if name == "b3multi":
        return ["(b'x-b3-traceid', t)", "(b'x-b3-spanid', s)", *(() if root else ("(b'x-b3-parentspanid', p)",)),
                repr((b"x-b3-sampled", b"1" if sampled else b"0"))]
    if name == "b3":
        decision = b"-1" if sampled else b"-0"
        return [f"(b'b3', ts + {decision!r})" if root else f"(b'b3', ts + {decision + b'-'!r} + p)"]
    if name == "jaeger":
        decision = b":01" if sampled else b":00"
        if root:
            return [f"(b'uber-trace-id', ts.replace(b'-', b':') + {b':' + b'0' * 16 + decision!r})"]
        return [f"(b'uber-trace-id', ts.replace(b'-', b':') + b':' + p + {decision!r})"]
    if name == "ottrace":
        return ["(b'ot-tracer-traceid', t[16:])" if short else "(b'ot-tracer-traceid', t)",
                "(b'ot-tracer-spanid', s)", repr((b"ot-tracer-sampled", b"true" if sampled else b"false"))]
    return []   # baggage


def renderer(formats: tuple[str, ...], flags: int, root: bool, state: bool, short: bool) -> Renderer:
    """The function appending what `MeshPropagator(formats).inject` writes (baggage aside) for a span context
    with these trace `flags` (its sampled and random bits), no parent when `root`, a trace state when `state`,
    a trace id below 2**64 when `short`."""
    unknown = set(formats) - RENDERED
    if unknown:
        raise ValueError(f"no renderer for {sorted(unknown)}")
    flags &= 0x03
    pairs = [pair for name in formats for pair in _headers(name, flags, root, state, short)]
    source = "\n".join([
        "def render(trace_id, span_id, parent_id, state, out):",
        "    ts = b'%032x-%016x' % (trace_id, span_id)",
        "    t = ts[:32]",
        "    s = ts[33:]",
        *(() if root else ("    p = b'%016x' % parent_id",)),
        f"    out += [{', '.join(pairs)}]" if pairs else "    pass",
        "    return t, s",
    ])
    namespace: dict[str, object] = {}
    exec(compile(source, f"<trace headers {','.join(formats)} {flags} {root} {state} {short}>", "exec"),
         namespace)
    render: Renderer = namespace["render"]  # type: ignore[assignment]
    return render

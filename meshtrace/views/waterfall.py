"""A trace as a waterfall in the terminal: one line per span with its offset, duration and a bar on a shared axis.

    trace 4bf92f3577b34da6a3ce929d0e0e4736  5 spans · 3 services · depth 3 · 100.0ms · 2 errors
      service  operation         offset  duration  ├────────────────────────────────────────┤
      frontend  GET /checkout       0µs   100.0ms  ██████████████████████████████████████████
      └ frontend  GET            10.0ms    30.0ms      █████████████
       └ cart  GET /cart/<id>    12.0ms    25.0ms       ███████████
    ✗ └ frontend  GET            50.0ms    40.0ms                       ▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒
    ✗  └ payment  POST /pay      52.0ms    35.0ms                       ▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒

Labels get the width they need up to two thirds of the line (cut with an ellipsis beyond), bars the rest, so
every line fits in `width`. Failing spans are marked ✗ and drawn red on a terminal, hatched without colour.
"""

from __future__ import annotations

import math

from meshtrace.views.model import Span, Trace
from meshtrace.views.style import Style, format_duration, truncate

__all__ = ["render_waterfall", "span_label"]

_NUMBER = 9      # width of the offset and duration columns
_MIN_BAR = 10


def span_label(depth: int, span: Span) -> tuple[str, str]:
    """(indent + service, operation) for one line."""
    indent = " " * (depth - 1) + "└ " if depth else ""
    return indent + span.service, span.name


def _bar(span: Span, t0: int, total: int, width: int) -> tuple[int, int]:
    """(first column, length) of a span's bar; every span gets at least one cell."""
    if total <= 0:
        return 0, width
    first = min(width - 1, int((span.start_us - t0) / total * width))
    last = max(first + 1, math.ceil((span.end_us - t0) / total * width))
    return first, min(width, last) - first


def render_waterfall(trace: Trace, *, width: int = 100, style: Style | None = None) -> str:
    """The waterfall of `trace` as lines no wider than `width` (ANSI codes aside)."""
    style = style or Style(False)
    width = max(width, 60)
    rows = trace.tree()
    t0, total = trace.start_us, trace.duration_us
    # Labels get what they need, up to what leaves the bars a third of the line; bars get the rest.
    fixed = 2 + 2 * (_NUMBER + 1) + 2
    needed = max((len("  ".join(span_label(d, s))) + 1 for d, s in rows), default=20)
    label_width = max(20, min(needed, width - fixed - max(_MIN_BAR, width // 3)))
    bar_width = width - fixed - label_width
    errors = trace.errors
    summary = (f"{len(trace.spans)} spans · {len(trace.services)} services · depth {trace.depth} · "
               f"{format_duration(total)}")
    error_text = f" · {errors} error{'s' if errors != 1 else ''}" if errors else ""
    title = f"trace {trace.trace_id}"
    # One header line when it fits, else the summary on a line of its own.
    joiner = "  " if len(title) + 2 + len(summary) + len(error_text) <= width else "\n  "
    lines = [style.bold(title) + joiner + summary + style.error(error_text)]
    axis = "├" + "─" * (bar_width - 2) + "┤"
    lines.append("  " + style.dim(truncate("service  operation", label_width) + f"{'offset':>{_NUMBER}} "
                                  f"{'duration':>{_NUMBER}}  " + axis))
    for depth, span in rows:
        service_text, operation = span_label(depth, span)
        label = truncate(f"{service_text}  {operation}", label_width)
        # Colour the service part and keep the operation plain; the cut may have eaten into either.
        cut = min(len(service_text), len(label))
        label = style.service(span.service, label[:cut]) + label[cut:]
        first, length = _bar(span, t0, total, bar_width)
        glyph = "▒" if span.error and not style.enabled else "█"
        bar = " " * first + (style.error(glyph * length) if span.error else style.service(span.service, glyph * length))
        mark = style.error("✗ ") if span.error else "  "
        offset = format_duration(span.start_us - t0)
        duration = format_duration(span.duration_us)
        lines.append(f"{mark}{label}{offset:>{_NUMBER}} {duration:>{_NUMBER}}  {bar}".rstrip())
    return "\n".join(lines)

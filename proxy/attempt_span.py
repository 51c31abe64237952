"""A CLIENT span per upstream attempt of a route with retries, children of the hop span.

Only routes with `retries` get them (without rules nothing changes). Attempt n carries
`http.request.resend_count = n - 1` from the first retry on (OTel HTTP semantic conventions: absent on the first
try). An attempt span ends when its try fails and is retried (with the status or the failure that caused it), or
with the exchange. The spans come from the hop tracer's provider so they land in the same export pipeline as the
hop span; without one, from `meshtrace.get_tracer`; both through `meshtrace.spans.start_span`, the core's cheapest
way to start an SDK span. Each try's request head carries the trace headers of its attempt span (every
configured format, rendered by the hop tracer's `inject`), so the upstream's SERVER span nests under the try that
reached it, as with Envoy's per-attempt upstream spans; the hop record keeps the hop span's ids. Without an attempt
span (no retries, or the hop span not recording) the head carries the hop span's headers, encoded once.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

import meshtrace
from meshtrace.spans import start_span

__all__ = ["end_attempt", "start_attempt"]

_FALLBACK: trace.Tracer | None = None


def _tracer(tracer: trace.Tracer | None) -> trace.Tracer:
    global _FALLBACK  # noqa: PLW0603  (one lazily made tracer per process)
    if tracer is not None:
        return tracer
    if _FALLBACK is None:
        _FALLBACK = meshtrace.get_tracer("meshtrace.proxy")
    return _FALLBACK


def start_attempt(tracer: trace.Tracer | None, hop_span: trace.Span, hop_context: Context | None, name: str,  # noqa: PLR0917
                  attempt: int, address: str) -> trace.Span:
    """Span of try number `attempt` (1 for the first), a child of the hop span."""
    context = trace.set_span_in_context(hop_span, hop_context or Context())
    host, _, port = address.rpartition(":")
    attributes: dict[str, str | int | bool] = {"meshtrace.attempt": attempt, "server.address": host or address}
    if port.isdigit():
        attributes["server.port"] = int(port)
    if attempt > 1:
        attributes["http.request.resend_count"] = attempt - 1
    return start_span(_tracer(tracer), f"{name} attempt {attempt}", context, SpanKind.CLIENT, attributes)


def end_attempt(span: trace.Span, status: int, error: str = "") -> None:
    """End an attempt with its response status (0: none) and the failure that ended it, if any."""
    if span.is_recording():
        if status:
            span.set_attribute("http.response.status_code", status)
        if error or status >= 500 or not status:
            span.set_attribute("error.type", error or (str(status) if status else "no_response"))
            span.set_status(Status(StatusCode.ERROR, error or None))
    span.end()

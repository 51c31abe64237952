"""A hand-built trace for the view tests, as OTLP/JSON (the `file` exporter's line format)."""

from __future__ import annotations

import json
from typing import Any

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_700_000_000_000_000_000          # ns


def _span(span_id: str, parent: str | None, name: str, start_ms: float, duration_ms: float, *, kind: int,
          error: bool = False, status: int | None = None, t0: int = T0) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": TRACE_ID, "spanId": span_id, "name": name, "kind": kind,
        "startTimeUnixNano": str(t0 + int(start_ms * 1e6)),
        "endTimeUnixNano": str(t0 + int((start_ms + duration_ms) * 1e6)),
        "attributes": [] if status is None else [{"key": "http.response.status_code",
                                                   "value": {"intValue": str(status)}}],
    }
    if parent:
        span["parentSpanId"] = parent
    if error:
        span["status"] = {"code": 2}
    return span


def _resource(service: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"scope": {"name": "meshtrace"}, "spans": spans}]}


def otlp_lines(t0: int = T0) -> list[str]:
    """Three export batches (as three processes would write them) of one 5-span trace with one failing call."""
    front = _resource("frontend", [
        _span("a000000000000001", None, "GET /checkout", 0, 100, kind=2, status=200, t0=t0),
        _span("a000000000000002", "a000000000000001", "GET", 10, 30, kind=3, status=200, t0=t0),
        _span("a000000000000003", "a000000000000001", "GET", 50, 40, kind=3, error=True, status=503, t0=t0),
    ])
    cart = _resource("cart", [_span("b000000000000001", "a000000000000002", "GET /cart/<id>", 12, 25, kind=2, t0=t0)])
    pay = _resource("payment", [_span("c000000000000001", "a000000000000003", "POST /pay", 52, 35, kind=2,
                                      error=True, status=503, t0=t0)])
    return [json.dumps({"resourceSpans": [r]}) for r in (front, cart, pay)]


EXPECTED_WATERFALL = """\
trace 4bf92f3577b34da6a3ce929d0e0e4736
  5 spans · 3 services · depth 3 · 100.0ms · 2 errors
  service  operation         offset  duration  ├────────────────────────────────────────┤
  frontend  GET /checkout       0µs   100.0ms  ██████████████████████████████████████████
  └ frontend  GET            10.0ms    30.0ms      █████████████
   └ cart  GET /cart/<id>    12.0ms    25.0ms       ███████████
✗ └ frontend  GET            50.0ms    40.0ms                       ▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒
✗  └ payment  POST /pay      52.0ms    35.0ms                       ▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒"""
